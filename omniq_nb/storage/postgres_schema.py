"""The PostgreSQL store's schema: DDL by version, the locked migration, the event triggers.

Everything lives in one schema (``?schema=`` in the URL, default ``omniq``). ``migrate``
runs in one transaction that first takes a transaction-level advisory lock keyed on the
schema, so several processes opening the same store at once migrate it exactly once: the
others wait, then find it up to date. A schema newer than this code is refused.

Events are written by triggers in the same transaction as the change they record. Every
event-writing transaction takes the schema's event lock (``pg_advisory_xact_lock``) just
before it draws event ``seq`` numbers and holds it until it commits, so event seqs become
visible in the order they were drawn: a reader never sees seq ``n + 1`` while ``n`` is still
in flight, and ``events(since=cursor)`` can never skip an event. The price is that event
writers commit one at a time (each holds the lock only from the end of its statement to
its commit); readers never wait. A session with ``omniq.events = off`` records nothing.

Version 2 adds ``leaders``: who holds the maintenance turn, and until when (server clock).
Version 3 adds task dependencies: ``depends_on`` and ``run_on`` columns, ``task_deps`` (one
row per task and task it depends on, to find dependents by dependency), and the ``ready``
event of a waiting task that may run now.
Version 4 adds the result cache and kept task output: a ``cache_key`` column with a partial
index (only tasks submitted with ``cache=True`` have an entry: ``cached`` is one index probe),
``task_output`` (a task's chunks by ``seq``, the text as UTF-8 bytes so any string comes back
as it went in) and ``output_seq`` (each task's newest chunk ``seq``, a counter row that
concurrent writers update in turn).
Version 5 adds ``callables``: a batch's pickled callable, kept once under its SHA-256 digest
(``enqueue_many`` rows name it instead of carrying it).
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql

from omniq_nb.errors import StorageError
from omniq_nb.storage.sql_text import TASK_INDEXES

__all__ = ["NOW_SQL", "CLOCK_SQL", "SCHEMA_VERSION", "migrate", "schema_exists"]

SCHEMA_VERSION = 5
"""The schema version this code writes and understands."""
NOW_SQL = "extract(epoch from now())::float8"
"""The transaction's start on the server's clock, in seconds since the epoch (usable by indexes)."""
CLOCK_SQL = "extract(epoch from clock_timestamp())::float8"
"""The server's clock at this instant (after any lock wait), in seconds since the epoch."""

_MIGRATE_LOCK = "omniq.migrate."
_EVENTS_OFF = "coalesce(current_setting('omniq.events', true), '') = 'off'"

