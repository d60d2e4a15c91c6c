"""SQLite store (the default): one file, one host, several processes, via aiosqlite.

WAL with ``synchronous=NORMAL`` (``FULL`` opt-in), ``busy_timeout``, a schema version
table with migrations, a partial index on the claim path. One connection per store in
autocommit mode: single statements are atomic by themselves (a write statement takes the
write lock when it starts, so ``busy_timeout`` applies); multi-statement writes use
``BEGIN IMMEDIATE`` under a lock so no other statement of this process slips inside them.
Claims take many ready tasks in one ``UPDATE … RETURNING``; outcomes of many attempts are
written by one ``UPDATE … FROM (VALUES …)``. Events are written by temporary triggers in
the same statement as the change they record. Event ``seq`` is a plain rowid (AUTOINCREMENT
would double the cost of a one-task commit); after a purge a marker row keeps the newest seq, so a
``seq`` is never handed out twice and cursors stay valid. Network filesystems are refused: WAL needs
shared memory that they do not provide.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import itertools
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aiosqlite
import msgspec

from omniq_nb.errors import StorageError, StoreLost
from omniq_nb.models import (
    EventKind,
    Schedule,
    StoreHealth,
    Task,
    TaskError,
    TaskEvent,
    TaskResult,
    TaskStatus,
    WorkerInfo,
    check_transition,
)
from omniq_nb.opening import OpensAndCloses
from omniq_nb.storage.base import STALE_IDS_SHOWN, health_report, redact_url
from omniq_nb.storage.wakeup import WakeChannel

logger = logging.getLogger(__name__)

_SCHEMA_VERSION = 3
_BUSY_TIMEOUT_MS = 15_000
_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
_WAL_RESET_BYTES = 8 * 1024 * 1024  # 2x what automatic checkpoints keep it at when no reader starves them
_INTEGRITY_LINES = 10  # PRAGMA integrity_check stops after this many errors
_CHUNK_ROWS = 400  # rows per multi-row statement: 400 x 12 values stays under SQLite's 32,766
_NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "sshfs", "ceph", "glusterfs", "lustre", "afs", "gpfs"}
)
_UTC = timezone.utc
_STATUSES = {status.value: status for status in TaskStatus}
_from_stamp = datetime.fromtimestamp
_TERMINAL_SQL = "('succeeded', 'failed', 'cancelled', 'expired')"

_COLUMNS = (
    "id, name, queue, status, priority, payload, attempt, retries, retry_on, timeout, eta, created_at, "
    "started_at, finished_at, expires_at, result_ttl, interval, cron, series, at_most_once, kind, "
    "lease_token, lease_until, worker, progress, progress_done, progress_total, progress_message, result, error, "
    "origin, run_id, owner"
)
# A new task has never run: only these columns can differ from the defaults.
_NEW_COLUMNS = (
    "id, name, queue, status, priority, payload, attempt, retries, retry_on, timeout, eta, created_at, "
    "expires_at, result_ttl, interval, cron, series, at_most_once, kind, origin, owner"
)
_EVENT_COLUMNS = "seq, task_id, kind, at, status, attempt, progress, message, run_id"
_TASKS_COLUMNS = ", ".join(f"tasks.{name.strip()}" for name in _COLUMNS.split(","))  # in a join with tasks
_ROW_MARKS = "(" + ", ".join("?" * (_NEW_COLUMNS.count(",") + 1)) + ")"
_INSERT_ROWS = 500  # rows per INSERT: 500 x 21 values stays under SQLite's 32,766 limit
_BATCH_ROWS = 5000  # rows per INSERT of insert_many: two values each
_NEW_NAMES = [name.strip() for name in _NEW_COLUMNS.split(",")]
_PAYLOAD_AT, _SERIES_AT = _NEW_NAMES.index("payload"), _NEW_NAMES.index("series")
_NOW_SQL = "((julianday('now') - 2440587.5) * 86400.0)"
# After a purge, put back a marker row (empty task id, never returned) holding the newest
# seq, so SQLite's max(rowid) + 1 never hands out a seq a cursor has already passed.
_KEEP_NEWEST_SEQ = """
    INSERT INTO events (seq, task_id, kind, at, status, attempt)
    SELECT ?1, '', 'enqueued', 0, 'pending', 0
    WHERE ?1 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM events WHERE seq >= ?1)"""

_MIGRATIONS: dict[int, str] = {
    1: """
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
    CREATE INDEX tasks_claim ON tasks (queue, priority DESC, eta, seq) WHERE status = 'pending';
    CREATE INDEX tasks_lease ON tasks (lease_until) WHERE status = 'running';
    CREATE INDEX tasks_expiry ON tasks (expires_at) WHERE status = 'pending' AND expires_at IS NOT NULL;
    CREATE INDEX tasks_purge ON tasks (purge_at) WHERE purge_at IS NOT NULL;
    CREATE INDEX tasks_status ON tasks (status, seq);
    CREATE INDEX tasks_series ON tasks (series) WHERE series IS NOT NULL;
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
}
_WORKER_COLUMNS = (
    "id, name, host, pid, kind, concurrency, queues, kernel, notebook, started_at, heartbeat, ttl, running, "
    "stop_requested"
)
# Kernel affinity: a task without an owner, of this kernel, or of a kernel with no live pool.
# The subquery is uncorrelated: SQLite runs it once per claim over the (tiny) workers table.
_AFFINITY_SQL = """
    AND (owner IS NULL OR owner = ? OR owner NOT IN (
        SELECT kernel FROM workers WHERE kernel IS NOT NULL AND heartbeat + ttl > ?))"""

