"""The connection pool every role of the PostgreSQL store shares: open, close, clone, the clock, errors.

Connections come from a ``psycopg_pool.AsyncConnectionPool`` in autocommit mode: single
statements are atomic by themselves, and multi-statement writes use ``_transaction()``.
The busiest statements (claims, outcomes, dependents, event reads) run on a connection kept
for each of them (``_fetch_on_lane``), which skips the pool's liveness round trip.
No session state is relied on: ``_run`` names the store's tables with their schema
(``postgres_url.qualify``), so the pool may sit behind PgBouncer in transaction mode
(``?pgbouncer=1``: no prepared statements either). Times are the server's (``now()`` and
``clock_timestamp()``), so workers on several machines share one clock. Wake-up hints are
``NOTIFY`` on a channel per schema, sent in the transaction that adds ready tasks (so once
per committed batch) and received by ``LISTEN`` on a direct connection of its own (the
main URL, or ``?listen_url=`` behind a pooler; none: idle workers poll). The role mixins
(``postgres_queue``, ``postgres_results``, ``postgres_registry``, ``postgres_maintenance``)
build on this class.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from typing import Any, Self
from urllib.parse import quote, urlsplit

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from omniq_nb.errors import StorageError
from omniq_nb.opening import OpensAndCloses
from omniq_nb.storage.postgres_schema import migrate
from omniq_nb.storage.postgres_url import connect_options, parse_url, qualify
from omniq_nb.urls import redact_url

__all__ = ["PostgresConnection"]

_UTC = timezone.utc
_CONNECT_SECONDS = 10
_POOL_SIZE = 8
_POOL_WAIT = 10.0  # seconds a statement waits for a pooled connection (longer: the server is gone)
_POOL_NAME = "omniq-nb/"  # + schema: names this store's pools in psycopg_pool's log records
_LANE_LIFETIME = 3600.0  # seconds a lane keeps one connection (psycopg_pool's max_lifetime for the pool's)


class _QuietReconnects(logging.Filter):
    """Drop psycopg_pool's warning for each failed reconnect of this store's pools (other pools keep theirs).

    While the server is away the pool retries every second or so, a warning each time; the
    store's callers get a one-line ``StorageError`` instead, and a worker pool logs one line
    when it loses the store and one when it is back (``worker/link.py``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (record.msg == "error connecting in %r: %s" and args and str(args[0]).startswith(_POOL_NAME))


logging.getLogger("psycopg.pool").addFilter(_QuietReconnects())


class _Lane:
    """A connection kept for one busy path (claims, outcomes, dependents, event reads), one statement at a time."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.opened = 0.0  # time.monotonic() when ``conn`` connected
        self.closed = asyncio.Event()  # set when the store closed: the statement under way closes ``conn`` as it ends

    async def drop(self) -> None:
        """Close the lane's connection (no error if the server already dropped it)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()


class PostgresConnection(OpensAndCloses):
    """A pool of connections to one schema of a PostgreSQL database, and the listener for wake-ups.

    Args:
        url: ``postgresql://user:password@host:port/database?schema=NAME`` (``postgres://`` too).
        events: record a ``TaskEvent`` per transition (off: this store's sessions record none).

    """

    multi_host = True

    def __init__(self, url: str, *, events: bool = True) -> None:
        target = parse_url(url)
        secrets = [p for p in (urlsplit(url).password, _password(target.listen_dsn)) if p]
        self.url = redact_url(url)
        for secret in secrets:  # a listen_url's password sits inside the query
            self.url = self.url.replace(quote(secret, safe=""), "***").replace(secret, "***")
        self._url = url
        self._dsn, self.schema = target.dsn, target.schema
        self._listen_dsn = target.listen_dsn
        self._secrets = secrets
        self._events = events
        self._options = connect_options(target, events=events)
        self._events_local = target.pgbouncer and not events  # no session setting through a pooler
        self.supports_notify = target.listen_dsn is not None
        """Whether idle workers get ``LISTEN`` hints (not behind a pooler without ``listen_url``)."""
        self._channel = f"omniq_{self.schema}"
        self._pool: AsyncConnectionPool | None = None
        self._listener: psycopg.AsyncConnection[Any] | None = None
        self._lanes: dict[str, _Lane] = {}

    async def open(self) -> None:
        """Connect, create or migrate the schema (under an advisory lock), then open the pool.

        Raises:
            StorageError: the server cannot be reached or refuses the login, or the schema is newer.

        """
        if self._pool is not None:
            return
        async with self._errors(), await self._connect() as conn:
            await migrate(conn, self.schema, self.url)
        pool: AsyncConnectionPool = AsyncConnectionPool(
            self._dsn,
            min_size=1,
            max_size=_POOL_SIZE,
            kwargs=self._options,
            check=AsyncConnectionPool.check_connection,  # a connection the server dropped is replaced, not used
            open=False,
            timeout=_POOL_WAIT,
            name=_POOL_NAME + self.schema,
        )
        try:
            async with self._errors():
                await pool.open(wait=True, timeout=_CONNECT_SECONDS)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    def clone(self) -> Self:
        """Return a new, unopened store on the same schema (its own pool)."""
        return type(self)(self._url, events=self._events)

    async def close(self) -> None:
        """Close the listener, the lanes' connections (a busy one once its statement ends) and the pool."""
        lanes, self._lanes = builtins.list(self._lanes.values()), {}
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(psycopg.Error):
                await listener.close()
        for lane in lanes:
            lane.closed.set()
            if not lane.lock.locked():
                await lane.drop()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def now(self) -> datetime:
        """Return the server's clock (every worker, on any machine, measures leases on it)."""
        rows = await self._fetch("SELECT clock_timestamp()")
        stamp: datetime = rows[0][0]
        return stamp.astimezone(_UTC)

    async def wait_for_tasks(self, timeout: float) -> None:
        """Return at the next ``NOTIFY`` on this schema's channel, or after ``timeout``.

        The listening connection is this store's own (autocommit, outside the pool, direct to
        the server) and is opened at the first wait; if it breaks, this wait just sleeps and
        the next one reconnects and listens again. Without a direct URL (behind a pooler with
        no ``listen_url``) this just sleeps. A hint only wakes: polling stays the truth.
        """
        if self._listen_dsn is None:
            await asyncio.sleep(timeout)
            return
        try:
            listener = await self._listen(self._listen_dsn)
            async for _ in listener.notifies(timeout=timeout, stop_after=1):
                break
        except psycopg.Error:
            broken, self._listener = self._listener, None
            if broken is not None:
                with contextlib.suppress(psycopg.Error):
                    await broken.close()
            await asyncio.sleep(timeout)

    async def _listen(self, dsn: str) -> psycopg.AsyncConnection[Any]:
        if self._listener is None or self._listener.closed:
            self._listener = await self._connect(dsn)
            await self._listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        return self._listener

    async def _connect(self, dsn: str | None = None) -> psycopg.AsyncConnection[Any]:
        """Open a connection of its own (to the main URL unless told), with the pool's options."""
        target = dsn or self._dsn
        return await psycopg.AsyncConnection.connect(target, connect_timeout=_CONNECT_SECONDS, **self._options)

    @property
    def _connections(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise self._not_open()
        return self._pool

    def _not_open(self) -> StorageError:
        return StorageError(f"the PostgreSQL store {self.url} is not open (use 'async with' or await open())")

    async def _fetch(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> builtins.list[Any]:
        """Run one statement (atomic by itself) on a pooled connection; return its rows."""
        if self._events_local:  # the switch lasts one transaction: wrap the statement in one
            async with self._transaction() as conn:
                return await self._run(conn, query, params)
        async with self._errors(), self._connections.connection() as conn:
            return await self._run(conn, query, params)

    async def _fetch_on_lane(
        self, lane: str, query: str, params: Sequence[Any] | dict[str, Any] = ()
    ) -> builtins.list[Any]:
        """Run one statement (atomic by itself) on the connection this store keeps for ``lane``; return its rows.

        A worker's claim and outcome loops, and the event hub's reader, each run a statement
        every few milliseconds. The pool checks a connection with a round trip each time it
        lends one (so that one the server dropped is never used), about a tenth of a busy
        worker's time; a lane keeps one connection and uses it unchecked. A statement that
        finds it broken (the server dropped it while it sat idle) runs once more on a new
        connection: a lane's statements only read, or are fenced (a claim by its lease, an
        outcome by the lease token), and their callers repeat a failed one anyway, so running
        it again only spares them a backoff. A connection left in doubt (a statement cancelled
        mid-way, a broken one) is closed, never used again.
        """
        held = self._lanes.get(lane) or self._lanes.setdefault(lane, _Lane())
        async with held.lock:
            try:
                reused = held.conn if held.conn is not None and not held.conn.closed else None
                try:
                    async with self._errors():
                        return await self._run_kept(held, query, params)
                except StorageError:
                    if reused is None or not reused.broken:
                        raise
                async with self._errors():
                    return await self._run_kept(held, query, params)
            finally:
                if held.closed.is_set():  # the store closed meanwhile
                    await held.drop()

    async def _run_kept(self, held: _Lane, query: str, params: Sequence[Any] | dict[str, Any]) -> builtins.list[Any]:
        """Run one statement on ``held``'s connection (opened first if need be); close it if left in doubt."""
        if held.conn is not None and time.monotonic() - held.opened > _LANE_LIFETIME:
            await held.drop()  # renewed now and then, as the pool's are
        conn = held.conn
        if conn is None or conn.closed:
            if held.closed.is_set() or self._pool is None:  # closed: no lane opens a connection again
                raise self._not_open()
            held.conn, held.opened = await self._connect(), time.monotonic()
            if held.closed.is_set():  # the store closed while this one connected
                await held.drop()
                raise self._not_open()
            conn = held.conn
        try:
            if not self._events_local:
                return await self._run(conn, query, params)
            async with self._transaction_on(conn):
                return await self._run(conn, query, params)
        except BaseException:
            if conn.info.transaction_status is not TransactionStatus.IDLE:  # cancelled mid-way, or broken
                await held.drop()
            raise

    async def _run(
        self, conn: psycopg.AsyncConnection[Any], query: str, params: Sequence[Any] | dict[str, Any] = ()
    ) -> builtins.list[Any]:
        """Run one statement on ``conn`` (inside the caller's transaction, if any), its tables named with the schema.

        Returns its rows.

        Raises:
            ValueError: an insert met an existing task id (nothing was inserted), as every store raises.

        """
        try:
            cursor = await conn.execute(qualify(query, self.schema).encode(), params)
        except psycopg.errors.UniqueViolation as exc:  # only an insert of an existing task id can raise it
            detail = (exc.diag.message_detail or str(exc)).strip()
            raise ValueError(f"a task with one of these ids already exists; nothing was inserted ({detail})") from None
        return await cursor.fetchall() if cursor.description is not None else []

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """Yield a pooled connection inside one transaction: committed at the end, rolled back on error."""
        async with self._errors(), self._connections.connection() as conn, self._transaction_on(conn):
            yield conn

    @contextlib.asynccontextmanager
    async def _transaction_on(self, conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
        """Hold one transaction on ``conn`` (this store's events switched off in it, if need be)."""
        async with conn.transaction():
            if self._events_local:
                await conn.execute("SET LOCAL omniq.events = 'off'")
            yield

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        """Turn driver errors into one-line ``StorageError``s that never show the password.

        (``_run`` already turned a duplicate task id into a ``ValueError``.)
        """
        try:
            yield
        except (psycopg.Error, PoolTimeout) as exc:
            message = str(exc).strip().replace("\n", " ")
            for secret in self._secrets:
                message = message.replace(secret, "***")
            raise StorageError(f"the PostgreSQL store {self.url} failed: {message}") from None


def _password(dsn: str | None) -> str | None:
    return urlsplit(dsn).password if dsn else None
