"""The NATS store's mirror of its bucket, and the writes that keep it current.

Each store object follows the bucket with an ordered push consumer (the last entry per key,
then every change) and keeps the current entries in memory, from the first read that needs
them on: a store that only writes and reads keys (a pool's lease keeper, renewing leases
beside its pool) never pays for following every change. Listings and counts read the
mirror after catching up to the bucket's last sequence (one stream-info request), so they
see every write acknowledged before them; ``get`` reads the server. Claims pick candidates
from the mirror as it is (catching up first only when it offers none) and win them by the
revision check, so a stale mirror costs a lost race, never a double claim.
This store's own writes go into the mirror at once (by revision, so a late delivery of an
older one changes nothing). A change that leaves a task pending wakes ``wait_for_tasks``.
The mirror also indexes tasks by the dependencies they name (``depends_on``) and by their
``cache_key``, so finding the dependents of a finished task, or a cached result, reads a few
keys, not every task.
A mirror that is behind and receives nothing for a few seconds (its consumer was lost with
the connection) is rebuilt from a new consumer; a slow one is waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import islice

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api

from omniq_nb.models import TaskEvent, TaskStatus, WorkerInfo
from omniq_nb.storage import lifecycle
from omniq_nb.storage.nats_base import NATSConnection
from omniq_nb.storage.nats_codec import (
    KEPT,
    MARK,
    TASK,
    WORKER,
    Stored,
    decode_stored,
    decode_until,
    decode_worker,
    encode_event,
    token,
)

__all__ = ["NATSMirror", "Order", "PendingOrder"]

logger = logging.getLogger(__name__)

_STALLED_SECONDS = 5.0  # a mirror behind the bucket that receives nothing this long is rebuilt
_KV_OP = "KV-Operation"
_WRONG_LAST = (10071, 10164)  # JetStream: the subject's last sequence was not the expected one


class NATSMirror(NATSConnection):
    """The bucket's entries as of the last change seen, and the writes that keep them current.

    Args:
        url: as ``NATSConnection``.
        events: record a ``TaskEvent`` per transition.

    """

    def __init__(self, url: str, *, events: bool = True) -> None:
        super().__init__(url, events=events)
        self._tasks: dict[str, tuple[int, Stored]] = {}
        self._workers: dict[str, tuple[int, WorkerInfo]] = {}
        self._removed: dict[str, int] = {}
        self._marks: dict[str, tuple[int, float | None]] = {}
        """Kept results and event purge marks (``nats_outcomes``): key -> (revision, when it goes)."""
        self._pending = PendingOrder()
        self._dependents: dict[str, set[str]] = {}
        """Dependency id -> the keys of the tasks whose ``depends_on`` names it."""
        self._cached: dict[str, set[str]] = {}
        """Cache key -> the keys of the tasks that have it (``cached``, ``forget_cached``)."""
        self._seen = 0
        self._moved = asyncio.Event()
        self._wake = asyncio.Event()

    async def _mirrored(self) -> None:
        """Start following the bucket unless the mirror does already."""
        if self._sub is None:
            async with self._errors():
                await self._follow()

    async def wait_for_tasks(self, timeout: float) -> None:
        """Return when the mirror sees a pending task change (a hint), or after ``timeout``."""
        await self._mirrored()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def _follow(self) -> None:
        """(Re)start the mirror: forget it, then take the last entry per key and every change after."""
        old, self._sub = self._sub, None
        if old is not None:
            with contextlib.suppress(nats.errors.Error, OSError, asyncio.TimeoutError):
                await old.unsubscribe()
        self._tasks, self._workers, self._marks, self._removed, self._seen = {}, {}, {}, {}, 0
        self._pending, self._dependents, self._cached = PendingOrder(), {}, {}
        self._sub = await self._jet.subscribe(
            f"$KV.{self.bucket}.>",
            stream=f"KV_{self.bucket}",
            cb=self._on_entry,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            pending_msgs_limit=-1,
            pending_bytes_limit=-1,
        )

    async def _on_entry(self, msg: Msg) -> None:
        key = msg.subject[len(self.bucket) + 5 :]
        op = msg.headers.get(_KV_OP) if msg.headers else None
        seq = msg.metadata.sequence.stream
        self._apply(key, seq, None if op else msg.data)
        self._seen = max(self._seen, seq)
        self._moved.set()

    def _apply(self, key: str, revision: int, data: bytes | None) -> None:
        """Bring one key of the mirror to ``revision`` (``data`` ``None``: deleted) unless it is newer."""
        current = max(
            self._tasks[key][0] if key in self._tasks else 0,
            self._workers[key][0] if key in self._workers else 0,
            self._marks[key][0] if key in self._marks else 0,
            self._removed.get(key, 0),
        )
        if revision <= current:
            return
        if data is None:
            self._index(key, self._tasks.pop(key, None), None)
            self._pending.discard(key)
            self._workers.pop(key, None)
            self._marks.pop(key, None)
            self._removed[key] = revision
            return
        self._removed.pop(key, None)
        if key.startswith(TASK):
            stored = decode_stored(data)
            self._index(key, self._tasks.get(key), stored)
            self._tasks[key] = (revision, stored)
            if stored.task.status is TaskStatus.PENDING:
                task = stored.task
                self._pending.put(key, (-task.priority, task.eta.timestamp(), stored.order))
                self._wake.set()
            else:
                self._pending.discard(key)
        elif key.startswith(WORKER):
            self._workers[key] = (revision, decode_worker(data))
        elif key.startswith((KEPT, MARK)):
            self._marks[key] = (revision, decode_until(data))

    def _index(self, key: str, before: tuple[int, Stored] | None, after: Stored | None) -> None:
        """Move task ``key`` in the indexes (dependents, cache keys) from ``before``'s values to ``after``'s."""
        old, new = before[1].task if before is not None else None, after.task if after is not None else None
        old_deps, new_deps = old.depends_on if old is not None else (), new.depends_on if new is not None else ()
        if old_deps != new_deps:
            _move(self._dependents, key, old_deps, new_deps)
        old_cache, new_cache = ((t.cache_key,) if t is not None and t.cache_key is not None else () for t in (old, new))
        if old_cache != new_cache:
            _move(self._cached, key, old_cache, new_cache)

    async def _drop_dead(self, now: datetime) -> None:
        """Remove the entries of pools whose heartbeat lapsed, as this mirror holds them (none unless it follows)."""
        dead = [(k, rev) for k, (rev, w) in self._workers.items() if not lifecycle.worker_alive(w, now)]
        await asyncio.gather(*(self._remove(k, last=rev) for k, rev in dead))  # unless it came back meanwhile

    async def _catch_up(self) -> None:
        """Wait until the mirror holds every change the server acknowledged before this call."""
        await self._mirrored()
        async with self._errors():
            info = await self._jet.stream_info(f"KV_{self.bucket}")
        last = info.state.last_seq or 0
        if not info.state.messages or self._seen >= last:
            return
        while self._seen < last:
            self._moved.clear()
            try:
                await asyncio.wait_for(self._moved.wait(), _STALLED_SECONDS)
            except TimeoutError:  # behind, and nothing came for a while: the consumer is gone
                logger.warning("NATS store %s: the mirror stopped receiving; following the bucket again", self.url)
                async with self._errors():
                    await self._follow()
        self._removed = {key: rev for key, rev in self._removed.items() if rev > self._seen}

    async def _create(self, key: str, data: bytes) -> int:
        """Create ``key`` (it must not exist); return its revision."""
        revision = await self._store.create(key, data)
        self._apply(key, revision, data)
        return revision

    async def _update(self, key: str, data: bytes, last: int) -> int | None:
        """Write ``key`` if its revision is still ``last``; return the new revision, or ``None``: it moved."""
        try:
            revision = await self._store.update(key, data, last=last)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None
        self._apply(key, revision, data)
        return revision

    async def _remove(self, key: str, *, last: int | None = None) -> bool:
        """Purge ``key`` and its history (only at revision ``last`` when given); return whether it went."""
        headers = {_KV_OP: "PURGE", "Nats-Rollup": "sub"}
        if last is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(last)
        try:
            ack = await self._jet.publish(f"$KV.{self.bucket}.{key}", b"", headers=headers)
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST:
                return False
            raise
        self._apply(key, ack.seq, None)
        return True

    async def _read(self, key: str) -> tuple[int, bytes] | None:
        """Return ``(revision, value)`` of ``key`` from the server, or ``None`` when it has none."""
        try:
            entry = await self._store.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        return entry.revision or 0, entry.value or b""

    async def _fetch(self, key: str) -> tuple[int, Stored] | None:
        """Return ``(revision, entry)`` of a task's key from the server, or ``None`` when it has none."""
        found = await self._read(key)
        return None if found is None else (found[0], decode_stored(found[1]))

    def _series_busy(self, series: str | None) -> bool:
        """Return True when the series already has an unfinished run in the mirror (it must not fork)."""
        return any(s.task.series == series and s.task.status in lifecycle.UNFINISHED for _, s in self._tasks.values())

    async def _record(self, events: Iterable[TaskEvent]) -> None:
        """Append events to the stream, in order; a failure loses them (logged) and never fails the caller.

        All but the last go as plain publishes; the last one's acknowledgement comes after
        the stream stored every message this connection sent before it (the server handles a
        connection's messages in order), so one round trip covers the batch.
        """
        if self._events_on:
            await self._append(events)

    async def _append(self, events: Iterable[TaskEvent]) -> None:
        batch = [(f"{self._events_subject}.{token(e.task_id)}", encode_event(e)) for e in events]
        if not batch or self._nc is None:
            return
        try:
            for subject, data in batch[:-1]:
                await self._nc.publish(subject, data)
            await self._jet.publish(*batch[-1])
        except (nats.errors.Error, OSError, asyncio.TimeoutError) as exc:
            logger.warning("NATS store %s: events were lost: %s", self.url, self._message(exc))


