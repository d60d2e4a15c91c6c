"""In-process store for tests and throwaway work: same contract as the others, nothing persists.

Every method runs without awaiting inside, so each is atomic on its event loop; a lock also
makes it safe when a sync wrapper's loop and a pool's loop share one store.
"""

from __future__ import annotations

import asyncio
import builtins
import secrets
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone

import msgspec

from omniq_nb.models import (
    EventKind,
    StoreHealth,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    WorkerInfo,
    check_transition,
)
from omniq_nb.opening import OpensAndCloses
from omniq_nb.storage.base import health_report, redact_url

_UTC = timezone.utc
_EVENT_KINDS = {
    TaskStatus.RUNNING: EventKind.STARTED,
    TaskStatus.SUCCEEDED: EventKind.SUCCEEDED,
    TaskStatus.FAILED: EventKind.FAILED,
    TaskStatus.CANCELLED: EventKind.CANCELLED,
    TaskStatus.EXPIRED: EventKind.EXPIRED,
}


class MemoryStorage(OpensAndCloses):
    """A store that lives in this process's memory (``memory://``).

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
        self._lock = threading.Lock()

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release; the data stays until the object is dropped."""

    def clone(self) -> MemoryStorage:
        """Return this same store: its data lives in this object, and every method is thread-safe."""
        return self

    async def now(self) -> datetime:
        """Return this process's clock."""
        return datetime.now(_UTC)

    async def insert(self, tasks: Iterable[Task]) -> None:
        """Add new tasks, all or none."""
        tasks = list(tasks)
        with self._lock:
            for task in tasks:
                if task.id in self._tasks:
                    raise ValueError(f"a task with id {task.id!r} already exists; nothing was inserted")
            for task in tasks:
                self._tasks[task.id] = msgspec.structs.replace(task)
                self._record(task, EventKind.ENQUEUED, at=task.created_at)

    async def insert_many(self, template: Task, entries: Iterable[tuple[str, bytes]]) -> None:
        """Add tasks equal to ``template`` but for id and payload, all or none."""
        periodic = template.series is not None
        await self.insert(
            msgspec.structs.replace(template, id=task_id, payload=payload, series=task_id if periodic else None)
            for task_id, payload in entries
        )

    async def get(self, task_id: str) -> Task | None:
        """Return a copy of the task, or ``None``."""
        with self._lock:
            task = self._tasks.get(task_id)
            return None if task is None else msgspec.structs.replace(task)

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Return copies of the tasks that exist."""
        with self._lock:
            return [msgspec.structs.replace(self._tasks[i]) for i in task_ids if i in self._tasks]

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
            return [msgspec.structs.replace(t) for t in found[:limit]]

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

    async def claim(
        self,
        *,
        queues: Sequence[str],
        limit: int,
        lease: float,
        worker: str,
        unowned_only: bool = False,
        owner: str | None = None,
    ) -> builtins.list[Task]:
        """Claim up to ``limit`` ready tasks: priority, then eta, then enqueue order."""
        with self._lock:
            now = datetime.now(_UTC)
            order = {task_id: n for n, task_id in enumerate(self._tasks)}
            live = {w.kernel for w in self._live(now)} if unowned_only else set()
            ready = sorted(
                (
                    t
                    for t in self._tasks.values()
                    if t.status is TaskStatus.PENDING
                    and t.queue in queues
                    and t.eta <= now
                    and (t.expires_at is None or t.expires_at > now)
                    and (not unowned_only or t.owner is None or t.owner == owner or t.owner not in live)
                ),
                key=lambda t: (-t.priority, t.eta, order[t.id]),
            )[:limit]
            claimed = []
            for task in ready:
                task.status, task.attempt = TaskStatus.RUNNING, task.attempt + 1
                task.lease_token, task.lease_until = secrets.token_hex(16), now + timedelta(seconds=lease)
                task.run_id = secrets.token_hex(8)
                task.started_at, task.worker = now, worker
                task.progress, task.progress_done, task.progress_total, task.progress_message = 0.0, 0.0, None, None
                self._record(task, EventKind.STARTED)
                claimed.append(msgspec.structs.replace(task))
            return claimed

    async def heartbeat(self, worker: WorkerInfo) -> bool:
        """Insert or refresh the pool's registry entry (and drop dead ones); return whether it must stop."""
        with self._lock:
            now = datetime.now(_UTC)
            live = {w.id: w for w in self._live(now)}
            known = live.get(worker.id)
            self._workers = live
            self._workers[worker.id] = msgspec.structs.replace(
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
            if known is None or not _alive(known, datetime.now(_UTC)):
                return False
            self._workers[worker_id] = msgspec.structs.replace(known, stop_requested=True)
            return True

    async def unregister(self, worker_id: str) -> None:
        """Remove the pool's registry entry."""
        with self._lock:
            self._workers.pop(worker_id, None)

    def _live(self, now: datetime) -> builtins.list[WorkerInfo]:
        """Return the registry entries whose heartbeat is younger than their ttl."""
        return [w for w in self._workers.values() if _alive(w, now)]

    async def renew(self, *, leases: Mapping[str, str], lease: float) -> set[str]:
        """Extend the leases still held."""
        with self._lock:
            until = datetime.now(_UTC) + timedelta(seconds=lease)
            held = set()
            for task_id, token in leases.items():
                task = self._held(task_id, token)
                if task is not None:
                    task.lease_until = until
                    held.add(task_id)
            return held

    async def progress(
        self, *, task_id: str, lease_token: str, done: float, total: float | None, message: str | None
    ) -> bool:
        """Store progress of a running task, fenced on its lease."""
        with self._lock:
            task = self._held(task_id, lease_token)
            if task is None:
                return False
            task.progress_done, task.progress_total, task.progress_message = done, total, message
            task.progress = min(1.0, max(0.0, done / total)) if total else 0.0
            self._record(task, EventKind.PROGRESS, message=message)
            return True

    async def settle(
        self, results: Sequence[TaskResult], *, successors: Mapping[str, Task] = {}
    ) -> builtins.list[Task]:
        """Apply attempt outcomes, each fenced on its lease; insert accepted successors."""
        for result in results:
            check_transition(TaskStatus.RUNNING, result.status)
        with self._lock:
            now = datetime.now(_UTC)
            accepted = []
            for r in results:
                task = self._held(r.task_id, r.lease_token)
                if task is None or (r.rescue and task.lease_until is not None and task.lease_until > now):
                    continue
                task.status, task.result, task.error = r.status, r.result, r.error
                task.eta = r.eta or task.eta
                task.lease_token = task.lease_until = None
                task.finished_at = None if r.status is TaskStatus.PENDING else now
                if r.status is TaskStatus.SUCCEEDED:
                    task.progress = 1.0
                kind = EventKind.RETRIED if r.status is TaskStatus.PENDING else _EVENT_KINDS[r.status]
                self._record(task, kind, message=r.error.message if r.error else None)
                accepted.append(msgspec.structs.replace(task))
                following = successors.get(task.id)
                if following is not None and not self._series_busy(following.series):
                    self._tasks[following.id] = msgspec.structs.replace(following)
                    self._record(following, EventKind.ENQUEUED, at=following.created_at)
            return accepted

    async def release(self, *, leases: Mapping[str, str]) -> builtins.list[Task]:
        """Hand running tasks back to pending and give back their attempt."""
        with self._lock:
            released = []
            for task_id, token in leases.items():
                task = self._held(task_id, token)
                if task is None:
                    continue
                task.status, task.attempt = TaskStatus.PENDING, task.attempt - 1
                task.lease_token = task.lease_until = task.worker = None
                self._record(task, EventKind.RELEASED)
                released.append(msgspec.structs.replace(task))
            return released

    async def expired_leases(self, *, limit: int) -> builtins.list[Task]:
        """Return running tasks whose lease ran out."""
        now = datetime.now(_UTC)
        with self._lock:
            return [
                msgspec.structs.replace(t)
                for t in self._tasks.values()
                if t.status is TaskStatus.RUNNING and t.lease_until is not None and t.lease_until <= now
            ][:limit]

    async def cancel(self, task_id: str) -> Task | None:
        """Cancel a pending or running task, and the unfinished runs of its periodic series."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                return None
            for other in list(self._tasks.values()):
                same = other is task or (task.series is not None and other.series == task.series)
                if same and other.status in (TaskStatus.PENDING, TaskStatus.RUNNING):
                    other.status, other.finished_at, other.lease_until = TaskStatus.CANCELLED, datetime.now(_UTC), None
                    self._record(other, EventKind.CANCELLED)
            return msgspec.structs.replace(task)

    async def requeue(self, task_id: str) -> Task | None:
        """Put a failed, cancelled or expired task back to pending with one more attempt allowed."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                return None
            if task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED):
                now = datetime.now(_UTC)
                if task.expires_at is not None:
                    task.expires_at = now + (task.expires_at - task.created_at)
                task.status, task.eta, task.finished_at = TaskStatus.PENDING, now, None
                task.retries = max(task.retries, task.attempt)
                task.lease_token = task.lease_until = None
                self._record(task, EventKind.RETRIED)
            return msgspec.structs.replace(task)

    async def expire(self) -> builtins.list[Task]:
        """Move pending tasks past ``expires_at`` to expired."""
        with self._lock:
            now = datetime.now(_UTC)
            expired = []
            for task in self._tasks.values():
                if task.status is TaskStatus.PENDING and task.expires_at is not None and task.expires_at <= now:
                    task.status, task.finished_at = TaskStatus.EXPIRED, now
                    self._record(task, EventKind.EXPIRED)
                    expired.append(msgspec.structs.replace(task))
            return expired

    async def purge(
        self, *, finished_before: datetime | None = None, statuses: Sequence[TaskStatus] = (), everything: bool = False
    ) -> int:
        """Delete finished tasks past their result TTL (or everything), with their events."""
        with self._lock:
            now = datetime.now(_UTC)
            picked = {TaskStatus(s) for s in statuses} or {s for s in TaskStatus if s.is_terminal}
            doomed = {
                t.id
                for t in self._tasks.values()
                if everything or (t.status.is_terminal and _purgeable(t, now, finished_before, picked))
            }
            for task_id in doomed:
                del self._tasks[task_id]
            self._events = [e for e in self._events if e.task_id not in doomed]
            return len(doomed)

    async def events(
        self, *, task_id: str | None = None, since: int = 0, limit: int = 1000
    ) -> builtins.list[TaskEvent]:
        """Return events with ``seq > since``, oldest first."""
        with self._lock:
            found = [e for e in self._events if e.seq > since and (task_id is None or e.task_id == task_id)]
        return found[:limit]

    async def checkpoint(self) -> None:
        """Nothing to do: a memory store has no log."""

    async def last_event_seq(self) -> int:
        """Return the newest event's ``seq`` (0 when there is none)."""
        return self._seq

    async def wait_for_tasks(self, timeout: float) -> None:
        """Sleep ``timeout`` seconds: in one process, the queue's own wake-ups serve instead."""
        await asyncio.sleep(timeout)

    async def check(self, *, stale_after: float) -> StoreHealth:
        """Report tasks per status and lapsed leases (nothing else can go wrong in memory)."""
        counts = await self.count()
        now = datetime.now(_UTC)
        with self._lock:
            lapsed = sorted(
                (t.lease_until, t.id)
                for t in self._tasks.values()
                if t.status is TaskStatus.RUNNING and t.lease_until is not None and t.lease_until <= now
            )
        stale = [task_id for until, task_id in lapsed if until <= now - timedelta(seconds=stale_after)]
        return health_report(
            self.url, counts=counts, expired_leases=len(lapsed), stale_ids=stale, stale_after=stale_after
        )

    def _series_busy(self, series: str | None) -> bool:
        """Return True when the series already has an unfinished run (it must not fork)."""
        return any(
            t.series == series and t.status in (TaskStatus.PENDING, TaskStatus.RUNNING) for t in self._tasks.values()
        )

    def _held(self, task_id: str, token: str) -> Task | None:
        task = self._tasks.get(task_id)
        if task is None or task.status is not TaskStatus.RUNNING or task.lease_token != token:
            return None
        return task

    def _record(self, task: Task, kind: EventKind, *, at: datetime | None = None, message: str | None = None) -> None:
        if not self._events_on:
            return
        self._seq += 1
        self._events.append(
            TaskEvent(
                seq=self._seq,
                task_id=task.id,
                kind=kind,
                at=at or datetime.now(_UTC),
                status=task.status,
                attempt=task.attempt,
                progress=task.progress,
                message=message,
                run_id=task.run_id,
            )
        )


def _alive(worker: WorkerInfo, now: datetime) -> bool:
    return worker.heartbeat is not None and worker.heartbeat + timedelta(seconds=worker.ttl) > now


def _purgeable(task: Task, now: datetime, finished_before: datetime | None, picked: set[TaskStatus]) -> bool:
    finished = task.finished_at
    if finished is None:
        return False
    if task.result_ttl is not None and finished + timedelta(seconds=task.result_ttl) <= now:
        return True
    return finished_before is not None and finished < finished_before and task.status in picked
