"""The callables that batch payloads name by digest, read from the store once per pool.

``enqueue_many`` keeps a batch's pickled callable once in the store and each task's payload
names it by its SHA-256 digest (``omniq_nb.blob_format.callable_digest``). A pool reads
each digest's bytes once, however many of its runs need them at the same moment, and keeps
the most recently used ones; the serializer checks them against the digest before it
unpickles them.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection

from omniq_nb.blob_format import callable_digest
from omniq_nb.jobs import retrieve

__all__ = ["KEPT_BYTES", "KEPT_CALLABLES", "StoredCallables"]

KEPT_CALLABLES = 64
"""The most callables a pool keeps in memory (the least recently used go first)."""
KEPT_BYTES = 64 * 1024 * 1024
"""The most bytes of callables a pool keeps (a function pickled with a large global is large)."""


class StoredCallables:
    """Hand each run the kept callable its payload names, reading each digest from the store once.

    Args:
        read: the store's ``kept_callables``.
        keep: how many callables to keep in memory.
        keep_bytes: how many bytes of them (one larger than that is read again by each run).

    Example:
        >>> import asyncio
        >>> from omniq_nb.serialization import BlobSerializer
        >>> s = BlobSerializer()
        >>> shared = s.share_callable(len)
        >>> [blob] = s.dump_calls(len, [(([1],), {})], shared)
        >>> reads = []
        >>> async def read(digests):
        ...     reads.append(len(digests))
        ...     return {shared.digest: shared.body}
        >>> callables = StoredCallables(read)
        >>> async def twice():
        ...     return [await callables.body(blob) == shared.body for _ in range(2)], await callables.body(b"x")
        >>> asyncio.run(twice()), reads
        (([True, True], None), [1])

    """

    def __init__(
        self,
        read: Callable[[Collection[str]], Awaitable[dict[str, bytes]]],
        keep: int = KEPT_CALLABLES,
        keep_bytes: int = KEPT_BYTES,
    ) -> None:
        self._read, self._keep, self._keep_bytes = read, keep, keep_bytes
        self._bytes = 0
        self._kept: OrderedDict[str, bytes] = OrderedDict()
        self._reading: dict[str, asyncio.Future[bytes | None]] = {}

    async def body(self, payload: bytes) -> bytes | None:
        """Return the kept callable ``payload`` names, or ``None`` when it names none or the store keeps none.

        Raises:
            StorageError: the store could not be read (the run fails, and may be retried).

        """
        digest = callable_digest(payload)
        if digest is None:
            return None
        if digest in self._kept:
            self._kept.move_to_end(digest)
            return self._kept[digest]
        reading = self._reading.get(digest)
        if reading is None:
            reading = self._reading[digest] = asyncio.ensure_future(self._read_one(digest))
            reading.add_done_callback(self._read_done)
        return await asyncio.shield(reading)

    def _read_done(self, reading: asyncio.Future[bytes | None]) -> None:
        """Forget a finished read (its error is its awaiters' to report, if any are left)."""
        self._reading = {digest: other for digest, other in self._reading.items() if other is not reading}
        retrieve(reading)  # every awaiter may have been cancelled meanwhile

    async def _read_one(self, digest: str) -> bytes | None:
        body = (await self._read([digest])).get(digest)
        if body is not None and len(body) <= self._keep_bytes and digest not in self._kept:
            self._kept[digest] = body
            self._bytes += len(body)
            while len(self._kept) > self._keep or self._bytes > self._keep_bytes:
                self._bytes -= len(self._kept.popitem(last=False)[1])
        return body
