"""The memory store's data and lock, the helpers every role uses, and its ``ResultStore`` role.

Every method runs without awaiting inside, so each is atomic on its event loop; a lock also
makes it safe when a sync wrapper's loop and a pool's loop share one store.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Self

import msgspec

from omniq_nb.models import EventKind, OutputChunk, Task, TaskEvent, TaskStatus, WorkerInfo
from omniq_nb.opening import OpensAndCloses
from omniq_nb.storage import lifecycle
from omniq_nb.urls import redact_url

__all__ = ["MemoryResults", "MemoryState", "copy"]

_UTC = timezone.utc
copy = msgspec.structs.replace
"""Return a copy of a task or worker entry (with some fields replaced): callers never hold stored ones."""


class MemoryState(OpensAndCloses):
    """The tasks, events and registry of one memory store, its lock and the helpers every role uses.

    Args:
        url: ``memory://`` (anything after the scheme is ignored).
        events: record a ``TaskEvent`` per transition.

    """

    supports_notify = False
    multi_host = False

    def __init__(self, url: str = "memory://", *, events: bool = True) -> None:
        self.url = redact_url(url)
        self._events_on = events
        self._tasks: dict[str, Task] = {}
        self._events: builtins.list[TaskEvent] = []
        self._seq = 0
        self._workers: dict[str, WorkerInfo] = {}
        self._kept: dict[tuple[str, str], tuple[bytes, datetime | None]] = {}
        """Results kept for a queue in another store: (task id, token) -> (bytes, purge time)."""
        self._event_purge: dict[str, datetime | None] = {}
        """When the events appended for a queue in another store go, by task (its newest event's mark)."""
        self._cache: dict[str, builtins.list[str]] = {}
        """Ids of the tasks inserted with each ``cache_key`` (an id may since have gone or been forgotten)."""
        self._output: dict[str, builtins.list[OutputChunk]] = {}
        self._output_seq: dict[str, int] = {}
        """The ``seq`` of each task's newest output chunk (kept after its head was trimmed)."""
        self._callables: dict[str, bytes] = {}
        """Batches' pickled callables, by digest."""
        self._lock = threading.Lock()

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release; the data stays until the object is dropped."""

    def clone(self) -> Self:
        """Return this same store: its data lives in this object, and every method is thread-safe."""
        return self

    async def now(self) -> datetime:
        """Return this process's clock."""
        return datetime.now(_UTC)

    def _live(self, now: datetime) -> builtins.list[WorkerInfo]:
        """Return the registry entries whose heartbeat is younger than their ttl."""
        return [w for w in self._workers.values() if lifecycle.worker_alive(w, now)]

    def _held(self, task_id: str, token: str) -> Task | None:
        task = self._tasks.get(task_id)
        return task if task is not None and lifecycle.holds_lease(task, token) else None

    def _record(self, task: Task, kind: EventKind, *, at: datetime | None = None, message: str | None = None) -> None:
        if not self._events_on:
            return
        self._seq += 1
        self._events.append(lifecycle.event_of(task, kind, at=at, message=message, seq=self._seq))


class MemoryResults(MemoryState):
    """``ResultStore``: copies of tasks, so callers never change the stored ones."""

    async def get(self, task_id: str) -> Task | None:
        """Return a copy of the task, or ``None``."""
        with self._lock:
            task = self._tasks.get(task_id)
            return None if task is None else copy(task)

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Return copies of the tasks that exist."""
        with self._lock:
            return [copy(self._tasks[i]) for i in task_ids if i in self._tasks]

    async def list(
        self, *, statuses: Sequence[TaskStatus] = (), queue: str | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Return up to ``limit`` tasks, newest first."""
        wanted = {TaskStatus(s) for s in statuses}
        with self._lock:
            found = [
                t
                for t in reversed(self._tasks.values())
                if (not wanted or t.status in wanted) and (queue is None or t.queue == queue)
            ]
            return [copy(t) for t in found[:limit]]

    async def cached(self, keys: Sequence[str], *, finished_after: datetime | None = None) -> dict[str, Task]:
        """Return copies of the newest succeeded task of each key that has one."""
        found: dict[str, Task] = {}
        with self._lock:
            for key in keys:
                newest = lifecycle.newest_cached(map(self._tasks.get, self._cache.get(key, ())), key, finished_after)
                if newest is not None:
                    found[key] = copy(newest)
        return found

    async def count(self, *, task_ids: Sequence[str] | None = None) -> dict[TaskStatus, int]:
        """Return the number of tasks per status."""
        counts = dict.fromkeys(TaskStatus, 0)
        with self._lock:
            ids = self._tasks.keys() if task_ids is None else task_ids
            for task_id in ids:
                task = self._tasks.get(task_id)
                if task is not None:
                    counts[task.status] += 1
        return counts