_MIGRATIONS: dict[int, str] = {
    1: f"""
    CREATE TABLE tasks (
        seq bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        name text NOT NULL,
        queue text NOT NULL,
        status text NOT NULL,
        priority integer NOT NULL DEFAULT 0,
        payload bytea NOT NULL,
        attempt integer NOT NULL DEFAULT 0,
        retries integer NOT NULL DEFAULT 0,
        retry_on text,
        timeout float8,
        eta float8 NOT NULL,
        created_at float8 NOT NULL,
        started_at float8,
        finished_at float8,
        expires_at float8,
        result_ttl float8,
        purge_at float8,
        interval float8,
        cron text,
        series text,
        at_most_once boolean NOT NULL DEFAULT false,
        kind text,
        lease_token text,
        lease_until float8,
        worker text,
        progress float8 NOT NULL DEFAULT 0,
        progress_done float8 NOT NULL DEFAULT 0,
        progress_total float8,
        progress_message text,
        result bytea,
        error text,
        origin text,
        run_id text,
        owner text
    );
    {TASK_INDEXES}
    CREATE TABLE events (
        seq bigserial PRIMARY KEY,
        task_id text NOT NULL,
        kind text NOT NULL,
        at float8 NOT NULL,
        status text NOT NULL,
        attempt integer NOT NULL,
        progress float8,
        message text,
        run_id text
    );
    CREATE INDEX events_task ON events (task_id, seq);
    CREATE TABLE workers (
        id text PRIMARY KEY,
        name text NOT NULL,
        host text NOT NULL,
        pid integer NOT NULL,
        kind text NOT NULL,
        concurrency integer NOT NULL,
        queues text NOT NULL,
        kernel text,
        notebook text,
        started_at float8 NOT NULL,
        heartbeat float8 NOT NULL,
        ttl float8 NOT NULL,
        running integer NOT NULL DEFAULT 0,
        stop_requested boolean NOT NULL DEFAULT false
    );
    CREATE FUNCTION omniq_enqueued() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    BEGIN
        IF {_EVENTS_OFF} OR NOT EXISTS (SELECT 1 FROM new_rows) THEN RETURN NULL; END IF;
        PERFORM pg_advisory_xact_lock(hashtext('omniq.events.' || TG_TABLE_SCHEMA));
        INSERT INTO events (task_id, kind, at, status, attempt)
        SELECT id, 'enqueued', created_at, status, attempt FROM new_rows ORDER BY seq;
        RETURN NULL;
    END $$;
    CREATE TRIGGER omniq_enqueued AFTER INSERT ON tasks REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION omniq_enqueued();
    CREATE FUNCTION omniq_transition() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    BEGIN
        IF {_EVENTS_OFF} OR NOT EXISTS (
            SELECT 1 FROM new_rows n JOIN old_rows o ON o.seq = n.seq WHERE n.status <> o.status
        ) THEN RETURN NULL; END IF;
        PERFORM pg_advisory_xact_lock(hashtext('omniq.events.' || TG_TABLE_SCHEMA));
        INSERT INTO events (task_id, kind, at, status, attempt, progress, message, run_id)
        SELECT n.id,
            CASE n.status
                WHEN 'running' THEN 'started'
                WHEN 'pending' THEN CASE WHEN n.attempt < o.attempt THEN 'released' ELSE 'retried' END
                ELSE n.status END,
            {CLOCK_SQL}, n.status, n.attempt, n.progress, n.error::jsonb ->> 'message', n.run_id
        FROM new_rows n JOIN old_rows o ON o.seq = n.seq WHERE n.status <> o.status ORDER BY n.seq;
        RETURN NULL;
    END $$;
    CREATE TRIGGER omniq_transition AFTER UPDATE ON tasks REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION omniq_transition();
    CREATE FUNCTION omniq_progress() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    BEGIN
        IF {_EVENTS_OFF} THEN RETURN NULL; END IF;
        PERFORM pg_advisory_xact_lock(hashtext('omniq.events.' || TG_TABLE_SCHEMA));
        INSERT INTO events (task_id, kind, at, status, attempt, progress, message, run_id)
        VALUES (NEW.id, 'progress', {CLOCK_SQL}, NEW.status, NEW.attempt, NEW.progress,
            NEW.progress_message, NEW.run_id);
        RETURN NULL;
    END $$;
    CREATE TRIGGER omniq_progress AFTER UPDATE OF progress_done ON tasks FOR EACH ROW
        WHEN (OLD.status = 'running' AND NEW.status = 'running') EXECUTE FUNCTION omniq_progress()
    """,
    2: """
    CREATE TABLE kept_results (
        task_id text NOT NULL,
        token text NOT NULL,
        result bytea NOT NULL,
        kept_at float8 NOT NULL,
        purge_at float8,
        PRIMARY KEY (task_id, token)
    );
    CREATE INDEX kept_results_purge ON kept_results (purge_at) WHERE purge_at IS NOT NULL;
    ALTER TABLE events ADD COLUMN purge_at float8;
    CREATE INDEX events_purge ON events (purge_at) WHERE purge_at IS NOT NULL;
    CREATE INDEX events_at ON events (at);
    CREATE TABLE leaders (
        role text PRIMARY KEY,
        holder text NOT NULL,
        until float8 NOT NULL
    )
    """,
    3: f"""
    ALTER TABLE tasks ADD COLUMN depends_on text, ADD COLUMN run_on text NOT NULL DEFAULT 'success';
    CREATE TABLE task_deps (
        task_id text NOT NULL,
        depends_on text NOT NULL,
        PRIMARY KEY (depends_on, task_id)
    );
    CREATE INDEX task_deps_task ON task_deps (task_id);
    CREATE OR REPLACE FUNCTION omniq_transition() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    BEGIN
        IF {_EVENTS_OFF} OR NOT EXISTS (
            SELECT 1 FROM new_rows n JOIN old_rows o ON o.seq = n.seq WHERE n.status <> o.status
        ) THEN RETURN NULL; END IF;
        PERFORM pg_advisory_xact_lock(hashtext('omniq.events.' || TG_TABLE_SCHEMA));
        INSERT INTO events (task_id, kind, at, status, attempt, progress, message, run_id)
        SELECT n.id,
            CASE n.status
                WHEN 'running' THEN 'started'
                WHEN 'pending' THEN CASE WHEN o.status = 'waiting' THEN 'ready'
                    WHEN n.attempt < o.attempt THEN 'released' ELSE 'retried' END
                WHEN 'waiting' THEN 'retried'
                ELSE n.status END,
            {CLOCK_SQL}, n.status, n.attempt, n.progress, n.error::jsonb ->> 'message', n.run_id
        FROM new_rows n JOIN old_rows o ON o.seq = n.seq WHERE n.status <> o.status ORDER BY n.seq;
        RETURN NULL;
    END $$
    """,
    4: """
    ALTER TABLE tasks ADD COLUMN cache_key text;
    CREATE INDEX tasks_cache ON tasks (cache_key, finished_at) WHERE cache_key IS NOT NULL;
    CREATE TABLE task_output (
        task_id text NOT NULL,
        seq bigint NOT NULL,
        stream text NOT NULL,
        data bytea NOT NULL,
        lines integer NOT NULL,
        PRIMARY KEY (task_id, seq)
    );
    CREATE TABLE output_seq (
        task_id text PRIMARY KEY,
        seq bigint NOT NULL
    )
    """,
    5: """
    CREATE TABLE callables (
        digest text PRIMARY KEY,
        body bytea NOT NULL
    )
    """,
}


