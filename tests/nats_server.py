"""The NATS test server (127.0.0.1:4222, JetStream on, no password) and a store prefix per test.

Tests isolate themselves by prefix: the server's configuration is never changed; a test's
bucket and streams (named from its prefix) are deleted afterwards. When the server
cannot be reached, NATS tests fail (they are never skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

NATS_URL = "nats://127.0.0.1:4222"

T = TypeVar("T")


def new_prefix() -> str:
    """Return a store prefix no other test uses."""
    return f"omniq-t-{uuid.uuid4().hex}"


def run_apart(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on a loop of its own, on a thread of its own (a test's loop may be running here)."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, asyncio.run(make())))
        except BaseException as exc:  # handed to the caller below
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name="nats-test-cleanup")
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def stream_names(prefix: str, url: str = NATS_URL) -> list[str]:
    """Return the names of the server's streams that belong to ``prefix``, sorted."""

    async def names() -> list[str]:
        import nats

        nc = await nats.connect(url, connect_timeout=10, allow_reconnect=False)
        try:
            infos = await nc.jetstream().streams_info()
            return sorted(i.config.name for i in infos if i.config.name and f"omniq_{prefix}" in i.config.name)
        finally:
            await nc.close()

    return run_apart(names)


def drop_prefix(prefix: str, url: str = NATS_URL) -> int:
    """Delete the bucket, object store, event stream and output stream of ``prefix``; return how many streams went."""

    async def drop() -> int:
        import nats

        nc = await nats.connect(url, connect_timeout=10, allow_reconnect=False)
        try:
            js = nc.jetstream()
            gone = 0
            bucket = f"omniq_{prefix}"
            for name in (f"KV_{bucket}", f"OBJ_{bucket}", f"{bucket}_events", f"{bucket}_output"):
                with contextlib.suppress(Exception):
                    gone += bool(await js.delete_stream(name))
            return gone
        finally:
            await nc.close()

    return run_apart(drop)


@contextlib.contextmanager
def nats_prefix() -> Iterator[str]:
    """Yield a fresh store prefix on the test server; delete that prefix's streams afterwards."""
    prefix = new_prefix()
    try:
        yield prefix
    finally:
        drop_prefix(prefix)
