"""The SQLite store's ``EventStore`` and ``MaintenanceStore`` roles: events, purge, WAL checkpoints, health.

Event ``seq`` is a plain rowid (AUTOINCREMENT would double the cost of a one-task commit);
after a purge a marker row keeps the newest seq, so a ``seq`` is never handed out twice and
cursors stay valid.
"""

from __future__ import annotations

import builtins
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiosqlite

from omniq_nb.errors import StorageError
from omniq_nb.models import StoreHealth, TaskEvent, TaskStatus
from omniq_nb.storage.health import STALE_IDS_SHOWN, health_report
from omniq_nb.storage.rows import EVENT_COLUMNS, chunks, row_event
from omniq_nb.storage.sql_text import events_statement, purge_filter
from omniq_nb.storage.sqlite_base import SQLiteConnection
from omniq_nb.storage.sqlite_file import existing_store
from omniq_nb.storage.sqlite_schema import BUSY_TIMEOUT_MS, SCHEMA_VERSION
from omniq_nb.storage.sqlite_statements import IDS_PER_STATEMENT, KEEP_NEWEST_SEQ, status_match

__all__ = ["SQLiteEvents", "SQLiteMaintenance"]

logger = logging.getLogger("omniq_nb.storage.sqlite")  # the store's one logger name, whichever module logs

_WAL_RESET_BYTES = 8 * 1024 * 1024  # 2x what automatic checkpoints keep it at when no reader starves them
_INTEGRITY_LINES = 10  # PRAGMA integrity_check stops after this many errors

_Run = Callable[[str, Sequence[Any]], Awaitable[Iterable[Any]]]


class SQLiteEvents(SQLiteConnection):
    """The events table, read by ``seq`` (rows are written by the schema's triggers)."""

    async def events(
        self, *, task_id: str | None = None, since: int = 0, limit: int = 1000
    ) -> builtins.list[TaskEvent]:
        """Return events with ``seq > since``, oldest first."""
        return [
            row_event(row)
            for row in await self._fetch(
                *events_statement("?", task_id=task_id, since=since, limit=limit, of_tasks_only=" AND task_id != ''")
            )
        ]

    async def others_events(self, *, since: int, limit: int) -> tuple[builtins.list[TaskEvent], int]:
        """Return the events after ``since`` but those this object's writes stamped as its own, and the next cursor.

        See ``OthersEvents``. The newest ``seq`` is read first: an event committed after it
        is read the next time, and none can come before it (a ``seq`` is never handed out twice).
        An event followed by one of this object's own (``events_task`` finds them) is left out
        too: the row that later write handed on already holds its change.
        """
        newest = await self.last_event_seq()
        if newest <= since:
            return [], since
        writer = self._writer or 0  # ids start at 1: without one, every event is the others'
        rows = await self._fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? AND seq <= ? AND task_id != '' AND writer IS NOT ? "
            "AND NOT EXISTS (SELECT 1 FROM events AS own WHERE own.task_id = events.task_id "
            "AND own.seq > events.seq AND own.writer = ?) ORDER BY seq LIMIT ?",
            (since, newest, writer, writer, limit),
        )
        return [row_event(row) for row in rows], rows[-1][0] if len(rows) == limit else newest

    async def last_event_seq(self) -> int:
        """Return the newest event's ``seq`` (0 when there is none)."""
        rows = await self._fetch("SELECT coalesce(max(seq), 0) FROM events")
        return int(rows[0][0])


class SQLiteMaintenance(SQLiteConnection):
    """Purge, WAL checkpoints and the health check."""

    async def purge(
        self, *, finished_before: datetime | None = None, statuses: Sequence[TaskStatus] = (), everything: bool = False
    ) -> int:
        """Delete finished tasks past their result TTL (or all, kept callables too), with events, index rows, output."""
        where, params = (
            ("", [])
            if everything
            else purge_filter(
                clock=("?", [time.time()]),
                finished_before=finished_before,
                statuses=statuses,
                mark="?",
                status_match=status_match,
            )
        )
        async with self._immediate():
            newest = await self._run("SELECT max(seq) FROM events", ())
            gone = await self._run(f"DELETE FROM tasks {where} RETURNING id", params)
            ids = [row[0] for row in gone]
            for chunk in chunks(ids, IDS_PER_STATEMENT):
                marks = ", ".join("?" * len(chunk))
                await self._run(f"DELETE FROM events WHERE task_id IN ({marks})", chunk)
                await self._run(f"DELETE FROM task_deps WHERE task_id IN ({marks})", chunk)
                await self._run(f"DELETE FROM task_output WHERE task_id IN ({marks})", chunk)
                await self._run(f"DELETE FROM task_output_seq WHERE task_id IN ({marks})", chunk)
            await self._run("DELETE FROM events WHERE task_id = '' AND seq < ?", (newest[0][0],))
            await self._run(KEEP_NEWEST_SEQ, (newest[0][0],))
            if everything:
                await self._run("DELETE FROM callables", ())
        if self.path is not None:
            await self._fetch("PRAGMA wal_checkpoint(PASSIVE)")
        return len(ids)

    async def lead_maintenance(self, runner: str, *, term: float) -> bool:
        """Return True: every caller leads.

        An SQLite file is shared by the processes of one machine only: its pools are few, a
        scan is an indexed read of a local file, and a rescue is fenced on its lease, so two
        pools rescuing at once cost nothing; an election would only add writes to the one
        write lock.
        """
        return True

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
        where = existing_store(self._file)
        try:
            conn = await aiosqlite.connect(f"file:{quote(self._file)}?mode=rw", uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the SQLite store at {where}: {exc}") from exc
        try:
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            return await self._health(conn.execute_fetchall, stale_after)
        finally:
            await conn.close()

    async def _health(self, run: _Run, stale_after: float) -> StoreHealth:
        """Measure the store with ``run`` (runs one statement on some connection, returns its rows)."""
        integrity = await _integrity(run)
        wal = self._wal_bytes()
        now = time.time()
        version, expired, stale, ids, problems = None, 0, 0, [], []
        counts: dict[TaskStatus, int] | None = None
        try:
            [(version,)] = await run("SELECT max(version) FROM omniq_schema", ())
            if version is not None and version > SCHEMA_VERSION:
                problems.append(
                    f"schema version {version} is newer than this omniq_nb understands ({SCHEMA_VERSION}); "
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


async def _integrity(run: _Run) -> str:
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
