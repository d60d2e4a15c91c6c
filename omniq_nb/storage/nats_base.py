"""The connection every role of the NATS store shares: URL, bucket, event stream, clock, errors.

Layout, all named from the prefix (``?prefix=NAME``, default ``omniq``), so several stores
share one server and nothing outside them is touched:

- the key-value bucket ``omniq_PREFIX`` (stream ``KV_omniq_PREFIX``, one revision per key):
  ``t.ID`` a task (``nats_codec.Stored``), ``w.ID`` a worker pool, ``lead`` the maintenance turn;
- the stream ``omniq_PREFIX_events`` on subjects ``omniq.PREFIX.ev.ID``: one message per
  event, whose stream sequence is the event's ``seq``;
- the stream ``omniq_PREFIX_output`` on subjects ``omniq.PREFIX.out.ID``: one message per kept
  chunk of a task's output (``nats_output``).

Every transition is a compare-and-set on the task key's revision (``update(key, value,
last=revision)``): the fence. A worker that lost its lease cannot write, because a rescue,
a cancel or the next claim moved the revision, and the lease token in the value is checked
as well before each write.

The mirror of the bucket that claims and listings read is ``nats_mirror``'s.

Clock: NATS has no server time, so leases are measured on each client's clock
(``now()``). Keep the hosts' clocks synchronised (NTP): a worker whose clock runs ``s``
seconds behind the rescuer's sees its lease end ``s`` seconds later than the rescuer does;
leases of a few tens of seconds tolerate the usual sub-second skew, and a rescue never
corrupts state (it is fenced like every other write), at worst it re-runs a task early.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any, Self
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from omniq_nb.errors import RecordTooLarge, StorageError
from omniq_nb.opening import OpensAndCloses
from omniq_nb.urls import redact_url, split_prefix_options

__all__ = ["NATSConnection", "split_options"]

logger = logging.getLogger(__name__)

_UTC = timezone.utc
_CLOSE_WAIT = 10.0  # seconds close() gives the connection to close
_PREFIX = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_CONNECT_SECONDS = 10.0
_REQUEST_SECONDS = 10.0
_CONNECT_TRIES = 2  # reconnections tried before the first connection fails
_RECONNECT_WAIT = 0.5  # seconds between tries (nats-py adds jitter)
_EVENTS_MAX = 1_000_000


def split_options(url: str) -> tuple[str, str, int]:
    """Return ``(server URL without omniq's options, prefix, events cap)`` of a NATS store URL.

    Example:
        >>> split_options("nats://me:pw@bus:4222?prefix=jobs&events_max=500")
        ('nats://me:pw@bus:4222', 'jobs', 500)

    Raises:
        StorageError: the prefix is not 1 to 64 letters, digits, ``_`` or ``-``, or the cap is
            not a positive integer.

    """
    return split_prefix_options(
        url, prefix_pattern=_PREFIX, allowed="letters, digits, '_' or '-'", events_max=_EVENTS_MAX
    )


class NATSConnection(OpensAndCloses):
    """A client of one NATS server, the store's bucket and event stream, and the bucket's mirror.

    Args:
        url: ``nats://[user:password@]host:4222?prefix=NAME`` (``tls://`` for TLS;
            ``events_max=N`` caps the event stream, default 1,000,000).
        events: record a ``TaskEvent`` per transition.

    """

    supports_notify = True
    multi_host = True

    def __init__(self, url: str, *, events: bool = True) -> None:
        self.url = redact_url(url)
        self._url = url
        self._address, self.prefix, self._events_max = split_options(url)
        self._password = urlsplit(url).password
        self._events_on = events
        self.bucket = f"omniq_{self.prefix}"
        """The key-value bucket's name."""
        self.events_stream = f"omniq_{self.prefix}_events"
        """The event stream's name."""
        self._events_subject = f"omniq.{self.prefix}.ev"
        self.output_stream = f"omniq_{self.prefix}_output"
        """The stream of the tasks' kept output."""
        self._output_subject = f"omniq.{self.prefix}.out"
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._sub: Any = None

    async def open(self) -> None:
        """Connect, and create the bucket and the streams if missing (the mirror starts at its first read).

        Raises:
            StorageError: the server cannot be reached, refuses the login, or has no JetStream.

        """
        await self._open(create=True)

    async def _open(self, *, create: bool) -> None:
        if self._nc is not None:
            return
        nc = await self._connect()
        try:
            async with self._errors():
                self._js = nc.jetstream(timeout=_REQUEST_SECONDS)
                self._kv = await self._bucket(create=create)
                await self._event_stream(create=create)
                await self._output_stream(create=create)
                self._nc = nc
        except BaseException:
            self._nc = None
            await nc.close()
            raise

    def clone(self) -> Self:
        """Return a new, unopened store on the same server and prefix (its own connection)."""
        return type(self)(self._url, events=self._events_on)

    async def close(self) -> None:
        """Stop the mirror and close the connection."""
        nc, self._nc, self._sub = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(nats.errors.Error, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(nc.close(), _CLOSE_WAIT)  # a connection stuck mid-reconnect must not hang

    async def now(self) -> datetime:
        """Return this client's clock (NATS has no server time; see the module's notes on skew)."""
        return datetime.now(_UTC)

    async def _connect(self) -> Client:
        """Connect (a few tries, then fail with the reason); once connected, reconnect without end, with backoff."""
        failures: list[BaseException] = []

        async def disconnected() -> None:
            if self._nc is not None:  # not this store closing it
                logger.warning("NATS store %s: connection lost; reconnecting", self.url)

        async def reconnected() -> None:
            logger.warning("NATS store %s: reconnected", self.url)

        async def error(exc: Exception) -> None:
            failures.append(exc)
            logger.debug("NATS store %s: %s", self.url, self._message(exc))

        try:
            nc = await asyncio.wait_for(
                nats.connect(
                    self._address,
                    name=f"omniq-{self.prefix}-{os.getpid()}-{secrets.token_hex(4)}",
                    connect_timeout=_CONNECT_SECONDS / 4,
                    max_reconnect_attempts=_CONNECT_TRIES,
                    reconnect_time_wait=_RECONNECT_WAIT,
                    disconnected_cb=disconnected,
                    reconnected_cb=reconnected,
                    error_cb=error,
                ),
                _CONNECT_SECONDS,
            )
        except (nats.errors.Error, OSError, TimeoutError, ValueError) as exc:
            reason = self._message(failures[-1] if failures else exc)
            raise StorageError(f"the NATS store {self.url} cannot be reached: {reason}") from None
        nc.options["max_reconnect_attempts"] = -1  # from now on, a lost connection is retried for ever
        return nc

    async def _bucket(self, *, create: bool) -> KeyValue:
        try:
            return await self._jet.key_value(self.bucket)
        except nats.js.errors.BucketNotFoundError:
            if not create:
                raise StorageError(f"there is no omniq store at {self.url} (no bucket {self.bucket})") from None
        return await self._jet.create_key_value(bucket=self.bucket, history=1, storage=api.StorageType.FILE)

    async def _event_stream(self, *, create: bool) -> None:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._jet.stream_info(self.events_stream)
            return
        if not create:
            raise StorageError(f"there is no omniq store at {self.url} (no stream {self.events_stream})")
        await self._jet.add_stream(
            name=self.events_stream,
            subjects=[f"{self._events_subject}.>"],
            storage=api.StorageType.FILE,
            max_msgs=self._events_max,
            discard=api.DiscardPolicy.OLD,
        )

    async def _output_stream(self, *, create: bool) -> None:
        """Create the output stream if missing (a store made before it existed gets it at its next open)."""
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._jet.stream_info(self.output_stream)
            return
        if create:
            await self._jet.add_stream(
                name=self.output_stream, subjects=[f"{self._output_subject}.>"], storage=api.StorageType.FILE
            )

    @property
    def _jet(self) -> JetStreamContext:
        if self._js is None:
            raise StorageError(f"the NATS store {self.url} is not open (use 'async with' or await open())")
        return self._js

    @property
    def _store(self) -> KeyValue:
        if self._kv is None or self._nc is None:
            raise StorageError(f"the NATS store {self.url} is not open (use 'async with' or await open())")
        return self._kv

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        """Turn driver errors into one-line ``StorageError``s that never show the password."""
        try:
            yield
        except nats.errors.MaxPayloadError:
            limit = self._nc.max_payload if self._nc is not None else 0
            raise RecordTooLarge(
                f"the NATS store {self.url} refused a task or result larger than the server's max_payload"
                f" ({limit:,} bytes): raise max_payload in the nats-server configuration (up to 64 MB),"
                " or keep results in another store (result_url)"
            ) from None
        except (nats.errors.Error, OSError, asyncio.TimeoutError) as exc:
            raise StorageError(f"the NATS store {self.url} failed: {self._message(exc)}") from None

    def _message(self, exc: BaseException) -> str:
        message = str(exc).strip().replace("\n", " ") or type(exc).__name__
        return message.replace(self._password, "***") if self._password else message
