"""The PostgreSQL store's ``EventStore`` and ``MaintenanceStore`` roles: events, purge, health.

Event ``seq`` comes from a ``bigserial``. Two transactions could draw seqs and commit in the
other order, so a reader that saw seq 8 could later miss seq 7; the event triggers prevent
it by taking the schema's event lock before drawing seqs and holding it to commit (see
``postgres_schema``). Every event a reader can see therefore has all smaller seqs either
visible too or rolled back for good, and ``events(since=cursor)`` is a plain range scan.
A purge deletes events but never resets the sequence, so a seq is never handed out twice.

The maintenance election (``lead_maintenance``) is a leader row, not a session advisory
lock. ``pg_try_advisory_lock`` belongs to a server session: through PgBouncer in transaction
mode that session is lent to other clients between transactions, so the lock would be held
by whoever gets the connection next, and it is lost silently when the connection drops. The
row ``leaders('maintenance') = (holder, until)`` lives in the data instead, on the server's
clock: one statement inserts it, renews it for its holder, or takes it over once ``until``
has passed (``INSERT … ON CONFLICT DO UPDATE … WHERE``, atomic under any isolation level).
The statement first asks ``pg_try_advisory_xact_lock`` (released at its commit, so safe
through PgBouncer): a caller that finds the lock taken does not queue on the row but just
reads whether it still holds the turn, so a hundred pools asking every second never wait
on each other; and a caller that sees a live holder other than itself does not touch the
row at all (no row lock, no write). A holder that dies stops renewing; another takes over
after its term.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import psycopg

from omniq_nb.errors import StorageError
from omniq_nb.models import StoreHealth, TaskEvent, TaskStatus
from omniq_nb.storage.health import STALE_IDS_SHOWN, health_report
from omniq_nb.storage.postgres_base import PostgresConnection
from omniq_nb.storage.postgres_schema import CLOCK_SQL, NOW_SQL, SCHEMA_VERSION, schema_exists
from omniq_nb.storage.postgres_statements import status_match
from omniq_nb.storage.rows import row_event
from omniq_nb.storage.sql_text import events_statement, purge_filter

__all__ = ["PostgresEvents", "PostgresMaintenance"]


_TASK_TABLES = ("events", "task_deps", "task_output", "output_seq")
"""The tables whose rows belong to a task (by ``task_id``): they go with it."""

_Run = Callable[[str, Sequence[Any]], Awaitable[builtins.list[Any]]]

_LEAD = f"""
    WITH lock AS MATERIALIZED (SELECT pg_try_advisory_xact_lock(hashtext('omniq.lead.' || %(schema)s)) AS got),
    held AS MATERIALIZED (SELECT holder, until FROM leaders WHERE role = 'maintenance'),
    taken AS (
        INSERT INTO leaders (role, holder, until)
        SELECT 'maintenance', %(runner)s::text, {CLOCK_SQL} + %(term)s::float8 FROM lock
        WHERE got AND NOT EXISTS (SELECT 1 FROM held WHERE holder <> %(runner)s::text AND until > {CLOCK_SQL})
        ON CONFLICT (role) DO UPDATE SET holder = excluded.holder, until = excluded.until
        WHERE leaders.holder = excluded.holder OR leaders.until <= {CLOCK_SQL}
        RETURNING holder)
    SELECT EXISTS (SELECT 1 FROM taken) OR EXISTS (
        SELECT 1 FROM held, lock WHERE NOT lock.got AND held.holder = %(runner)s::text AND held.until > {CLOCK_SQL})"""


class PostgresEvents(PostgresConnection):
    """The events table, read by ``seq`` (rows are written by the schema's triggers)."""

    async def events(
        self, *, task_id: str | None = None, since: int = 0, limit: int = 1000
    ) -> builtins.list[TaskEvent]:
        """Return events with ``seq > since``, oldest first."""
        return [
            row_event(row)
            for row in await self._fetch_on_lane(
                "events", *events_statement("%s", task_id=task_id, since=since, limit=limit)
            )
        ]

    async def last_event_seq(self) -> int:
        """Return the newest recorded event's ``seq`` (0 when there is none)."""
        rows = await self._fetch("SELECT coalesce(max(seq), 0) FROM events")
        return int(rows[0][0])


class PostgresMaintenance(PostgresConnection):
    """Purge and the health check (PostgreSQL keeps its own log bounded: ``checkpoint`` does nothing)."""

    async def purge(
        self, *, finished_before: datetime | None = None, statuses: Sequence[TaskStatus] = (), everything: bool = False
    ) -> int:
        """Delete finished tasks past their result TTL (or all, kept callables too), with events, index rows, output.

        All in one transaction.
        """
        where, params = (
            ("", [])
            if everything
            else purge_filter(
                clock=(NOW_SQL, []),
                finished_before=finished_before,
                statuses=statuses,
                mark="%s",
                status_match=status_match,
            )
        )
        async with self._transaction() as conn:
            if everything:  # events of tasks committed meanwhile stay with their tasks
                # callables first: a batch that kept one waits for this delete, or this delete for its
                # commit (its upsert locks the row), so its rows are gone too or keep their callable
                await self._run(conn, "DELETE FROM callables")
                gone = await self._run(conn, "WITH gone AS (DELETE FROM tasks RETURNING 1) SELECT count(*) FROM gone")
                for table in _TASK_TABLES:
                    await self._run(
                        conn, f"DELETE FROM {table} WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE id = task_id)"
                    )
                return int(gone[0][0])
            rows = await self._run(conn, f"DELETE FROM tasks {where} RETURNING id", params)
            ids = [row[0] for row in rows]
            if ids:
                for table in _TASK_TABLES:
                    await self._run(conn, f"DELETE FROM {table} WHERE task_id = ANY(%s::text[])", (ids,))
        return len(ids)

    async def lead_maintenance(self, runner: str, *, term: float) -> bool:
        """Take or renew the maintenance turn for ``term`` seconds, unless another runner holds it (one statement).

        See the module's docstring for why a leader row and not a session advisory lock.
        """
        rows = await self._fetch(_LEAD, {"schema": self.schema, "runner": runner, "term": term})
        return bool(rows[0][0])

    async def checkpoint(self) -> None:
        """Do nothing: the server recycles its write-ahead log by itself."""

    async def check(self, *, stale_after: float) -> StoreHealth:
        """Read the schema version, tasks per status and lapsed leases (no integrity check or WAL applies).

        An open store is checked through its pool. An unopened one through a connection of
        its own, closed at the end; nothing is created or migrated.

        Raises:
            StorageError: the server cannot be reached, or there is no store in the schema.

        """
        if self._pool is not None:
            return await self._health(self._fetch, stale_after)
        async with self._errors(), await self._connect() as conn:
            if not await schema_exists(conn, self.schema):
                raise StorageError(f"there is no omniq store in schema {self.schema!r} at {self.url}")

            async def run(sql: str, params: Sequence[Any] = ()) -> builtins.list[Any]:
                return await self._run(conn, sql, params)

            return await self._health(run, stale_after)

    async def _health(self, run: _Run, stale_after: float) -> StoreHealth:
        """Measure the store with ``run`` (runs one statement on some connection, returns its rows)."""
        expired, stale, ids, problems = 0, 0, [], []
        counts: dict[TaskStatus, int] | None = None
        [(version,)] = await run("SELECT max(version) FROM omniq_schema", ())
        if version is not None and version > SCHEMA_VERSION:
            problems.append(
                f"schema version {version} is newer than this omniq_nb understands ({SCHEMA_VERSION}); upgrade omniq_nb"
            )
        else:
            try:
                rows = await run("SELECT status, count(*) FROM tasks GROUP BY status", ())
                counts = {TaskStatus(status): n for status, n in rows}
                [(expired, stale)] = await run(
                    f"""SELECT count(*), count(*) FILTER (WHERE lease_until <= {NOW_SQL} - %s) FROM tasks
                    WHERE status = 'running' AND lease_until <= {NOW_SQL}""",
                    (stale_after,),
                )
                rows = await run(
                    f"""SELECT id FROM tasks WHERE status = 'running' AND lease_until <= {NOW_SQL} - %s
                    ORDER BY lease_until LIMIT %s""",
                    (stale_after, STALE_IDS_SHOWN),
                )
                ids = [row[0] for row in rows]
            except (psycopg.Error, StorageError, ValueError) as exc:  # ValueError: an unknown status
                counts, expired, stale, ids = None, 0, 0, []
                problems.append(f"cannot read the store's tables: {exc}")
        return health_report(
            self.url,
            counts=counts,
            expired_leases=expired,
            stale_ids=ids,
            stale_after=stale_after,
            stale_leases=stale,
            schema_version=version,
            problems=problems,
        )
