"""The Redis test server (127.0.0.1:6379, no password) and a key prefix per test.

Tests isolate themselves by prefix: the server's configuration is never changed and no
database is flushed; a test's keys are deleted afterwards with ``SCAN`` + ``UNLINK`` of its
own prefix. When the server cannot be reached, Redis tests fail (they are never skipped).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

REDIS_URL = "redis://127.0.0.1:6379/0"


def new_prefix() -> str:
    """Return a key prefix no other test uses."""
    return f"omniq-t-{uuid.uuid4().hex}"


def drop_prefix(prefix: str) -> int:
    """Delete every key under ``prefix:`` (and the key ``prefix`` itself); return how many went."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=10)
    try:
        gone = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                gone += client.unlink(*batch)
                batch = []
        if batch:
            gone += client.unlink(*batch)
        return gone
    finally:
        client.close()


def keys_of(prefix: str) -> list[str]:
    """Return the keys under ``prefix:``, sorted (for tests that look at the layout)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=10)
    try:
        return sorted(key.decode() for key in client.scan_iter(match=f"{prefix}:*", count=1000))
    finally:
        client.close()


@contextlib.contextmanager
def redis_prefix() -> Iterator[str]:
    """Yield a fresh key prefix on the test server; delete that prefix's keys afterwards."""
    prefix = new_prefix()
    try:
        yield prefix
    finally:
        drop_prefix(prefix)
