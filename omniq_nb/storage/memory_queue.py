"""The memory store's ``QueueStore`` role: the task transitions, each under the store's lock."""

from __future__ import annotations

import asyncio
import builtins
import secrets
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone

from omniq_nb.models import DependencyMove, EventKind, Task, TaskResult, TaskStatus
from omniq_nb.storage import lifecycle
from omniq_nb.storage.memory_base import MemoryResults, copy

__all__ = ["MemoryQueue"]

_UTC = timezone.utc


class MemoryQueue(MemoryResults):
    """``QueueStore``: the transitions, each under the lock."""

    _linked = False  # whether any task ever had dependencies (``dependents`` scans only then)

    async def insert(self, tasks: Iterable[Task]) -> None:
        """Add new tasks, all or none."""
        tasks = builtins.list(tasks)
        with self._lock:
            self._add(tasks)

    def _add(self, tasks: Sequence[Task]) -> None:
        """Add new tasks, all or none (the caller holds the lock)."""
        for task in tasks:
            if task.id in self._tasks:
                raise ValueError(f"a task with id {task.id!r} already exists; nothing was inserted")
        for task in tasks:
            self._tasks[task.id] = copy(task)
            self._linked = self._linked or bool(task.depends_on)
            if task.cache_key is not None:
                self._cache.setdefault(task.cache_key, []).append(task.id)
            self._record(task, EventKind.ENQUEUED, at=task.created_at)

    async def insert_many(
        self, template: Task, entries: Iterable[tuple[str, bytes]], kept: tuple[str, bytes] | None = None
    ) -> None:
        """Add tasks equal to ``template`` but for id and payload, all or none, keeping ``kept`` with them."""
        tasks = builtins.list(lifecycle.batch_tasks(template, entries))
        with self._lock:
            self._add(tasks)
            if kept is not None:
                self._callables.setdefault(*kept)

    async def kept_callables(self, digests: Collection[str]) -> dict[str, bytes]:
        """Return the kept callables of these digests (those not kept are left out)."""
        with self._lock:
            return {digest: self._callables[digest] for digest in digests if digest in self._callables}

    async def claim(
        self,
        *,
        queues: Sequence[str],
        limit: int,
        lease: float,
        worker: str,
        unowned_only: bool = False,
        owner: str | None = None,
        skip_kinds: Sequence[str] = (),
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
                    if lifecycle.claimable(t, queues, now)
                    and (not unowned_only or t.owner is None or t.owner == owner or t.owner not in live)
                    and (t.kind is None or t.kind not in skip_kinds)
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
                claimed.append(copy(task))
            return claimed

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
            task.progress = lifecycle.progress_fraction(done, total)
            self._record(task, EventKind.PROGRESS, message=message)
            return True

    async def settle(
        self, results: Sequence[TaskResult], *, successors: Mapping[str, Task] = {}
    ) -> builtins.list[Task]:
        """Apply attempt outcomes, each fenced on its lease; insert accepted successors."""
        lifecycle.check_outcomes(results)
        with self._lock:
            now = datetime.now(_UTC)
            accepted = []
            for r in results:
                task = self._tasks.get(r.task_id)
                if task is None or not lifecycle.outcome_applies(task, r, now):
                    continue
                task.status, task.result, task.error = r.status, r.result, r.error
                task.eta = r.eta or task.eta
                task.lease_token = task.lease_until = None
                task.finished_at = None if r.status is TaskStatus.PENDING else now
                if r.status is TaskStatus.SUCCEEDED:
                    task.progress = 1.0
                self._record(task, lifecycle.entered(r.status), message=r.error.message if r.error else None)
                accepted.append(copy(task))
                following = successors.get(task.id)
                if following is not None and not self._series_busy(following.series):
                    self._tasks[following.id] = copy(following)
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
                released.append(copy(task))
            return released

    async def expired_leases(self, *, limit: int) -> builtins.list[Task]:
        """Return running tasks whose lease ran out."""
        now = datetime.now(_UTC)
        with self._lock:
            return [copy(t) for t in self._tasks.values() if lifecycle.lease_lapsed(t, now)][:limit]

    async def cancel(self, task_id: str) -> Task | None:
        """Cancel a pending or running task, and the unfinished runs of its periodic series."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                return None
            for other in builtins.list(self._tasks.values()):
                same = other is task or (task.series is not None and other.series == task.series)
                if same and other.status in lifecycle.UNFINISHED:
                    other.status, other.finished_at, other.lease_until = TaskStatus.CANCELLED, datetime.now(_UTC), None
                    self._record(other, EventKind.CANCELLED)
            return copy(task)

    async def dependents(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Return the tasks that depend on any of ``task_ids`` (no scan while no task ever had dependencies)."""
        wanted = set(task_ids)
        with self._lock:
            if not self._linked:
                return []
            return [copy(t) for t in self._tasks.values() if wanted.intersection(t.depends_on)]

    async def move_dependents(self, moves: Sequence[DependencyMove]) -> builtins.list[Task]:
        """Apply the moves whose task is still in their source status."""
        with self._lock:
            now = datetime.now(_UTC)
            moved = []
            for move in moves:
                task = self._tasks.get(move.task_id)
                if task is not None and lifecycle.move_dependent(task, move, now):
                    message = move.error.message if move.error else None
                    self._record(task, lifecycle.moved_event(move), message=message)
                    moved.append(copy(task))
            return moved

    async def requeue(self, task_id: str) -> Task | None:
        """Put a failed, cancelled or expired task back to pending with one more attempt allowed."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                return None
            if task.status in lifecycle.REQUEUEABLE:
                now = datetime.now(_UTC)
                task.expires_at = lifecycle.requeued_expiry(task, now)
                task.status, task.eta, task.finished_at = TaskStatus.PENDING, now, None
                task.retries = max(task.retries, task.attempt)
                task.lease_token = task.lease_until = None
                self._record(task, EventKind.RETRIED)
            return copy(task)

    async def expire(self) -> builtins.list[Task]:
        """Move pending tasks past ``expires_at`` to expired."""
        with self._lock:
            now = datetime.now(_UTC)
            expired = []
            for task in self._tasks.values():
                if lifecycle.due_to_expire(task, now):
                    task.status, task.finished_at = TaskStatus.EXPIRED, now
                    self._record(task, EventKind.EXPIRED)
                    expired.append(copy(task))
            return expired

    async def forget_cached(self, *, name: str | None = None) -> int:
        """Clear the cache key of the tasks that have one (named ``name``, or all)."""
        with self._lock:
            forgotten = 0
            for key, ids in builtins.list(self._cache.items()):
                kept = []
                for task_id in ids:
                    task = self._tasks.get(task_id)
                    if task is None or task.cache_key != key:
                        continue
                    if name is None or task.name == name:
                        task.cache_key = None
                        forgotten += 1
                    else:
                        kept.append(task_id)
                self._cache[key] = kept
                if not kept:
                    del self._cache[key]
            return forgotten

    async def wait_for_tasks(self, timeout: float) -> None:
        """Sleep ``timeout`` seconds: in one process, the queue's own wake-ups serve instead."""
        await asyncio.sleep(timeout)

    def _series_busy(self, series: str | None) -> bool:
        """Return True when the series already has an unfinished run (it must not fork)."""
        return any(t.series == series and t.status in lifecycle.UNFINISHED for t in self._tasks.values())
