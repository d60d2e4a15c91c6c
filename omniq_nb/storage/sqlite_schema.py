"""The SQLite store's schema: DDL by version, the migration that brings a file up to date, event triggers.

A file records its schema version in ``omniq_schema``; ``migrate`` applies the missing
versions in one transaction and refuses a file newer than this code. Version 5 adds task
dependencies: ``depends_on`` and ``run_on`` columns, and ``task_deps`` (one row per task and
task it depends on) that finds dependents by dependency. Version 6 adds the result cache's
``cache_key`` (indexed where set) and what tasks printed: ``task_output`` (a row per chunk)
and ``task_output_seq`` (each task's last chunk number, kept when old chunks are trimmed).
Version 7 adds ``callables``: a batch's pickled callable, kept once under its SHA-256 digest
(``enqueue_many`` rows name it instead of carrying it). Version 8 adds the ``writer`` of
an event: the store object whose connections recorded it, a small number each store object
draws from ``event_writers`` when it opens (and gives back when it closes), so a process's
event follower can skip what its claims, inserts and settles recorded (their rows reached it already); it
drops the ``events_at`` index, which no query used (it cost every event an index entry).
Events are written by temporary triggers (per connection) in the same statement as the
change they record.

Example:
    >>> [part[:12] for part in statements("CREATE TABLE a (x); CREATE TABLE b (y);")]
    ['CREATE TABLE', 'CREATE TABLE']

"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from omniq_nb.errors import StorageError
from omniq_nb.storage.sql_text import TASK_INDEXES

__all__ = [
    "BUSY_TIMEOUT_MS",
    "event_triggers",
    "JOURNAL_SIZE_LIMIT",
    "NOW_SQL",
    "SCHEMA_VERSION",
    "migrate",
    "statements",
]

SCHEMA_VERSION = 8
"""The schema version this code writes and understands."""
BUSY_TIMEOUT_MS = 15_000
"""How long a statement waits for another connection's write lock."""
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
"""The size SQLite truncates the write-ahead log back to after a checkpoint."""
NOW_SQL = "((julianday('now') - 2440587.5) * 86400.0)"
"""SQLite's clock in seconds since the epoch, read inside a statement (after any lock wait)."""
_EVENT_AT = f"max({NOW_SQL}, new.created_at, coalesce(new.started_at, 0), coalesce(new.finished_at, 0))"
"""A transition's event time: SQLite's clock has millisecond steps (and ~40 us of float error) while
``created_at``, ``started_at`` and ``finished_at`` are stamped with Python's microsecond clock, so an
event is never stamped before the row's own times (a claim in the millisecond of the enqueue
recorded ``started`` before ``enqueued``)."""

