"""The connection pool every role of the PostgreSQL store shares: open, close, clone, the clock, errors.

Connections come from a ``psycopg_pool.AsyncConnectionPool`` in autocommit mode, each with
``search_path`` set to the store's schema: single statements are atomic by themselves, and
multi-statement writes use ``_transaction()``. Times are the server's (``now()`` and
``clock_timestamp()``), so workers on several machines share one clock. Wake-up hints
are ``NOTIFY`` on a channel per schema, sent in the transaction that adds ready tasks
(so once per committed batch) and received by ``LISTEN`` on a connection of its own.
The role mixins (``postgres_queue``, ``postgres_results``, ``postgres_registry``,
``postgres_maintenance``) build on this class.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from omniq_nb.errors import StorageError
from omniq_nb.opening import OpensAndCloses
from omniq_nb.storage.postgres_schema import migrate
from omniq_nb.urls import redact_url

__all__ = ["PostgresConnection", "split_schema"]

_UTC = timezone.utc
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,56}")
_CONNECT_SECONDS = 10
_POOL_SIZE = 8


def split_schema(url: str) -> tuple[str, str]:
    """Return ``(url without the schema option, schema)`` of a ``postgresql://`` URL.

    Example:
        >>> split_schema("postgresql://me@db/q?schema=jobs&sslmode=require")
        ('postgresql://me@db/q?sslmode=require', 'jobs')
        >>> split_schema("postgres://db/q")[1]
        'omniq'

    Raises:
        StorageError: the schema is not a plain identifier (letters, digits, ``_``; at most 57).

    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    schema = schemas[-1] if schemas else "omniq"
    if not _SCHEMA_NAME.fullmatch(schema):
        raise StorageError(
            f"invalid schema {schema!r} in {redact_url(url)!r}: use letters, digits and '_' (at most 57 characters)"
        )
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


class PostgresConnection(OpensAndCloses):
    """A pool of connections to one schema of a PostgreSQL database, and the listener for wake-ups.

    Args:
        url: ``postgresql://user:password@host:port/database?schema=NAME`` (``postgres://`` too).
        events: record a ``TaskEvent`` per transition (off: this store's sessions record none).

    """

    supports_notify = True
    multi_host = True

    def __init__(self, url: str, *, events: bool = True) -> None:
        self.url = redact_url(url)
        self._url = url
        self._dsn, self.schema = split_schema(url)
        self._password = urlsplit(url).password
        self._events = events
        self._channel = f"omniq_{self.schema}"
        self._pool: AsyncConnectionPool | None = None
        self._listener: psycopg.AsyncConnection[Any] | None = None

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
            kwargs={"autocommit": True},
            configure=self._configure,
            check=AsyncConnectionPool.check_connection,  # a connection the server dropped is replaced, not used
            open=False,
            timeout=_CONNECT_SECONDS * 3,
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
        """Close the listener and the pool."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(psycopg.Error):
                await listener.close()
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

        The listening connection is this store's own (autocommit, outside the pool) and is
        opened at the first wait; if it breaks, this wait just sleeps and the next one
        reconnects and listens again. A hint only wakes: polling stays the truth.
        """
        try:
            listener = await self._listen()
            async for _ in listener.notifies(timeout=timeout, stop_after=1):
                break
        except psycopg.Error:
            broken, self._listener = self._listener, None
            if broken is not None:
                with contextlib.suppress(psycopg.Error):
                    await broken.close()
            await asyncio.sleep(timeout)

    async def _listen(self) -> psycopg.AsyncConnection[Any]:
        if self._listener is None or self._listener.closed:
            self._listener = await self._connect()
            await self._listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        return self._listener

    async def _notify(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Send the wake-up hint on ``conn``: inside a transaction, it is delivered when that commits."""
        await conn.execute("SELECT pg_notify(%s, '')", (self._channel,))

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True, connect_timeout=_CONNECT_SECONDS)
        await self._configure(conn)
        return conn

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Point a new connection at the store's schema; turn its event triggers off if asked."""
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        if not self._events:
            await conn.execute("SET omniq.events = 'off'")

    @property
    def _connections(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise StorageError(f"the PostgreSQL store {self.url} is not open (use 'async with' or await open())")
        return self._pool

    async def _fetch(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> builtins.list[Any]:
        """Run one statement (atomic by itself) on a pooled connection; return its rows."""
        async with self._errors(), self._connections.connection() as conn:
            return await self._run(conn, query, params)

    @staticmethod
    async def _run(
        conn: psycopg.AsyncConnection[Any], query: str, params: Sequence[Any] | dict[str, Any] = ()
    ) -> builtins.list[Any]:
        """Run one statement on ``conn`` as it is (inside the caller's transaction); return its rows."""
        cursor = await conn.execute(query.encode(), params)
        return await cursor.fetchall() if cursor.description is not None else []

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """Yield a pooled connection inside one transaction: committed at the end, rolled back on error."""
        async with self._errors(), self._connections.connection() as conn, conn.transaction():
            yield conn

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        """Turn driver errors into one-line ``StorageError``s that never show the password.

        A unique violation passes through: the insert that caused it says which ids.
        """
        try:
            yield
        except psycopg.errors.UniqueViolation:
            raise
        except (psycopg.Error, PoolTimeout) as exc:
            message = str(exc).strip().replace("\n", " ")
            if self._password:
                message = message.replace(self._password, "***")
            raise StorageError(f"the PostgreSQL store {self.url} failed: {message}") from None
