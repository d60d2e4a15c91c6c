"""The NATS store's ``WorkerRegistry`` and ``MaintenanceStore`` roles: live pools, election, purge, health.

A pool's entry is the key ``w.ID`` of the bucket; it is live while its heartbeat (this
client's clock) is younger than its ttl, and dead entries are removed at the next
heartbeat. The maintenance turn is the key ``lead``, taken and extended by compare-and-set.
A purge removes each task's key (fenced on the revision it judged), its events and its output.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import msgspec
import nats.js.errors

from omniq_nb.models import StoreHealth, TaskStatus, WorkerInfo
from omniq_nb.storage import lifecycle
from omniq_nb.storage.health import health_report
from omniq_nb.storage.nats_codec import (
    LEAD_KEY,
    decode_lead,
    decode_worker,
    encode_lead,
    encode_worker,
    token,
    worker_key,
)
from omniq_nb.storage.nats_mirror import NATSMirror
from omniq_nb.storage.nats_results import NATSResults

__all__ = ["NATSMaintenance", "NATSRegistry"]

_UTC = timezone.utc
_TRIES = 20


class NATSRegistry(NATSMirror):
    """Heartbeats, the list of live pools, stop requests; an entry is live while its heartbeat is fresh."""

    async def heartbeat(self, worker: WorkerInfo) -> bool:
        """Insert or refresh the pool's entry (and drop the dead ones its mirror holds); return whether it must stop."""
        key = worker_key(worker.id)
        async with self._errors():
            for _ in range(_TRIES):
                now = datetime.now(_UTC)
                found = await self._read(key)
                known = decode_worker(found[1]) if found is not None else None
                if known is not None and not lifecycle.worker_alive(known, now):
                    known = None
                entry = msgspec.structs.replace(
                    worker,
                    started_at=known.started_at if known else worker.started_at or now,
                    heartbeat=now,
                    stop_requested=known is not None and known.stop_requested,
                )
                if await self._put(key, encode_worker(entry), None if found is None else found[0]):
                    await self._drop_dead(now)
                    return entry.stop_requested
        return False

    async def _put(self, key: str, data: bytes, last: int | None) -> bool:
        if last is not None:
            return await self._update(key, data, last) is not None
        try:
            await self._create(key, data)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    async def workers(self) -> builtins.list[WorkerInfo]:
        """Return the live pools, oldest first."""
        await self._catch_up()
        now = datetime.now(_UTC)
        live = [w for _, w in self._workers.values() if lifecycle.worker_alive(w, now)]
        return sorted(live, key=lambda w: (w.started_at or w.heartbeat, w.id))

    async def request_stop(self, worker_id: str) -> bool:
        """Flag a live pool's entry; the pool drains and stops at its next heartbeat."""
        key = worker_key(worker_id)
        async with self._errors():
            for _ in range(_TRIES):
                found = await self._read(key)
                known = decode_worker(found[1]) if found is not None else None
                if found is None or known is None or not lifecycle.worker_alive(known, datetime.now(_UTC)):
                    return False
                flagged = msgspec.structs.replace(known, stop_requested=True)
                if await self._update(key, encode_worker(flagged), found[0]) is not None:
                    return True
        return False

    async def unregister(self, worker_id: str) -> None:
        """Remove the pool's entry."""
        async with self._errors():
            await self._remove(worker_key(worker_id))


class NATSMaintenance(NATSResults):
    """``MaintenanceStore``: the maintenance turn, purge, and the health check."""

    async def lead_maintenance(self, runner: str, *, term: float) -> bool:
        """Take or keep the maintenance turn for ``term`` seconds; return whether ``runner`` holds it."""
        async with self._errors():
            now = datetime.now(_UTC).timestamp()
            found = await self._read(LEAD_KEY)
            data = encode_lead(runner, now + term)
            if found is None:
                try:
                    await self._create(LEAD_KEY, data)
                except nats.js.errors.KeyWrongLastSequenceError:
                    return False
                return True
            holder, until = decode_lead(found[1])
            if holder != runner and until > now:
                return False
            return await self._update(LEAD_KEY, data, found[0]) is not None

    async def purge(
        self, *, finished_before: datetime | None = None, statuses: Sequence[TaskStatus] = (), everything: bool = False
    ) -> int:
        """Delete finished tasks past their result TTL (or all), with their events and output; drop dead pools."""
        await self._catch_up()
        now = datetime.now(_UTC)
        await self._drop_dead(now)
        picked = {TaskStatus(s) for s in statuses}
        doomed = [
            (key, revision, stored.task)
            for key, (revision, stored) in self._tasks.items()
            if everything or lifecycle.purgeable(stored.task, now, finished_before=finished_before, statuses=picked)
        ]
        async with self._errors():
            gone = await asyncio.gather(
                *(self._remove(key, last=None if everything else rev) for key, rev, _ in doomed)
            )
            if everything:
                await asyncio.gather(*(self._jet.purge_stream(s) for s in (self.events_stream, self.output_stream)))
                await self._drop_all_objects()
            else:
                went = [task for (_, _, task), removed in zip(doomed, gone, strict=True) if removed]
                await self._drop_objects(value for task in went for value in (task.payload, task.result))
                await asyncio.gather(
                    *(
                        self._jet.purge_stream(stream, subject=f"{subject}.{token(task.id)}")
                        for task in went
                        for stream, subject in (
                            (self.events_stream, self._events_subject),
                            (self.output_stream, self._output_subject),
                        )
                    )
                )
        return sum(gone)

    async def checkpoint(self) -> None:
        """Nothing to do: the server keeps its own log."""

    async def check(self, *, stale_after: float) -> StoreHealth:
        """Report tasks per status and lapsed leases; an unopened store is inspected through a connection of its own.

        Raises:
            StorageError: the server cannot be reached, or there is no store under the prefix.

        """
        if self._nc is not None:
            return await self._measure(stale_after)
        probe = self.clone()
        await probe._open(create=False)
        try:
            return await probe._measure(stale_after)
        finally:
            await probe.close()

    async def _measure(self, stale_after: float) -> StoreHealth:
        counts = await self.count()
        now = datetime.now(_UTC)
        lapsed = sorted(
            (s.task.lease_until, s.task.id)
            for _, s in self._tasks.values()
            if s.task.lease_until is not None and lifecycle.lease_lapsed(s.task, now)
        )
        stale = [task_id for until, task_id in lapsed if until <= now - timedelta(seconds=stale_after)]
        return health_report(
            self.url, counts=counts, expired_leases=len(lapsed), stale_ids=stale, stale_after=stale_after
        )