async def migrate(conn: AsyncConnection[Any], schema: str, where: str) -> None:
    """Create or upgrade ``schema`` to ``SCHEMA_VERSION`` in one transaction, under the migration lock.

    Args:
        conn: an autocommit connection of its own (the transaction is opened here).
        schema: the store's schema name (checked by the caller: a plain identifier).
        where: the store's redacted URL, named in the error.

    Raises:
        StorageError: the schema's version is newer than this code understands.

    """
    name = sql.Identifier(schema)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_MIGRATE_LOCK + schema,))
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
        await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(name))
        await conn.execute("CREATE TABLE IF NOT EXISTS omniq_schema (version integer NOT NULL)")
        row = await (await conn.execute("SELECT max(version) FROM omniq_schema")).fetchone()
        current = (row[0] if row else None) or 0
        if current > SCHEMA_VERSION:
            raise StorageError(
                f"{where} has schema version {current}, newer than this omniq_nb understands "
                f"({SCHEMA_VERSION}); upgrade omniq_nb"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            await conn.execute(_MIGRATIONS[version].encode())
            await conn.execute("INSERT INTO omniq_schema (version) VALUES (%s)", (version,))


async def schema_exists(conn: AsyncConnection[Any], schema: str) -> bool:
    """Return whether ``schema`` holds an omniq store (its version table), without creating anything."""
    row = await (await conn.execute("SELECT to_regclass(%s)", (f'"{schema}".omniq_schema',))).fetchone()
    return row is not None and row[0] is not None