Order = tuple[int, float, int]
"""A pending task's place in claim order: priority (negated: highest first), eta, enqueue order."""


class PendingOrder:
    """The keys of pending tasks in claim order, for a claim to walk from the front.

    A list sorted when a claim needs it: a change appends an entry, a claim sorts (a sorted
    list with a few entries appended sorts in about linear time, in C) and drops the stale
    entries at its front (tasks claimed since the last claim), so a claim pays for what
    changed, not for sorting every pending task again. Stale entries elsewhere (a task
    cancelled in the middle, one whose order changed) are passed over, and the list is built
    anew once they outnumber the live ones, whether or not anything claims.
    """

    def __init__(self) -> None:
        self._orders: dict[str, Order] = {}
        self._entries: list[tuple[Order, str]] = []
        self._unsorted = False

    def put(self, key: str, order: Order) -> None:
        """Mark ``key`` pending, in ``order`` (a key already pending moves)."""
        if self._orders.get(key) == order:
            return
        self._orders[key] = order
        self._unsorted = True
        if len(self._entries) < 2 * len(self._orders) + 1024:
            self._entries.append((order, key))
        else:  # a new list: a walk under way keeps its own
            self._entries = [(order, key) for key, order in self._orders.items()]

    def discard(self, key: str) -> None:
        """Mark ``key`` no longer pending (no error when it was not)."""
        self._orders.pop(key, None)

    def __iter__(self) -> Iterator[str]:
        """Yield the keys pending when the walk began, in claim order, each once, less those no longer pending."""
        entries = self._tidied()
        orders, seen = self._orders, set[str]()
        for order, key in islice(entries, len(entries)):
            if key not in seen and orders.get(key) == order:
                seen.add(key)
                yield key

    def _tidied(self) -> list[tuple[Order, str]]:
        entries, orders = self._entries, self._orders
        if self._unsorted:
            entries, self._unsorted = sorted(entries), False  # a new list: a walk under way keeps its own
        stale = 0
        for order, key in entries:
            if orders.get(key) == order:
                break
            stale += 1
        self._entries = entries = entries[stale:] if stale else entries
        return entries


def _move(index: dict[str, set[str]], key: str, old: Iterable[str], new: Iterable[str]) -> None:
    """Move ``key`` in an index (value -> keys) from the ``old`` values to the ``new`` ones."""
    for value in old:
        keys = index[value]
        keys.discard(key)
        if not keys:
            del index[value]
    for value in new:
        index.setdefault(value, set()).add(key)
