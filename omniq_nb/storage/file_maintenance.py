"""The file store's ``WorkerRegistry``, ``EventStore`` and ``MaintenanceStore`` roles.

The registry is a file per live pool (``workers/<id>``); events are the log of
``file_events``; purge deletes task records with their events and output; every caller leads the
maintenance (one machine: its pools are few, and every rescue is fenced on its lease).
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec

from omniq_nb.errors import StorageError
from omniq_nb.models import StoreHealth, Task, TaskEvent, TaskStatus, WorkerInfo
from omniq_nb.storage import lifecycle
from omniq_nb.storage.file_base import Record, encode, now
from omniq_nb.storage.file_events import drop_events, last_seq, read_events
from omniq_nb.storage.file_results import FileResults
from omniq_nb.storage.health import health_report

__all__ = ["FileMaintenance", "FileRegistry"]

_SCRATCH_SECONDS = 600.0
"""A temporary file this old was left by a writer that died before moving it into place."""
_SWEEP_SECONDS = 60.0
"""How often ``checkpoint`` looks for such leftovers."""


class FileRegistry(FileResults):
    """``WorkerRegistry``: a file per pool, live while its heartbeat is younger than its ttl."""

    async def heartbeat(self, worker: WorkerInfo) -> bool:
        """Insert or refresh the pool's registry file (and delete dead ones); return whether it must stop."""
        return await self._run(self._heartbeat, worker)

    def _heartbeat(self, worker: WorkerInfo) -> bool:
        with self._layout.locked():
            current = now()
            known = None
            for entry in self._registry():
                if entry.id == worker.id:
                    known = entry
                elif not lifecycle.worker_alive(entry, current):
                    (self._layout.workers / entry.id).unlink(missing_ok=True)
            if known is not None and not lifecycle.worker_alive(known, current):
                known = None
            stop = known is not None and known.stop_requested
            entry = msgspec.structs.replace(
                worker,
                started_at=known.started_at if known else worker.started_at or current,
                heartbeat=current,
                stop_requested=stop,
            )
            self._layout.write(self._layout.workers / worker.id, encode(entry), durable=False)
            return stop

    async def workers(self) -> builtins.list[WorkerInfo]:
        """Return the live pools, oldest first."""
        entries = await self._run(self._registry)
        current = now()
        live = [w for w in entries if lifecycle.worker_alive(w, current)]
        return sorted(live, key=lambda w: (w.started_at or w.heartbeat, w.id))

    async def request_stop(self, worker_id: str) -> bool:
        """Flag a live pool's entry; the pool drains and stops at its next heartbeat."""
        return await self._run(self._request_stop, worker_id)

    def _request_stop(self, worker_id: str) -> bool:
        with self._layout.locked():
            known = next((w for w in self._registry() if w.id == worker_id), None)
            if known is None or not lifecycle.worker_alive(known, now()):
                return False
            stopping = msgspec.structs.replace(known, stop_requested=True)
            self._layout.write(self._layout.workers / known.id, encode(stopping), durable=False)
            return True

    async def unregister(self, worker_id: str) -> None:
        """Remove the pool's registry file."""
        await self._run(self._unregister, worker_id)

    def _unregister(self, worker_id: str) -> None:
        with self._layout.locked():
            for entry in self._registry():
                if entry.id == worker_id:
                    (self._layout.workers / entry.id).unlink(missing_ok=True)


class FileMaintenance(FileResults):
    """``EventStore`` and ``MaintenanceStore``: the event log, purge, leftovers, the health check."""

    _swept_at = -_SWEEP_SECONDS

    async def events(
        self, *, task_id: str | None = None, since: int = 0, limit: int = 1000
    ) -> builtins.list[TaskEvent]:
        """Return recorded events with ``seq > since``, oldest first (of one task, or all)."""
        return await self._run(lambda: read_events(self._layout, task_id=task_id, since=since, limit=limit))

    async def last_event_seq(self) -> int:
        """Return the ``seq`` of the newest recorded event (0 when there is none)."""
        return await self._run(last_seq, self._layout)

    async def purge(
        self, *, finished_before: datetime | None = None, statuses: Sequence[TaskStatus] = (), everything: bool = False
    ) -> int:
        """Delete finished tasks past their result TTL (or everything, kept callables too), with events and output."""
        picked = {TaskStatus(s) for s in statuses}
        return await self._run(self._purge, finished_before, picked, everything)

    def _purge(self, finished_before: datetime | None, statuses: set[TaskStatus], everything: bool) -> int:
        """Find what goes without the lock (a quiet store costs no lock), then delete what still goes under it."""
        if not everything and not any(self._purgeable(r, finished_before, statuses) for r in self._records()):
            return 0
        with self._layout.locked():
            doomed = [r for r in self._records() if everything or self._purgeable(r, finished_before, statuses)]
            for record in doomed:
                self._layout.remove(record)
            if doomed or everything:
                drop_events(self._layout, None if everything else {r.task.id for r in doomed})
            if everything:
                for kept in self._layout.callables.glob("*"):
                    kept.unlink(missing_ok=True)
            return len(doomed)

    @staticmethod
    def _purgeable(record: Record, finished_before: datetime | None, statuses: set[TaskStatus]) -> bool:
        return lifecycle.purgeable(record.task, now(), finished_before=finished_before, statuses=statuses)

    async def lead_maintenance(self, runner: str, *, term: float) -> bool:
        """Return True: every caller leads (one machine; a rescue is fenced on its lease either way)."""
        return True

    async def checkpoint(self) -> None:
        """Delete temporary files left by writers that died (about once a minute; cheap otherwise)."""
        if time.monotonic() - self._swept_at < _SWEEP_SECONDS:
            return
        self._swept_at = time.monotonic()
        await self._run(self._sweep)

    def _sweep(self) -> None:
        cutoff = time.time() - _SCRATCH_SECONDS
        for entry in os.scandir(self._layout.tmp):
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
            except FileNotFoundError:
                continue

    async def check(self, *, stale_after: float) -> StoreHealth:
        """Report tasks per status, lapsed leases and unreadable task files.

        Raises:
            StorageError: there is no store in the folder (nothing is created).

        """
        if not await self._run(self._layout.exists):
            raise StorageError(f"no store at {self.path}: the folder holds no file store (check creates nothing)")
        counts, lapsed, problems = await self._run(self._inspect)
        current = now()
        stale = [
            t.id
            for t in lapsed
            if t.lease_until is not None and t.lease_until <= current - timedelta(seconds=stale_after)
        ]
        return health_report(
            self.url,
            counts=counts,
            expired_leases=len(lapsed),
            stale_ids=stale,
            stale_after=stale_after,
            problems=problems,
        )

    def _inspect(self) -> tuple[dict[TaskStatus, int], builtins.list[Task], builtins.list[str]]:
        counts = dict.fromkeys(TaskStatus, 0)
        lapsed: builtins.list[Task] = []
        unreadable = []
        current = now()
        for task_id in self._layout.task_ids():
            try:
                record = self._layout.read(task_id)
            except StorageError:
                unreadable.append(task_id)
                continue
            if record is None:
                continue
            counts[record.task.status] += 1
            if lifecycle.lease_lapsed(record.task, current):
                lapsed.append(record.task)
        lapsed.sort(key=lambda t: (t.lease_until, t.id))
        problems = (
            [f"{len(unreadable)} task file(s) cannot be read: {', '.join(unreadable[:10])}"] if unreadable else []
        )
        return counts, lapsed, problems
