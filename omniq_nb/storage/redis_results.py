"""The Redis store's ``ResultStore`` and ``EventStore`` roles: reads of tasks, listings, counts, events.

Listings merge the sorted sets ``PREFIX:all`` (every task) or ``PREFIX:s:STATUS`` (one per
status), all scored by enqueue order, newest first, reading them in chunks, so a listing
with a limit reads about that many tasks. Events are read from the stream ``PREFIX:ev``
whose entry ids are ``SEQ-0``: ``events(since=n)`` is ``XRANGE (n+1)-0 +``. A task's own
events are found through its list of seqs (``PREFIX:te:ID``). The stream is capped
(``XADD MAXLEN ~``, ``events_max`` in the URL): a follower further behind than the cap
misses the oldest events, and a task's events older than the cap are gone.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from omniq_nb.models import Task, TaskEvent, TaskStatus
from omniq_nb.storage.redis_base import RedisConnection
from omniq_nb.storage.redis_codec import decode_event, decode_task, pairs_to_dict

__all__ = ["RedisResults"]

_CHUNK = 200
_GET_CHUNK = 1000  # ids read by one script (it holds the server for about a millisecond per thousand)


class RedisResults(RedisConnection):
    """Reads of tasks (by id, by ids, listings, counts) and of the event stream."""

    async def get(self, task_id: str) -> Task | None:
        """Return the task with this id, or ``None``."""
        async with self._errors():
            fields = await self._redis.hgetall(f"{self.prefix}:t:{task_id}")
        return decode_task(fields) if fields else None

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Return the tasks with these ids that exist."""
        return [task for task in await self._hashes(task_ids) if task is not None]

    async def list(
        self, *, statuses: Sequence[TaskStatus] = (), queue: str | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Return up to ``limit`` tasks, newest first, filtered by status and queue."""
        keys = [f"{self.prefix}:s:{TaskStatus(s).value}" for s in dict.fromkeys(statuses)] or [f"{self.prefix}:all"]
        merged = _Newest(self, keys)
        found: builtins.list[Task] = []
        while len(found) < limit:
            ids = await merged.take(limit - len(found) if queue is None else _CHUNK)
            if not ids:
                break
            found += [t for t in await self._hashes(ids) if t is not None and (queue is None or t.queue == queue)]
        return found[:limit]

    async def count(self, *, task_ids: Sequence[str] | None = None) -> dict[TaskStatus, int]:
        """Return the number of tasks per status (of ``task_ids``, or all)."""
        counts = dict.fromkeys(TaskStatus, 0)
        async with self._errors(), self._redis.pipeline(transaction=False) as pipe:
            if task_ids is None:
                for status in TaskStatus:
                    pipe.zcard(f"{self.prefix}:s:{status.value}")
                for status, n in zip(TaskStatus, await pipe.execute(), strict=True):
                    counts[status] = int(n)
                return counts
            for task_id in task_ids:
                pipe.hget(f"{self.prefix}:t:{task_id}", "status")
            replies = await pipe.execute()
        for status in replies:
            if status is not None:
                counts[TaskStatus(status.decode())] += 1
        return counts

    async def events(
        self, *, task_id: str | None = None, since: int = 0, limit: int = 1000
    ) -> builtins.list[TaskEvent]:
        """Return recorded events with ``seq > since``, oldest first (of one task, or all)."""
        stream = f"{self.prefix}:ev"
        async with self._errors():
            if task_id is None:
                entries = await self._redis.xrange(stream, f"{since + 1}-0", "+", count=limit)
                return [decode_event(entry_id, fields) for entry_id, fields in entries]
            seqs = [int(s) for s in await self._redis.lrange(f"{self.prefix}:te:{task_id}", 0, -1)]
            wanted = [s for s in seqs if s > since][:limit]
            if not wanted:
                return []
            async with self._redis.pipeline(transaction=False) as pipe:
                for seq in wanted:
                    pipe.xrange(stream, f"{seq}-0", f"{seq}-0")
                replies = await pipe.execute()
        return [decode_event(entry_id, fields) for entries in replies for entry_id, fields in entries]

    async def last_event_seq(self) -> int:
        """Return the ``seq`` of the newest recorded event (0 when there is none)."""
        async with self._errors():
            newest = await self._redis.xrevrange(f"{self.prefix}:ev", "+", "-", count=1)
        return int(newest[0][0].split(b"-", 1)[0]) if newest else 0

    async def _hashes(self, task_ids: Sequence[str]) -> builtins.list[Task | None]:
        """Return the task of each id (``None`` where there is none), with one script per thousand ids."""
        found: builtins.list[Task | None] = []
        for start in range(0, len(task_ids), _GET_CHUNK):
            replies = await self._script("GET_MANY", *task_ids[start : start + _GET_CHUNK])
            found += [decode_task(pairs_to_dict(flat)) if flat else None for flat in replies]
        return found


class _Newest:
    """The ids of several sorted sets scored by enqueue order, merged newest first, read in chunks."""

    def __init__(self, store: RedisResults, keys: builtins.list[str]) -> None:
        self._store = store
        self._keys = keys
        self._buffers: builtins.list[builtins.list[tuple[bytes, float]]] = [[] for _ in keys]
        self._offsets = [0] * len(keys)
        self._done = [False] * len(keys)

    async def take(self, count: int) -> builtins.list[str]:
        """Return the next ``count`` ids (fewer at the end)."""
        out: builtins.list[str] = []
        while len(out) < count:
            for n in range(len(self._keys)):
                if not self._buffers[n] and not self._done[n]:
                    await self._refill(n, max(count - len(out), 16))
            heads = [(buffer[0][1], n) for n, buffer in enumerate(self._buffers) if buffer]
            if not heads:
                break
            _, best = max(heads)
            out.append(self._buffers[best].pop(0)[0].decode())
        return out

    async def _refill(self, n: int, size: int) -> None:
        start = self._offsets[n]
        async with self._store._errors():
            rows: Any = await self._store._redis.zrevrange(self._keys[n], start, start + size - 1, withscores=True)
        self._offsets[n] += len(rows)
        self._done[n] = len(rows) < size
        self._buffers[n] = [(member, float(score)) for member, score in rows]
