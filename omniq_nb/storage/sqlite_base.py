"""The connection every role of the SQLite store shares: open, close, clone, transactions, the clock.

One connection per store in autocommit mode: single statements are atomic by themselves
(a write statement takes the write lock when it starts, so ``busy_timeout`` applies);
multi-statement writes use ``BEGIN IMMEDIATE`` under a lock so no other statement of this
process slips inside them. The role mixins (``sqlite_queue``, ``sqlite_results``,
``sqlite_registry``, ``sqlite_maintenance``) build on this class.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any, Self
from urllib.parse import quote

import aiosqlite

from omniq_nb.errors import StorageError, StoreLost
from omniq_nb.jobs import retrieve
from omniq_nb.opening import OpensAndCloses
from omniq_nb.storage.sqlite_file import prepare_file, sqlite_path, storage_error
from omniq_nb.storage.sqlite_inline import InlineConnection
from omniq_nb.storage.sqlite_schema import BUSY_TIMEOUT_MS, JOURNAL_SIZE_LIMIT, event_triggers, migrate
from omniq_nb.storage.wakeup import WakeChannel
from omniq_nb.urls import redact_url

__all__ = ["SQLiteConnection"]

_UTC = timezone.utc
_GIVE_BACK_WAIT_MS = 100  # how long a closing store waits for the write lock to free its writer id


class SQLiteConnection(OpensAndCloses):
    """One aiosqlite connection to a store file, with the transaction discipline every role uses.

    Args:
        url: ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite://`` (in memory).
        events: record a ``TaskEvent`` per transition.
        synchronous: ``NORMAL`` (nothing committed is lost when a process dies) or ``FULL``
            (also survives power loss).

    """

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
        self._inline: InlineConnection | None = None  # lone quick statements, run on the loop's thread
        self._writer: int | None = None  # this object's id in event_writers: its connections' events carry it
        self._transaction = asyncio.Lock()

    async def open(self) -> None:
        """Create the file (owner-only) and its folder if needed, connect, migrate the schema.

        Raises:
            StorageError: the path cannot be created or written, or lies on a network filesystem.

        """
        if self._conn is not None:
            return
        if self._file is not None:
            prepare_file(self._file)
        try:
            self._conn = await aiosqlite.connect(self._file or ":memory:", isolation_level=None)
            if self._file is not None:
                opened = os.stat(self._file)
                self._identity = (opened.st_dev, opened.st_ino)
            await self._configure()
            if self._file is not None and self._synchronous.upper() != "FULL":
                self._inline = InlineConnection(self._file, synchronous=self._synchronous, triggers=self._triggers)
        except sqlite3.Error as exc:
            await self.close()
            raise StorageError(f"cannot open the SQLite store at {self._file or ':memory:'}: {exc}") from exc
        except BaseException:
            await self.close()
            raise

    def clone(self) -> Self:
        """Return a new, unopened store on the same file (its own connection), whatever the cwd is now."""
        url = f"sqlite:///{quote(self._file)}" if self._file is not None else self._url
        return type(self)(url, events=self._events, synchronous=self._synchronous)

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
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._writer is not None:
                await _give_back(conn, self._writer)
                self._writer = None
            await conn.close()

    async def now(self) -> datetime:
        """Return the store's clock: this machine's, as every process on the file shares it."""
        return datetime.now(_UTC)

    async def _configure(self) -> None:
        conn = self._db
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if self.path is not None:
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        await conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        async with self._immediate():
            await migrate(self._run, self.path)
            drawn = await self._run("INSERT INTO event_writers DEFAULT VALUES RETURNING id", ()) if self._events else []
        self._writer = drawn[0][0] if drawn else None  # once committed: only then is the id this object's
        if self._triggers is not None:
            await conn.executescript(self._triggers)

    @property
    def _triggers(self) -> str | None:
        """The event triggers of this object's connections (``None``: it records no events)."""
        return None if self._writer is None else event_triggers(self._writer)

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
                rollback = asyncio.ensure_future(self._run("ROLLBACK", ()))
                rollback.add_done_callback(retrieve)  # a second cancel may leave it unawaited
                with contextlib.suppress(StorageError):
                    await asyncio.shield(rollback)
                raise

    @property
    def _db(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StorageError(f"the SQLite store {self.url} is not open (use 'async with' or await open())")
        return self._conn

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[Any]:
        """Run one statement (atomic by itself) under this store's lock; return its rows.

        A quick one runs inline, on the loop's thread (see ``sqlite_inline``); the rest, and any
        that cannot run there at once, on aiosqlite's thread.
        """
        async with self._transaction:
            self._check_file()
            if self._inline is not None and (rows := self._inline.fetch(sql, params)) is not None:
                return rows
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

    async def _run(self, sql: str, params: Sequence[Any]) -> builtins.list[Any]:
        """Run one statement on the connection as it is (the caller holds the lock); return its rows."""
        try:
            return list(await self._db.execute_fetchall(sql, params))
        except sqlite3.IntegrityError:
            raise  # a duplicate id: the caller says which
        except sqlite3.Error as exc:
            raise storage_error(self._file, exc) from exc

    async def _run_each(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Run ``statements`` in order (the caller holds the lock), each made while the one before runs.

        SQLite works on aiosqlite's thread without the GIL, so making the next statement on the
        loop (pickling a batch's next rows) overlaps it: a large ``enqueue_many`` holds the write
        lock for less time. A statement that cannot be made raises; the one before still runs
        first, then the caller's ``ROLLBACK`` (aiosqlite's thread runs them in order).
        """
        running: asyncio.Future[builtins.list[Any]] | None = None
        try:
            for statement in statements:
                if running is not None:
                    await running
                running = asyncio.ensure_future(self._run(*statement))
                await asyncio.sleep(0)  # its first step hands it to aiosqlite's thread
            if running is not None:
                await running
        finally:
            if running is not None and not running.done():  # the caller gives up: its outcome is nobody's
                running.add_done_callback(retrieve)


async def _give_back(conn: aiosqlite.Connection, writer: int) -> None:
    """Free a closing store object's writer id for a later one, unless the store is busy or gone.

    An id kept (a busy or vanished file, a killed process) only costs a row: ids are never
    shared by two store objects open at once.
    """
    with contextlib.suppress(sqlite3.Error, ValueError):
        await conn.execute(f"PRAGMA busy_timeout = {_GIVE_BACK_WAIT_MS}")
        await conn.execute("DELETE FROM event_writers WHERE id = ?", (writer,))
