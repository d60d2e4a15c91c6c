"""In-process store for tests and throwaway work: same contract as the others, nothing persists.

``MemoryStorage`` is assembled from one mixin per protocol role over ``memory_base.MemoryState``
(the data and the lock), as ``SQLiteStorage`` is: ``MemoryResults`` (``memory_base``),
``MemoryQueue`` (``memory_queue``), ``MemoryOutcomes`` (``memory_outcomes``),
``MemoryOutput`` (``memory_output``), and here
``MemoryRegistry`` and ``MemoryMaintenance``.
The lifecycle rules come from ``storage.lifecycle``.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from omniq_nb.models import StoreHealth, TaskEvent, TaskStatus, WorkerInfo
from omniq_nb.storage import lifecycle
from omniq_nb.storage.health import health_report
from omniq_nb.storage.memory_base import MemoryResults, MemoryState, copy
from omniq_nb.storage.memory_outcomes import MemoryOutcomes
from omniq_nb.storage.memory_output import MemoryOutput
from omniq_nb.storage.memory_queue import MemoryQueue

__all__ = ["MemoryMaintenance", "MemoryRegistry", "MemoryStorage"]

_UTC = timezone.utc


class MemoryRegistry(MemoryState):
    """``WorkerRegistry``: the live pools, each entry live while its heartbeat is younger than its ttl."""

    async def heartbeat(self, worker: WorkerInfo) -> bool:
        """Insert or refresh the pool's registry entry (and drop dead ones); return whether it must stop."""
        with self._lock:
            now = datetime.now(_UTC)
            live = {w.id: w for w in self._live(now)}
            known = live.get(worker.id)
            self._workers = live
            self._workers[worker.id] = copy(
                worker,
                started_at=known.started_at if known else worker.started_at or now,
                heartbeat=now,
                stop_requested=known is not None and known.stop_requested,
            )
            return known is not None and known.stop_requested

    async def workers(self) -> builtins.list[WorkerInfo]:
        """Return the live pools, oldest first."""
        with self._lock:
            return sorted(self._live(datetime.now(_UTC)), key=lambda w: (w.started_at or w.heartbeat, w.id))

    async def request_stop(self, worker_id: str) -> bool:
        """Flag a live pool's entry; the pool drains and stops at its next heartbeat."""
        with self._lock:
            known = self._workers.get(worker_id)
            if known is None or not lifecycle.worker_alive(known, datetime.now(_UTC)):
                return False
            self._workers[worker_id] = copy(known, stop_requested=True)
            return True

    async def unregister(self, worker_id: str) -> None:
        """Remove the pool's registry entry."""
        with self._lock:
            self._workers.pop(worker_id, None)


class MemoryMaintenance(MemoryResults):
    """``EventStore`` and ``MaintenanceStore``: the event list, purge, and the health check."""

    async def events(
        self, *, task_id: str | None = None, since: int = 0, limit: int = 1000
    ) -> builtins.list[TaskEvent]:
        """Return events with ``seq > since``, oldest first."""
        with self._lock:
            found = [e for e in self._events if e.seq > since and (task_id is None or e.task_id == task_id)]
        return found[:limit]

    async def last_event_seq(self) -> int:
        """Return the newest event's ``seq`` (0 when there is none)."""
        return self._seq

    async def purge(
        self, *, finished_before: datetime | None = None, statuses: Sequence[TaskStatus] = (), everything: bool = False
    ) -> int:
        """Delete finished tasks past their result TTL (or everything, kept callables too), with their events."""
        with self._lock:
            now = datetime.now(_UTC)
            picked = {TaskStatus(s) for s in statuses}
            doomed = {
                t.id
                for t in self._tasks.values()
                if everything or lifecycle.purgeable(t, now, finished_before=finished_before, statuses=picked)
            }
            for task_id in doomed:
                del self._tasks[task_id]
                self._output.pop(task_id, None)
                self._output_seq.pop(task_id, None)
            if doomed:
                self._cache = {
                    k: kept for k, ids in self._cache.items() if (kept := [i for i in ids if i not in doomed])
                }
            self._events = [e for e in self._events if e.task_id not in doomed]
            if everything:
                self._callables.clear()
            return len(doomed)

    async def lead_maintenance(self, runner: str, *, term: float) -> bool:
        """Return True: every caller leads.

        A memory store lives in one process, so its pools are few and a scan is a walk over a
        dict; no election is worth having (a rescue is fenced on its lease either way).
        """
        return True

    async def checkpoint(self) -> None:
        """Nothing to do: a memory store has no log."""

    async def check(self, *, stale_after: float) -> StoreHealth:
        """Report tasks per status and lapsed leases (nothing else can go wrong in memory)."""
        counts = await self.count()
        now = datetime.now(_UTC)
        with self._lock:
            lapsed = sorted(
                (t.lease_until, t.id)
                for t in self._tasks.values()
                if t.lease_until is not None and lifecycle.lease_lapsed(t, now)
            )
        stale = [task_id for until, task_id in lapsed if until <= now - timedelta(seconds=stale_after)]
        return health_report(
            self.url, counts=counts, expired_leases=len(lapsed), stale_ids=stale, stale_after=stale_after
        )


class MemoryStorage(MemoryQueue, MemoryRegistry, MemoryMaintenance, MemoryOutcomes, MemoryOutput):
    """A store that lives in this process's memory (``memory://``).

    Args:
        url: ``memory://`` (anything after the scheme is ignored).
        events: record a ``TaskEvent`` per transition.

    Capability flags: ``supports_notify`` and ``multi_host`` are both false.

    Example:
        >>> import asyncio
        >>> async def main():
        ...     async with MemoryStorage() as store:
        ...         return await store.count(), await store.workers()
        >>> counts, workers = asyncio.run(main())
        >>> sum(counts.values()), workers
        (0, [])

    """