# Temporary triggers belong to this connection only, so OMNIQ_EVENTS=0 in one process
# does not change what another process records.
_EVENT_TRIGGERS = f"""
CREATE TEMP TRIGGER IF NOT EXISTS omniq_event_insert AFTER INSERT ON main.tasks BEGIN
    INSERT INTO events (task_id, kind, at, status, attempt)
    VALUES (new.id, 'enqueued', new.created_at, new.status, new.attempt);
END;
CREATE TEMP TRIGGER IF NOT EXISTS omniq_event_status AFTER UPDATE OF status ON main.tasks
WHEN old.status IS NOT new.status BEGIN
    INSERT INTO events (task_id, kind, at, status, attempt, progress, message, run_id)
    VALUES (new.id,
        CASE new.status
            WHEN 'running' THEN 'started'
            WHEN 'pending' THEN CASE WHEN new.attempt < old.attempt THEN 'released' ELSE 'retried' END
            ELSE new.status END,
        {_NOW_SQL}, new.status, new.attempt, new.progress, json_extract(new.error, '$.message'), new.run_id);
END;
CREATE TEMP TRIGGER IF NOT EXISTS omniq_event_progress AFTER UPDATE OF progress_done ON main.tasks
WHEN old.status = 'running' AND new.status = 'running' BEGIN
    INSERT INTO events (task_id, kind, at, status, attempt, progress, message, run_id)
    VALUES (new.id, 'progress', {_NOW_SQL}, new.status, new.attempt, new.progress, new.progress_message, new.run_id);
END;
"""

_error_encoder = msgspec.json.Encoder()
_error_decoder = msgspec.json.Decoder(TaskError)


