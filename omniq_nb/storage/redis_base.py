"""The connection every role of the Redis store shares: URL, client, scripts, clock, errors, wake-ups.

One ``redis.asyncio.Redis`` client (its own connection pool) per store object, named
``omniq-PREFIX-PID-RANDOM`` (``CLIENT LIST`` shows whose connections are whose). A command
that meets a dropped connection (a server restart, ``CLIENT KILL``) reconnects and is sent
again, up to three times: a dropped connection almost always fails before the server ran
the command; in the rare case that only the reply was lost, a claim's tasks are rescued
after their lease and an outcome sent again is refused by its fence. Every transition is
one Lua script (``redis_lua``, ``redis_lua_admin``, ``redis_lua_outcomes``, ``redis_lua_output``)
registered with ``register_script`` and run by ``EVALSHA`` (loaded again if the server forgot
it), so each is atomic and reads the server's clock (``TIME``), never this machine's. Keys all
start with the prefix (``?prefix=NAME``, default ``omniq``), so several stores share one
server; the store is not for Redis Cluster (scripts touch keys they compute).

Wake-up hints: scripts that make tasks ready ``PUBLISH`` on ``PREFIX:wake`` (once per
committed batch); ``wait_for_tasks`` listens on a subscribed connection of its own. When that
connection is lost, the wait returns early and the next one subscribes again; polling stays
the truth, so a lost hint costs latency, never a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any, Self
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from omniq_nb.errors import StorageError
from omniq_nb.opening import OpensAndCloses
from omniq_nb.storage import redis_lua, redis_lua_admin, redis_lua_outcomes, redis_lua_output
from omniq_nb.urls import redact_url, split_prefix_options

__all__ = ["STORE_VERSION", "RedisConnection", "split_options"]

STORE_VERSION = 2
"""The key layout version this code writes and understands (in ``PREFIX:meta``).