_MIGRATIONS: dict[int, str] = {
    1: f"""
    CREATE TABLE tasks (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        queue TEXT NOT NULL,
        status TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        payload BLOB NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        retries INTEGER NOT NULL DEFAULT 0,
        retry_on TEXT,
        timeout REAL,
        eta REAL NOT NULL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        expires_at REAL,
        result_ttl REAL,
        purge_at REAL,
        interval REAL,
        cron TEXT,
        series TEXT,
        at_most_once INTEGER NOT NULL DEFAULT 0,
        kind TEXT,
        lease_token TEXT,
        lease_until REAL,
        worker TEXT,
        progress REAL NOT NULL DEFAULT 0,
        progress_done REAL NOT NULL DEFAULT 0,
        progress_total REAL,
        progress_message TEXT,
        result BLOB,
        error TEXT,
        origin TEXT
    );
    {TASK_INDEXES}
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        task_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        at REAL NOT NULL,
        status TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        progress REAL,
        message TEXT
    );
    CREATE INDEX events_task ON events (task_id, seq);
    """,
    2: """
    ALTER TABLE tasks ADD COLUMN run_id TEXT;
    ALTER TABLE events ADD COLUMN run_id TEXT;
    """,
    3: """
    ALTER TABLE tasks ADD COLUMN owner TEXT;
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        kind TEXT NOT NULL,
        concurrency INTEGER NOT NULL,
        queues TEXT NOT NULL,
        kernel TEXT,
        notebook TEXT,
        started_at REAL NOT NULL,
        heartbeat REAL NOT NULL,
        ttl REAL NOT NULL,
        running INTEGER NOT NULL DEFAULT 0,
        stop_requested INTEGER NOT NULL DEFAULT 0
    );
    """,
    4: """
    CREATE TABLE kept_results (
        task_id TEXT NOT NULL,
        token TEXT NOT NULL,
        result BLOB NOT NULL,
        kept_at REAL NOT NULL,
        purge_at REAL,
        PRIMARY KEY (task_id, token)
    ) WITHOUT ROWID;
    CREATE INDEX kept_results_purge ON kept_results (purge_at) WHERE purge_at IS NOT NULL;
    ALTER TABLE events ADD COLUMN purge_at REAL;
    CREATE INDEX events_purge ON events (purge_at) WHERE purge_at IS NOT NULL;
    CREATE INDEX events_at ON events (at);
    """,
    5: """
    ALTER TABLE tasks ADD COLUMN depends_on TEXT;
    ALTER TABLE tasks ADD COLUMN run_on TEXT NOT NULL DEFAULT 'success';
    CREATE TABLE task_deps (
        task_id TEXT NOT NULL,
        depends_on TEXT NOT NULL,
        PRIMARY KEY (depends_on, task_id)
    ) WITHOUT ROWID;
    CREATE INDEX task_deps_task ON task_deps (task_id);
    """,
    6: """
    ALTER TABLE tasks ADD COLUMN cache_key TEXT;
    CREATE INDEX tasks_cache ON tasks (cache_key, finished_at) WHERE cache_key IS NOT NULL;
    CREATE TABLE task_output (
        task_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        stream TEXT NOT NULL,
        data BLOB NOT NULL,
        bytes INTEGER NOT NULL,
        lines INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX task_output_seq_of ON task_output (task_id, seq);
    CREATE TABLE task_output_seq (
        task_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    7: """
    CREATE TABLE callables (
        digest TEXT PRIMARY KEY,
        body BLOB NOT NULL
    ) WITHOUT ROWID;
    """,
    8: """
    ALTER TABLE events ADD COLUMN writer INTEGER;
    CREATE TABLE event_writers (id INTEGER PRIMARY KEY);
    DROP INDEX IF EXISTS events_at;
    """,
}


def event_triggers(writer: int) -> str:
    """Return the temporary triggers that record a ``TaskEvent`` per transition on one connection.

    Temporary triggers belong to their connection only, so ``OMNIQ_EVENTS=0`` in one process
    does not change what another process records. ``enqueued``, ``started`` and ``succeeded``
    events carry ``writer`` (the connection's store object, from ``event_writers``): an
    insert, a claim and a settle hand their rows to the process at once, so its follower may
    skip those events (and any event before one of them on the same task: that row is newer).
    The others carry none and are read by every follower: a cancel also
    stops the other runs of a series, and rescues, expiries and retries hand their rows on
    only after more work; progress writes hand none.

    Args:
        writer: the id the store object drew from ``event_writers``.

    """
    return f"""
CREATE TEMP TRIGGER IF NOT EXISTS omniq_event_insert AFTER INSERT ON main.tasks BEGIN
    INSERT INTO events (task_id, kind, at, status, attempt, writer)
    VALUES (new.id, 'enqueued', new.created_at, new.status, new.attempt, {int(writer)});
END;
CREATE TEMP TRIGGER IF NOT EXISTS omniq_event_status AFTER UPDATE OF status ON main.tasks
WHEN old.status IS NOT new.status BEGIN
    INSERT INTO events (task_id, kind, at, status, attempt, progress, message, run_id, writer)
    VALUES (new.id,
        CASE new.status
            WHEN 'running' THEN 'started'
            WHEN 'pending' THEN CASE WHEN old.status = 'waiting' THEN 'ready'
                WHEN new.attempt < old.attempt THEN 'released' ELSE 'retried' END
            WHEN 'waiting' THEN 'retried'
            ELSE new.status END,
        {_EVENT_AT}, new.status, new.attempt, new.progress, json_extract(new.error, '$.message'), new.run_id,
        CASE WHEN new.status IN ('running', 'succeeded') THEN {int(writer)} END);
END;
CREATE TEMP TRIGGER IF NOT EXISTS omniq_event_progress AFTER UPDATE OF progress_done ON main.tasks
WHEN old.status = 'running' AND new.status = 'running' BEGIN
    INSERT INTO events (task_id, kind, at, status, attempt, progress, message, run_id)
    VALUES (new.id, 'progress', {_EVENT_AT}, new.status, new.attempt, new.progress, new.progress_message, new.run_id);
END;
"""


_Run = Callable[[str, Sequence[Any]], Awaitable[Sequence[Any]]]


async def migrate(run: _Run, where: str | None) -> None:
    """Create or upgrade the schema of the store ``where`` to ``SCHEMA_VERSION``.

    Args:
        run: runs one statement and returns its rows, inside the caller's write transaction.
        where: the store's path, named in the error.

    Raises:
        StorageError: the file's schema is newer than this code understands.

    """
    await run("CREATE TABLE IF NOT EXISTS omniq_schema (version INTEGER NOT NULL)", ())
    rows = await run("SELECT max(version) FROM omniq_schema", ())
    current = rows[0][0] or 0
    if current > SCHEMA_VERSION:
        raise StorageError(
            f"{where} has schema version {current}, newer than this omniq_nb "
            f"understands ({SCHEMA_VERSION}); upgrade omniq_nb"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        for statement in statements(_MIGRATIONS[version]):
            await run(statement, ())
        await run("INSERT INTO omniq_schema (version) VALUES (?)", (version,))


def statements(script: str) -> Iterable[str]:
    """Return the statements of a ``;``-separated script (no ``;`` inside them), stripped."""
    return (part.strip() for part in script.split(";") if part.strip())