class SQLiteStorage(OpensAndCloses):
    """The default store: a SQLite file shared by the processes of one machine.

    Args:
        url: ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite://`` (in memory).
        events: record a ``TaskEvent`` per transition.
        synchronous: ``NORMAL`` (nothing committed is lost when a process dies) or ``FULL``
            (also survives power loss).

    """

    multi_host = False

    def __init__(self, url: str, *, events: bool = True, synchronous: str = "NORMAL") -> None:
        self.url = redact_url(url)
        self.path = sqlite_path(url)
        self._file = os.path.abspath(self.path) if self.path is not None else None  # immune to a later chdir
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file this store opened
        self._url = url
        self._wakeups = WakeChannel(self.path) if self.path is not None else None
        self.supports_notify = self._wakeups is not None
        self._events = events
        self._synchronous = synchronous
        self._conn: aiosqlite.Connection | None = None
        self._transaction = asyncio.Lock()

    async def open(self) -> None:
        """Create the file (owner-only) and its folder if needed, connect, migrate the schema.

        Raises:
            StorageError: the path cannot be created or written, or lies on a network filesystem.

        """
        if self._conn is not None:
            return
        if self._file is not None:
            _prepare_file(self._file)
        try:
            self._conn = await aiosqlite.connect(self._file or ":memory:", isolation_level=None)
            if self._file is not None:
                opened = os.stat(self._file)
                self._identity = (opened.st_dev, opened.st_ino)
            await self._configure()
        except sqlite3.Error as exc:
            await self.close()
            raise StorageError(f"cannot open the SQLite store at {self._file or ':memory:'}: {exc}") from exc
        except BaseException:
            await self.close()
            raise

    def clone(self) -> SQLiteStorage:
        """Return a new, unopened store on the same file (its own connection), whatever the cwd is now."""
        url = f"sqlite:///{quote(self._file)}" if self._file is not None else self._url
        return SQLiteStorage(url, events=self._events, synchronous=self._synchronous)

    async def wait_for_tasks(self, timeout: float) -> None:
        """Return when another process hints that it added ready tasks, or after ``timeout``."""
        if self._wakeups is None:
            await asyncio.sleep(timeout)
        else:
            await self._wakeups.wait(timeout)

    def _notify(self) -> None:
        if self._wakeups is not None:
            self._wakeups.notify()

    async def close(self) -> None:
        """Close the connection (its thread ends with it)."""
        if self._wakeups is not None:
            self._wakeups.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _configure(self) -> None:
        conn = self._db
        await conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        if self.path is not None:
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
        await conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        await self._migrate()
        if self._events:
            await conn.executescript(_EVENT_TRIGGERS)

    async def _migrate(self) -> None:
        async with self._immediate():
            await self._run("CREATE TABLE IF NOT EXISTS omniq_schema (version INTEGER NOT NULL)", ())
            rows = await self._run("SELECT max(version) FROM omniq_schema", ())
            current = rows[0][0] or 0
            if current > _SCHEMA_VERSION:
                raise StorageError(
                    f"{self.path} has schema version {current}, newer than this omniq_nb "
                    f"understands ({_SCHEMA_VERSION}); upgrade omniq_nb"
                )
            for version in range(current + 1, _SCHEMA_VERSION + 1):
                for statement in _statements(_MIGRATIONS[version]):
                    await self._run(statement, ())
                await self._run("INSERT INTO omniq_schema (version) VALUES (?)", (version,))

    @contextlib.asynccontextmanager
    async def _immediate(self) -> AsyncIterator[None]:
        """Hold this store's lock and one ``BEGIN IMMEDIATE`` transaction; commit, or roll back.

        BEGIN is inside the ``try``: a cancel that lands while it runs still rolls back, so
        the connection is never left inside a transaction.
        """
        async with self._transaction:
            self._check_file()
            try:
                await self._run("BEGIN IMMEDIATE", ())
                yield
                await self._run("COMMIT", ())
            except BaseException:
                with contextlib.suppress(StorageError):
                    await asyncio.shield(self._run("ROLLBACK", ()))
                raise

    @property
    def _db(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StorageError(f"the SQLite store {self.url} is not open (use 'async with' or await open())")
        return self._conn

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[Any]:
        async with self._transaction:
            self._check_file()
            return await self._run(sql, params)

    def _check_file(self) -> None:
        """Refuse to go on when the file this store opened is no longer at its path.

        A deleted or moved file stays writable through the open connection, so without this
        check every later write would go to an orphaned inode that no other process sees.
        A ``stat`` is safe (it opens no descriptor) and costs about a microsecond.
        """
        if self._identity is None or self._file is None:
            return
        try:
            now = os.stat(self._file)
        except OSError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != self._identity:
            raise StoreLost(
                f"the SQLite store {self._file} was deleted or moved while in use; nothing more is "
                "written to it. Reopen the queue to start a new store at that path."
            )

    async def now(self) -> datetime:
        """Return the store's clock: this machine's, as every process on the file shares it."""
        return datetime.now(_UTC)

    async def insert(self, tasks: Iterable[Task]) -> None:
        """Add new tasks in one transaction (one statement for a single task)."""
        chunks = [batch for batch in _chunks(builtins.list(tasks), _INSERT_ROWS) if batch]
        with _duplicate_ids_refused():
            if len(chunks) == 1:
                await self._fetch(*_insert_statement(chunks[0]))
            elif chunks:
                async with self._immediate():
                    for batch in chunks:
                        await self._run(*_insert_statement(batch))
        if chunks:
            self._notify()

    async def insert_many(self, template: Task, entries: Iterable[tuple[str, bytes]]) -> None:
        """Add tasks that differ from ``template`` only by id and payload, in one transaction.

        The shared values are bound once per statement and only ``(id, payload)`` per row,
        which is what makes ``enqueue_many`` fast.
        """
        shared = _new_task_row(template)
        statements = [_batch_statement(shared, batch) for batch in _chunks(builtins.list(entries), _BATCH_ROWS)]
        if not statements:
            return
        with _duplicate_ids_refused():
            async with self._immediate():
                for statement in statements:
                    await self._run(*statement)
        self._notify()

    async def get(self, task_id: str) -> Task | None:
        """Return the task with this id, or ``None``."""
        rows = await self._fetch(f"SELECT {_COLUMNS} FROM tasks WHERE id = ?", (task_id,))
        return _row_task(rows[0]) if rows else None

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Return the tasks with these ids that exist."""
        found: builtins.list[Task] = []
        for chunk in _chunks(task_ids, 900):
            marks = ", ".join("?" * len(chunk))
            rows = await self._fetch(f"SELECT {_COLUMNS} FROM tasks WHERE id IN ({marks})", chunk)
            found.extend(_row_task(row) for row in rows)
        return found

    async def list(
        self, *, statuses: Sequence[TaskStatus] = (), queue: str | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Return up to ``limit`` tasks, newest first."""
        where, params = _filters(statuses, queue)
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM tasks {where} ORDER BY seq DESC LIMIT ?",
            (*params, limit),
        )
        return [_row_task(row) for row in rows]

    async def count(self, *, task_ids: Sequence[str] | None = None) -> dict[TaskStatus, int]:
        """Return the number of tasks per status (of ``task_ids``, or all)."""
        counts = dict.fromkeys(TaskStatus, 0)
        if task_ids is None:
            for status, n in await self._fetch("SELECT status, count(*) FROM tasks GROUP BY status"):
                counts[TaskStatus(status)] = n
            return counts
        for chunk in _chunks(task_ids, 900):
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT status, count(*) FROM tasks WHERE id IN ({marks}) GROUP BY status"
            for status, n in await self._fetch(sql, chunk):
                counts[TaskStatus(status)] += n
        return counts

    async def claim(
        self,
        *,
        queues: Sequence[str],
        limit: int,
        lease: float,
        worker: str,
        unowned_only: bool = False,
        owner: str | None = None,
    ) -> builtins.list[Task]:
        """Claim up to ``limit`` ready tasks in one atomic ``UPDATE … RETURNING``.

        The lease (and ``started_at``) run from the clock read inside the statement, after any
        wait for another process's write lock, so a claim that waited still gets its whole
        lease. Ready tasks are those due at the call (SQLite's own clock has millisecond steps:
        a task enqueued this millisecond would wait for the next one).
        """
        now = time.time()
        marks = ", ".join("?" * len(queues))
        affinity, mine = (_AFFINITY_SQL, (owner, now)) if unowned_only else ("", ())
        sql = f"""
            UPDATE tasks SET status = 'running', attempt = attempt + 1,
                lease_token = lower(hex(randomblob(16))), run_id = lower(hex(randomblob(8))),
                lease_until = {_NOW_SQL} + ?, started_at = {_NOW_SQL}, worker = ?,
                progress = 0, progress_done = 0, progress_total = NULL, progress_message = NULL
            WHERE seq IN (
                SELECT seq FROM tasks
                WHERE status = 'pending' AND queue IN ({marks}) AND eta <= ?
                    AND (expires_at IS NULL OR expires_at > ?){affinity}
                ORDER BY priority DESC, eta, seq LIMIT ?)
            RETURNING {_COLUMNS}, seq"""
        rows = await self._fetch(sql, (lease, worker, *queues, now, now, *mine, limit))
        rows.sort(key=lambda row: (-row[4], row[10], row[-1]))
        return [_row_task(row) for row in rows]

    async def heartbeat(self, worker: WorkerInfo) -> bool:
        """Insert or refresh the pool's registry row (and drop dead rows); return whether it must stop."""
        now = time.time()
        started = worker.started_at.timestamp() if worker.started_at is not None else now
        async with self._immediate():
            await self._run("DELETE FROM workers WHERE heartbeat + ttl <= ?", (now,))
            rows = await self._run(
                f"""INSERT INTO workers ({_WORKER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)
                ON CONFLICT (id) DO UPDATE SET heartbeat = excluded.heartbeat, ttl = excluded.ttl,
                    running = excluded.running
                RETURNING stop_requested""",
                (
                    worker.id,
                    worker.name,
                    worker.host,
                    worker.pid,
                    worker.kind,
                    worker.concurrency,
                    "\n".join(worker.queues),
                    worker.kernel,
                    worker.notebook,
                    started,
                    now,
                    worker.ttl,
                    worker.running,
                ),
            )
        return bool(rows[0][0])

    async def workers(self) -> builtins.list[WorkerInfo]:
        """Return the live pools of the registry, oldest first."""
        rows = await self._fetch(
            f"SELECT {_WORKER_COLUMNS} FROM workers WHERE heartbeat + ttl > ? ORDER BY started_at, id", (time.time(),)
        )
        return [_row_worker(row) for row in rows]

    async def request_stop(self, worker_id: str) -> bool:
        """Flag a live pool's row; the pool drains and stops at its next heartbeat."""
        rows = await self._fetch(
            "UPDATE workers SET stop_requested = 1 WHERE id = ? AND heartbeat + ttl > ? RETURNING id",
            (worker_id, time.time()),
        )
        return bool(rows)

    async def unregister(self, worker_id: str) -> None:
        """Remove the pool's registry row."""
        await self._fetch("DELETE FROM workers WHERE id = ?", (worker_id,))

    async def renew(self, *, leases: Mapping[str, str], lease: float) -> set[str]:
        """Extend the leases still held (from the clock after any lock wait); return their ids."""
        held: set[str] = set()
        for chunk in _chunks(list(leases.items()), _CHUNK_ROWS):
            values = ", ".join("(?, ?)" for _ in chunk)
            sql = f"""
                WITH v(id, token) AS (VALUES {values})
                UPDATE tasks SET lease_until = {_NOW_SQL} + ? FROM v
                WHERE tasks.id = v.id AND tasks.lease_token = v.token AND tasks.status = 'running'
                RETURNING tasks.id"""
            rows = await self._fetch(sql, (*itertools.chain.from_iterable(chunk), lease))
            held.update(row[0] for row in rows)
        return held

    async def progress(
        self, *, task_id: str, lease_token: str, done: float, total: float | None, message: str | None
    ) -> bool:
        """Store progress of a running task, fenced on its lease."""
        fraction = min(1.0, max(0.0, done / total)) if total else 0.0
        rows = await self._fetch(
            """UPDATE tasks SET progress_done = ?, progress_total = ?, progress_message = ?, progress = ?
            WHERE id = ? AND lease_token = ? AND status = 'running' RETURNING id""",
            (done, total, message, fraction, task_id, lease_token),
        )
        return bool(rows)

    async def settle(
        self, results: Sequence[TaskResult], *, successors: Mapping[str, Task] = {}
    ) -> builtins.list[Task]:
        """Apply many attempt outcomes with one statement per chunk, fenced on each lease."""
        for result in results:
            check_transition(TaskStatus.RUNNING, result.status)
        if not successors:
            return await self._settle_rows(results)
        async with self._immediate():
            accepted = await self._settle_rows(results, locked=True)
            following = [successors[t.id] for t in accepted if t.id in successors]
            if following:  # one unfinished run per series: a retried old run must not fork it
                marks = ", ".join("?" * len(following))
                busy = await self._run(
                    f"SELECT DISTINCT series FROM tasks WHERE series IN ({marks}) AND status IN ('pending', 'running')",
                    [task.series for task in following],
                )
                taken = {row[0] for row in busy}
                following = [task for task in following if task.series not in taken]
            if following:
                await self._run(*_insert_statement(following))
        return accepted

    async def _settle_rows(self, results: Sequence[TaskResult], *, locked: bool = False) -> builtins.list[Task]:
        accepted: builtins.list[Task] = []
        for chunk in _chunks(results, _CHUNK_ROWS):
            values = ", ".join("(?, ?, ?, ?, ?, ?, ?)" for _ in chunk)
            params: builtins.list[Any] = [time.time()]
            for r in chunk:
                error = _error_encoder.encode(r.error).decode() if r.error is not None else None
                eta = r.eta.timestamp() if r.eta is not None else None
                params += (r.task_id, r.lease_token, r.status.value, r.result, error, eta, int(r.rescue))
            sql = f"""
                WITH clock(now) AS (VALUES (?)),
                    v(id, token, status, result, error, eta, rescue) AS (VALUES {values})
                UPDATE tasks SET status = v.status, result = v.result, error = v.error,
                    eta = coalesce(v.eta, tasks.eta), lease_token = NULL, lease_until = NULL,
                    finished_at = CASE WHEN v.status = 'pending' THEN NULL ELSE clock.now END,
                    purge_at = CASE WHEN v.status != 'pending' THEN clock.now + tasks.result_ttl END,
                    progress = CASE WHEN v.status = 'succeeded' THEN 1.0 ELSE tasks.progress END
                FROM v, clock
                WHERE tasks.id = v.id AND tasks.lease_token = v.token AND tasks.status = 'running'
                    AND (v.rescue = 0 OR tasks.lease_until <= clock.now)
                RETURNING {_TASKS_COLUMNS}"""
            rows = await (self._run(sql, params) if locked else self._fetch(sql, params))
            accepted.extend(_row_task(row) for row in rows)
        return accepted

    async def release(self, *, leases: Mapping[str, str]) -> builtins.list[Task]:
        """Hand running tasks back to pending and give back the attempt their claim used."""
        released: builtins.list[Task] = []
        for chunk in _chunks(list(leases.items()), _CHUNK_ROWS):
            values = ", ".join("(?, ?)" for _ in chunk)
            sql = f"""
                WITH v(id, token) AS (VALUES {values})
                UPDATE tasks SET status = 'pending', attempt = attempt - 1, lease_token = NULL,
                    lease_until = NULL, worker = NULL
                FROM v
                WHERE tasks.id = v.id AND tasks.lease_token = v.token AND tasks.status = 'running'
                RETURNING {_TASKS_COLUMNS}"""
            rows = await self._fetch(sql, list(itertools.chain.from_iterable(chunk)))
            released.extend(_row_task(row) for row in rows)
        if released:
            self._notify()
        return released

    async def expired_leases(self, *, limit: int) -> builtins.list[Task]:
        """Return running tasks whose lease ran out."""
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM tasks WHERE status = 'running' AND lease_until <= ? LIMIT ?",
            (time.time(), limit),
        )
        return [_row_task(row) for row in rows]

    async def cancel(self, task_id: str) -> Task | None:
        """Cancel a pending or running task, and the unfinished runs of its periodic series."""
        rows = await self._fetch(
            f"""UPDATE tasks SET status = 'cancelled', finished_at = ?1, purge_at = ?1 + result_ttl,
                lease_until = NULL
            WHERE status IN ('pending', 'running')
                AND (id = ?2 OR series = (SELECT series FROM tasks WHERE id = ?2))
            RETURNING {_COLUMNS}""",
            (time.time(), task_id),
        )
        named = [row for row in rows if row[0] == task_id]
        return _row_task(named[0]) if named else await self.get(task_id)

    async def requeue(self, task_id: str) -> Task | None:
        """Put a failed, cancelled or expired task back to pending, allowing one more attempt."""
        rows = await self._fetch(
            f"""UPDATE tasks SET status = 'pending', eta = ?1, finished_at = NULL, purge_at = NULL,
                retries = max(retries, attempt), lease_token = NULL, lease_until = NULL,
                expires_at = CASE WHEN expires_at IS NULL THEN NULL ELSE ?1 + (expires_at - created_at) END
            WHERE id = ?2 AND status IN ('failed', 'cancelled', 'expired') RETURNING {_COLUMNS}""",
            (time.time(), task_id),
        )
        if not rows:
            return await self.get(task_id)
        self._notify()
        return _row_task(rows[0])

    async def expire(self) -> builtins.list[Task]:
        """Move pending tasks past ``expires_at`` to expired."""
        rows = await self._fetch(
            f"""UPDATE tasks SET status = 'expired', finished_at = ?1, purge_at = ?1 + result_ttl
            WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= ?1
            RETURNING {_COLUMNS}""",
            (time.time(),),
        )
        return [_row_task(row) for row in rows]

    async def purge(
        self, *, finished_before: datetime | None = None, statuses: Sequence[TaskStatus] = (), everything: bool = False
    ) -> int:
        """Delete finished tasks past their result TTL (or all tasks), with their events."""
        params: builtins.list[Any] = []
        if everything:
            where = ""
        else:
            where = f"WHERE status IN {_TERMINAL_SQL} AND (purge_at <= ?"
            params.append(time.time())
            if finished_before is not None:
                picked = [s.value for s in statuses] or ["succeeded", "failed", "cancelled", "expired"]
                where += f" OR (finished_at < ? AND status IN ({', '.join('?' * len(picked))}))"
                params += [finished_before.timestamp(), *picked]
            where += ")"
        async with self._immediate():
            newest = await self._run("SELECT max(seq) FROM events", ())
            gone = await self._run(f"DELETE FROM tasks {where} RETURNING id", params)
            ids = [row[0] for row in gone]
            for chunk in _chunks(ids, 900):
                marks = ", ".join("?" * len(chunk))
                await self._run(f"DELETE FROM events WHERE task_id IN ({marks})", chunk)
            await self._run("DELETE FROM events WHERE task_id = '' AND seq < ?", (newest[0][0],))
            await self._run(_KEEP_NEWEST_SEQ, (newest[0][0],))
        if self.path is not None:
            await self._fetch("PRAGMA wal_checkpoint(PASSIVE)")
        return len(ids)

    async def events(
        self, *, task_id: str | None = None, since: int = 0, limit: int = 1000
    ) -> builtins.list[TaskEvent]:
        """Return events with ``seq > since``, oldest first."""
        if task_id is None:
            sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ? AND task_id != '' ORDER BY seq LIMIT ?"
            params = (since, limit)
        else:
            sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?"
            params = (task_id, since, limit)  # type: ignore[assignment]
        return [
            TaskEvent(
                seq=seq,
                task_id=tid,
                kind=EventKind(kind),
                at=_time(at),
                status=TaskStatus(status),
                attempt=attempt,
                progress=progress,
                message=message,
                run_id=run_id,
            )
            for seq, tid, kind, at, status, attempt, progress, message, run_id in await self._fetch(sql, params)
        ]

    async def checkpoint(self) -> None:
        """Truncate a write-ahead log that overlapping readers kept from ever being reset.

        SQLite's automatic checkpoints are PASSIVE: while some reader is always open (a poller,
        ``omniq-nb list`` in a loop, other pools) the log is copied back but never restarted,
        so it grows without end. Past ``_WAL_RESET_BYTES`` this waits (``busy_timeout``) for
        the readers of the moment to finish, then truncates the log to zero. A ``stat`` when
        there is nothing to do.
        """
        size = self._wal_bytes()
        if size is not None and size > _WAL_RESET_BYTES:
            busy, _, _ = (await self._fetch("PRAGMA wal_checkpoint(TRUNCATE)"))[0]
            logger.info("checkpoint of %s: the %d-byte log was %s", self._file, size, "kept" if busy else "truncated")

    def _wal_bytes(self) -> int | None:
        """Return the write-ahead log's size (0 when there is none), or ``None`` for an in-memory store."""
        if self._file is None:
            return None
        try:
            return os.stat(f"{self._file}-wal").st_size  # stat only: never a descriptor of the store's files
        except FileNotFoundError:
            return 0

    async def last_event_seq(self) -> int:
        """Return the newest event's ``seq`` (0 when there is none)."""
        rows = await self._fetch("SELECT coalesce(max(seq), 0) FROM events")
        return int(rows[0][0])

    async def check(self, *, stale_after: float) -> StoreHealth:
        """Run SQLite's integrity check; read the schema version, WAL size, tasks per status, lapsed leases.

        An open store is checked on its own connection. An unopened one is inspected through
        a connection that cannot create the file (``mode=rw``), closed at the end; nothing is
        created or migrated. The integrity check reads the whole file, so it takes a while on
        a large store, and meanwhile other statements of this store object wait.

        Raises:
            StorageError: there is no file at the path (none is created), it cannot be opened,
                or an unopened in-memory store (``sqlite://``) is asked: there is nothing to check.

        """
        if self._conn is not None:
            return await self._health(self._fetch, stale_after)
        if self._file is None:
            raise StorageError("an in-memory SQLite store (sqlite://) exists only while open: check the open queue")
        where = _existing_store(self._file)
        try:
            conn = await aiosqlite.connect(f"file:{quote(self._file)}?mode=rw", uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the SQLite store at {where}: {exc}") from exc
        try:
            await conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            return await self._health(conn.execute_fetchall, stale_after)
        finally:
            await conn.close()

    async def _health(
        self, run: Callable[[str, Sequence[Any]], Awaitable[Iterable[Any]]], stale_after: float
    ) -> StoreHealth:
        """Measure the store with ``run`` (runs one statement on some connection, returns its rows)."""
        integrity = await _integrity(run)
        wal = self._wal_bytes()
        now = time.time()
        version, expired, stale, ids, problems = None, 0, 0, [], []
        counts: dict[TaskStatus, int] | None = None
        try:
            [(version,)] = await run("SELECT max(version) FROM omniq_schema", ())
            if version is not None and version > _SCHEMA_VERSION:
                problems.append(
                    f"schema version {version} is newer than this omniq_nb understands ({_SCHEMA_VERSION}); "
                    "upgrade omniq_nb"
                )
            else:
                rows = await run("SELECT status, count(*) FROM tasks GROUP BY status", ())
                counts = {TaskStatus(status): n for status, n in rows}
                [(expired, stale)] = await run(
                    """SELECT count(*), count(CASE WHEN lease_until <= ?2 THEN 1 END) FROM tasks
                    WHERE status = 'running' AND lease_until <= ?1""",
                    (now, now - stale_after),
                )
                rows = await run(
                    "SELECT id FROM tasks WHERE status = 'running' AND lease_until <= ? ORDER BY lease_until LIMIT ?",
                    (now - stale_after, STALE_IDS_SHOWN),
                )
                ids = [row[0] for row in rows]
        except (sqlite3.DatabaseError, StorageError, ValueError) as exc:  # ValueError: a damaged index's status
            counts, expired, stale, ids = None, 0, 0, []
            problems.append(f"cannot read the store's tables: {exc}")
        return health_report(
            self.url,
            counts=counts,
            expired_leases=expired,
            stale_ids=ids,
            stale_after=stale_after,
            stale_leases=stale,
            integrity=integrity,
            schema_version=version,
            wal_bytes=wal,
            problems=problems,
        )

    async def _run(self, sql: str, params: Sequence[Any]) -> builtins.list[Any]:
        try:
            return list(await self._db.execute_fetchall(sql, params))
        except sqlite3.IntegrityError:
            raise  # a duplicate id: the caller says which
        except sqlite3.Error as exc:
            raise storage_error(self._file, exc) from exc


def storage_error(path: str | None, exc: sqlite3.Error) -> StorageError:
    """Return a one-line ``StorageError`` for a SQLite error, naming the store's file."""
    where = path if path is not None else ":memory:"
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return StorageError(f"the disk holding the SQLite store {where} is full ({exc}); free space and try again")
    return StorageError(f"the SQLite store {where} failed: {exc}")


@contextlib.contextmanager
def _duplicate_ids_refused() -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise ValueError(f"a task with one of these ids already exists; nothing was inserted ({exc})") from exc


def sqlite_path(url: str) -> str | None:
    """Return the file path of a ``sqlite:`` URL, or ``None`` for an in-memory database.

    Args:
        url: ``sqlite:///relative.db`` (relative to the working directory),
            ``sqlite:////absolute/path.db``, or ``sqlite://`` / ``sqlite:///:memory:``.

    Raises:
        StorageError: the URL is malformed; the message shows the accepted forms.

    """
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or parts.query or parts.fragment:
        raise StorageError(
            f"malformed SQLite URL {redact_url(url)!r}: expected sqlite:///relative/path.db "
            "(three slashes) or sqlite:////absolute/path.db (four slashes)"
        )
    path = unquote(parts.path)
    if path in ("", "/", "/:memory:"):
        return None
    return path[1:]


def _prepare_file(path: str) -> None:
    """Create the folder and an owner-only file, or say clearly why that is impossible.

    The database file itself is never opened here: on POSIX, closing any descriptor of a
    file drops every fcntl lock this process holds on it, SQLite's included, and another
    process would then believe it is alone and delete the live WAL. A new store is made as
    an owner-only temporary file beside it and hard-linked into place (which never
    replaces an existing file); writability is checked by SQLite's own ``BEGIN IMMEDIATE``.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not target.exists():
            _create_owner_only(target)
    except OSError as exc:
        raise StorageError(f"cannot create or write the SQLite store at {target.resolve()}: {exc.strerror}") from exc
    filesystem = _filesystem_type(target.resolve())
    if filesystem in _NETWORK_FILESYSTEMS:
        raise StorageError(
            f"{target.resolve()} is on a network filesystem ({filesystem}); SQLite's WAL mode does not "
            "work there and could corrupt the store. Put the file on a local disk, or use a "
            "PostgreSQL or Redis store to share tasks between machines."
        )


def _create_owner_only(target: Path) -> None:
    """Create an empty owner-only file at ``target`` unless one exists, without opening ``target``.

    Where the filesystem has no hard links, SQLite creates the file and its mode is set by path.
    """
    handle, scratch = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)  # the scratch file's descriptor, never the store's
    try:
        os.link(scratch, target)
    except FileExistsError:
        pass  # another process or store object created it first
    except OSError:  # no hard links here: let SQLite create it, then restrict it by path
        sqlite3.connect(f"file:{quote(str(target))}?mode=rwc", uri=True).close()
        os.chmod(target, 0o600)
    finally:
        os.unlink(scratch)


def _filesystem_type(path: Path) -> str:
    """Return the type of the filesystem holding ``path`` (Linux), or '' when unknown."""
    best, kind = "", ""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1].replace("\\040", " ")
                if str(path).startswith(mount.rstrip("/") + "/") and len(mount) > len(best):
                    best, kind = mount, fields[2]
    except OSError:
        return ""
    return kind


def _insert_statement(tasks: Sequence[Task]) -> tuple[str, list[Any]]:
    """Return one multi-row INSERT for ``tasks`` (far cheaper than executemany with triggers)."""
    marks = ", ".join(itertools.repeat(_ROW_MARKS, len(tasks)))
    params = list(itertools.chain.from_iterable(map(_new_task_row, tasks)))
    return f"INSERT INTO tasks ({_NEW_COLUMNS}) VALUES {marks}", params


def _batch_statement(shared: tuple[Any, ...], entries: Sequence[tuple[str, bytes]]) -> tuple[str, list[Any]]:
    """Return one INSERT of ``entries`` (id, payload) that share every other value of ``shared``."""
    periodic = shared[_SERIES_AT] is not None
    values = ", ".join(itertools.repeat("(?, ?)", len(entries)))
    columns = [
        "v.id" if at == 0 else "v.payload" if at == _PAYLOAD_AT else "v.id" if at == _SERIES_AT and periodic else "?"
        for at in range(len(shared))
    ]
    constants = [value for at, value in enumerate(shared) if columns[at] == "?"]
    sql = (
        f"WITH v(id, payload) AS (VALUES {values}) "
        f"INSERT INTO tasks ({_NEW_COLUMNS}) SELECT {', '.join(columns)} FROM v"
    )
    return sql, [*itertools.chain.from_iterable(entries), *constants]


def _statements(script: str) -> Iterable[str]:
    return (part.strip() for part in script.split(";") if part.strip())


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    return (items[i : i + size] for i in range(0, len(items), size))


def _filters(statuses: Sequence[TaskStatus], queue: str | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if statuses:
        clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
        params += [TaskStatus(s).value for s in statuses]
    if queue is not None:
        clauses.append("queue = ?")
        params.append(queue)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


def _time(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, _UTC)


def _new_task_row(task: Task) -> tuple[Any, ...]:
    """Return the ``_NEW_COLUMNS`` values of a task about to be inserted (pending, never run)."""
    schedule, expires = task.schedule, task.expires_at
    return (
        task.id,
        task.name,
        task.queue,
        task.status.value,
        task.priority,
        task.payload,
        task.attempt,
        task.retries,
        "\n".join(task.retry_on) or None,
        task.timeout,
        task.eta.timestamp(),
        task.created_at.timestamp(),
        None if expires is None else expires.timestamp(),
        task.result_ttl,
        schedule.interval.total_seconds() if schedule and schedule.interval else None,
        schedule.cron if schedule else None,
        task.series,
        task.at_most_once,
        task.kind,
        task.origin,
        task.owner,
    )


def _row_worker(row: Sequence[Any]) -> WorkerInfo:
    """Build a ``WorkerInfo`` from a row of ``_WORKER_COLUMNS``."""
    return WorkerInfo(
        id=row[0],
        name=row[1],
        host=row[2],
        pid=row[3],
        kind=row[4],
        concurrency=row[5],
        queues=tuple(row[6].split("\n")),
        kernel=row[7],
        notebook=row[8],
        started_at=_time(row[9]),
        heartbeat=_time(row[10]),
        ttl=row[11],
        running=row[12],
        stop_requested=bool(row[13]),
    )


def _row_task(row: Sequence[Any]) -> Task:
    """Build a ``Task`` from a row of ``_COLUMNS`` (on every claim and settle: kept lean)."""
    interval, cron = row[16], row[17]
    schedule = None
    if interval is not None or cron is not None:
        schedule = Schedule(interval=timedelta(seconds=interval) if interval is not None else None, cron=cron)
    started, finished, expires, lease_until = row[12], row[13], row[14], row[22]
    return Task(  # positional, in Task's field order
        row[0],  # id
        row[1],  # name
        _from_stamp(row[10], _UTC),  # eta
        _from_stamp(row[11], _UTC),  # created_at
        row[2],  # queue
        _STATUSES[row[3]],
        row[4],  # priority
        row[5],  # payload
        row[6],  # attempt
        row[7],  # retries
        tuple(row[8].split("\n")) if row[8] else (),  # retry_on
        row[9],  # timeout
        None if started is None else _from_stamp(started, _UTC),
        None if finished is None else _from_stamp(finished, _UTC),
        None if expires is None else _from_stamp(expires, _UTC),
        row[15],  # result_ttl
        schedule,
        row[18],  # series
        bool(row[19]),  # at_most_once
        row[20],  # kind
        row[21],  # lease_token
        None if lease_until is None else _from_stamp(lease_until, _UTC),
        row[23],  # worker
        row[24],  # progress
        row[25],  # progress_done
        row[26],  # progress_total
        row[27],  # progress_message
        row[28],  # result
        _error_decoder.decode(row[29]) if row[29] is not None else None,
        row[30],  # origin
        row[31],  # run_id
        row[32],  # owner
    )


def _existing_store(path: str) -> Path:
    """Return the absolute path of the store file at ``path``, or say clearly that there is none.

    Raises:
        StorageError: no file exists at ``path``.

    """
    where = Path(path).resolve()
    if not where.exists():
        raise StorageError(f"no store at {where}: the file does not exist (check creates nothing)")
    return where


async def _integrity(run: Callable[[str, Sequence[Any]], Awaitable[Iterable[Any]]]) -> str:
    """Return ``"ok"`` or the first lines of SQLite's report on the damage, or its error.

    ``integrity_check`` gives up with an error at a page too damaged to search;
    ``quick_check`` skips that search and then says which page it is.
    """
    try:
        rows = await run(f"PRAGMA integrity_check({_INTEGRITY_LINES})", ())
    except (sqlite3.DatabaseError, StorageError) as exc:  # also: not a database at all
        try:
            rows = await run(f"PRAGMA quick_check({_INTEGRITY_LINES})", ())
        except (sqlite3.DatabaseError, StorageError):
            return str(exc)
    return "\n".join(str(row[0]) for row in rows)