Layout 2 keeps batches' functions in ``PREFIX:fn`` and tasks that name them: opening a
layout-1 store marks it 2, so that an omniq_nb that knows only layout 1 refuses it (and
says to upgrade) instead of failing those tasks.
"""

_UTC = timezone.utc
_PREFIX = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_CONNECT_SECONDS = 10.0
_REPLY_SECONDS = 120.0  # no reply ever waited for longer (a lost reply fails the call instead of hanging it)
_EVENTS_MAX = 100_000
_RESUBSCRIBE_PAUSE = 0.05
_RETRIES = 3  # a command on a connection the server dropped (restart, CLIENT KILL) reconnects and is sent again
_SCRIPTS = {
    name: getattr(module, name)
    for module in (redis_lua, redis_lua_admin, redis_lua_outcomes, redis_lua_output)
    for name in module.__all__
    if name != "PRELUDE"
}


def split_options(url: str) -> tuple[str, str, int]:
    """Return ``(url without omniq's options, prefix, events cap)`` of a Redis store URL.

    Example:
        >>> split_options("redis://:pw@cache:6379/2?prefix=jobs&events_max=500")
        ('redis://:pw@cache:6379/2', 'jobs', 500)
        >>> split_options("unix:///run/redis.sock?db=1")
        ('unix:///run/redis.sock?db=1', 'omniq', 100000)

    Raises:
        StorageError: the prefix is not 1 to 64 letters, digits, ``_``, ``-`` or ``.``, or the
            cap is not a positive integer.

    """
    return split_prefix_options(
        url, prefix_pattern=_PREFIX, allowed="letters, digits, '_', '-' or '.'", events_max=_EVENTS_MAX
    )


class _NoZeroTimeoutRead:
    """A connection whose readiness check before reuse does not read with a zero timeout.

    redis-py (before 8) checks a pooled connection by reading under ``asyncio.timeout(0)``;
    that read can leak a ``CancelledError`` into the caller (seen under a tracer, e.g.
    coverage, in fresh processes: redis-py PR 4063 removes the read). Here a connection whose
    server closed it (restart, ``CLIENT KILL``) is still noticed and replaced, from the
    stream's end-of-file mark; any other failure shows at the command, which is sent again.
    """

    _reader: asyncio.StreamReader | None

    async def can_read_destructive(self) -> bool:
        """Return True when the server closed the connection (the pool then reconnects it)."""
        return self._reader is not None and self._reader.at_eof()


_CHECKED: dict[type, type] = {}


def _checked_without_reading(connection_class: type) -> type:
    """Return ``connection_class`` with ``_NoZeroTimeoutRead``'s readiness check (one subclass per class)."""
    if connection_class not in _CHECKED:
        name = f"Omniq{connection_class.__name__}"
        _CHECKED[connection_class] = type(name, (_NoZeroTimeoutRead, connection_class), {})
    return _CHECKED[connection_class]


class RedisConnection(OpensAndCloses):
    """A client of one Redis server, the store's scripts, and the subscriber for wake-ups.

    Args:
        url: ``redis://[:password@]host:port/db``, ``rediss://…`` (TLS) or ``unix:///path.sock``,
            each with ``?prefix=NAME`` (default ``omniq``) and ``events_max=N`` (the event
            stream's approximate cap, default 100,000).
        events: record a ``TaskEvent`` per transition (off: this store object records none).

    """

    supports_notify = True
    multi_host = True

    def __init__(self, url: str, *, events: bool = True) -> None:
        self.url = redact_url(url)
        self._url = url
        self._address, self.prefix, self._events_max = split_options(url)
        self._password = urlsplit(url).password
        self._events = events
        self.client_name = f"omniq-{self.prefix}-{os.getpid()}-{secrets.token_hex(4)}"
        """The name of this store's connections on the server (``CLIENT LIST``)."""
        self._head = [self.prefix, "1" if events else "0", str(self._events_max)]
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._pubsub: PubSub | None = None

    async def open(self) -> None:
        """Connect, register the scripts, and mark the prefix as a store (refusing a newer layout).

        Raises:
            StorageError: the server cannot be reached or refuses the login, or the layout is newer.

        """
        if self._client is not None:
            return
        client = self._connect()
        try:
            async with self._errors():
                await client.hsetnx(f"{self.prefix}:meta", "version", STORE_VERSION)
                version = int(await client.hget(f"{self.prefix}:meta", "version") or STORE_VERSION)
                if version < STORE_VERSION:  # an older layout this code extends (see STORE_VERSION)
                    await client.hset(f"{self.prefix}:meta", "version", STORE_VERSION)
        except TypeError as exc:  # redis-py takes the URL's other options as connection arguments
            await client.aclose()
            raise StorageError(
                f"the Redis store URL {self.url!r} has an option neither omniq_nb (prefix, events_max) nor "
                f"redis-py takes: {exc}"
            ) from None
        except BaseException:
            await client.aclose()
            raise
        if version > STORE_VERSION:
            await client.aclose()
            raise StorageError(
                f"{self.url} has layout version {version}, newer than this omniq_nb understands "
                f"({STORE_VERSION}); upgrade omniq_nb"
            )
        self._scripts = {name: client.register_script(source) for name, source in _SCRIPTS.items()}
        self._client = client

    def clone(self) -> Self:
        """Return a new, unopened store on the same server and prefix (its own connections)."""
        return type(self)(self._url, events=self._events)

    async def close(self) -> None:
        """Close the subscriber and the client's connections."""
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    async def now(self) -> datetime:
        """Return the server's clock (every worker, on any machine, measures leases on it)."""
        async with self._errors():
            seconds, micros = await self._redis.time()
        return datetime.fromtimestamp(seconds + micros / 1_000_000, _UTC)

    async def wait_for_tasks(self, timeout: float) -> None:
        """Return at the next wake-up hint on this prefix's channel, or after ``timeout``.

        The subscription is this store's own connection, made at the first wait and kept, so
        a hint published between two waits is not lost. If the connection breaks, this wait
        returns after a short pause and the next one subscribes again.
        """
        deadline = time.monotonic() + timeout
        try:
            pubsub = await self._subscribed()
            while (left := deadline - time.monotonic()) > 0:
                if await pubsub.get_message(ignore_subscribe_messages=True, timeout=left) is not None:
                    while await pubsub.get_message(ignore_subscribe_messages=True, timeout=0) is not None:
                        pass  # hints that piled up
                    return
        except (RedisError, OSError):
            broken, self._pubsub = self._pubsub, None
            if broken is not None:
                with contextlib.suppress(RedisError, OSError):
                    await broken.aclose()
            await asyncio.sleep(min(max(deadline - time.monotonic(), 0.0), _RESUBSCRIBE_PAUSE))

    async def _subscribed(self) -> PubSub:
        if self._pubsub is None:
            pubsub = self._redis.pubsub()
            await pubsub.subscribe(f"{self.prefix}:wake")
            self._pubsub = pubsub
        return self._pubsub

    def _connect(self) -> aioredis.Redis:
        try:
            client = aioredis.Redis.from_url(
                self._address,
                client_name=self.client_name,
                socket_connect_timeout=_CONNECT_SECONDS,
                socket_timeout=_REPLY_SECONDS,
                health_check_interval=30,
                retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), _RETRIES),
                retry_on_error=[RedisConnectionError],
            )
        except ValueError as exc:
            raise StorageError(f"malformed Redis store URL {self.url!r}: {exc}") from None
        pool = client.connection_pool
        pool.connection_class = _checked_without_reading(pool.connection_class)
        return client

    @property
    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            raise StorageError(f"the Redis store {self.url} is not open (use 'async with' or await open())")
        return self._client

    async def _script(self, name: str, *args: Any) -> Any:
        """Run script ``name`` with the prefix, events flag and cap, then ``args``; return its reply."""
        self._redis  # noqa: B018  (raises when the store is not open)
        async with self._errors():
            return await self._scripts[name](args=[*self._head, *args])

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        """Turn driver errors into one-line ``StorageError``s that never show the password.

        Raises:
            ValueError: an insert named a task id that exists (nothing was inserted).
            StorageError: any other failure of the server or the connection.

        """
        try:
            yield
        except ResponseError as exc:
            if str(exc).startswith("DUPLICATE "):
                raise ValueError(
                    f"a task with id {str(exc).split()[1]!r} already exists; nothing was inserted"
                ) from None
            raise self._failed(exc) from None
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: BaseException) -> StorageError:
        message = str(exc).strip().replace("\n", " ") or type(exc).__name__
        if self._password:
            message = message.replace(self._password, "***")
        return StorageError(f"the Redis store {self.url} failed: {message}")

    @staticmethod
    def _tokens(count: int) -> str:
        """Return ``count`` lease tokens and run ids as one hex text: 32 then 16 random digits each."""
        return os.urandom(24 * count).hex()
