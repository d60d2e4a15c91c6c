"""The file store's other ``QueueStore`` transitions: hand-back, rescue, cancel, dependents, requeue, expiry, forget.

Each is one change under the store lock (``file_change``), fsync'd, like the SQLite store's
transactions; the task's record is read under the lock, so no other process changes it
between the check and the write. ``dependents`` takes no lock: it lists the dependency
markers ``dependents/<id>/`` of each asked id (none, mostly: one failed listing) and reads
the records they name.
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Mapping, Sequence

import msgspec

from omniq_nb.models import DependencyMove, EventKind, Task, TaskStatus
from omniq_nb.storage import lifecycle
from omniq_nb.storage.file_base import now
from omniq_nb.storage.file_change import change
from omniq_nb.storage.file_results import FileResults

__all__ = ["FileAdmin"]

copy = msgspec.structs.replace


class FileAdmin(FileResults):
    """``QueueStore``: release, expired leases, cancel, requeue and expiry."""

    async def release(self, *, leases: Mapping[str, str]) -> builtins.list[Task]:
        """Hand running tasks back to ``pending`` without using an attempt (graceful stop)."""
        if not leases:
            return []
        released = await self._run(self._release, dict(leases))
        if released:
            self._notify()
        return released

    def _release(self, leases: Mapping[str, str]) -> builtins.list[Task]:
        released = []
        with change(self._layout, events=self._events, durable=True) as work:
            for task_id, token in leases.items():
                record = self._held(task_id, token)
                if record is None:
                    continue
                task = copy(record.task, status=TaskStatus.PENDING, attempt=record.task.attempt - 1)
                task.lease_token = task.lease_until = task.worker = None
                work.update(record, task)
                work.record(task, EventKind.RELEASED)
                released.append(task)
        return released

    async def expired_leases(self, *, limit: int) -> builtins.list[Task]:
        """Return running tasks whose lease has run out (found by their markers)."""
        return await self._run(self._expired_leases, limit)

    def _expired_leases(self, limit: int) -> builtins.list[Task]:
        current = now()
        found, strays = [], []
        for task_id in sorted(os.listdir(self._layout.running)):
            record = self._layout.read(task_id)
            if record is not None and lifecycle.lease_lapsed(record.task, current):
                found.append(record.task)
            elif record is None or record.task.status is not TaskStatus.RUNNING:
                strays.append(task_id)
        if strays:
            self._tidy_running(strays)
        found.sort(key=lambda t: (t.lease_until or current, t.id))
        return found[:limit]

    def _tidy_running(self, task_ids: builtins.list[str]) -> None:
        """Under the lock, fix running markers a crash left behind (a change under way is done by then).

        A pending task's marker there is a claim that died between its rename and its write:
        the task gets its pending markers back. Any other task's marker there just goes.
        """
        with self._layout.locked():
            for task_id in task_ids:
                marker = self._layout.running / task_id
                record = self._layout.read(task_id)
                if (record is not None and record.task.status is TaskStatus.RUNNING) or not marker.exists():
                    continue
                if record is not None and record.task.status is TaskStatus.PENDING:
                    folders = self._layout.put(record, None, durable=True)
                    self._layout.sync_folders(*folders)
                marker.unlink(missing_ok=True)

    async def cancel(self, task_id: str) -> Task | None:
        """Cancel a waiting, pending or running task, and the unfinished runs of its periodic series."""
        return await self._run(self._cancel, task_id)

    def _cancel(self, task_id: str) -> Task | None:
        with change(self._layout, events=self._events, durable=True) as work:
            record = self._layout.read(task_id)
            if record is None:
                return None
            series = record.task.series
            doomed = {task_id: record}
            if series is not None:
                doomed.update({r.task.id: r for r in self._unfinished() if r.task.series == series})
            result = record.task
            for old in doomed.values():
                if old.task.status not in lifecycle.UNFINISHED:
                    continue
                task = copy(old.task, status=TaskStatus.CANCELLED, finished_at=work.now, lease_until=None)
                work.update(old, task)
                work.record(task, EventKind.CANCELLED)
                if task.id == task_id:
                    result = task
            return result

    async def dependents(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Return the tasks that depend on any of ``task_ids``, found by their dependency markers."""
        if not task_ids:
            return []
        return await self._run(self._dependents, builtins.list(task_ids))

    def _dependents(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        wanted = set(task_ids)
        found = dict.fromkeys(i for task_id in task_ids for i in self._layout.dependent_ids(task_id))
        records = (self._layout.read(task_id) for task_id in found)
        return [r.task for r in records if r is not None and wanted.intersection(r.task.depends_on)]

    async def move_dependents(self, moves: Sequence[DependencyMove]) -> builtins.list[Task]:
        """Apply the moves whose task is still in their source status, in one change; return the tasks moved."""
        if not moves:
            return []
        moved = await self._run(self._move_dependents, builtins.list(moves))
        if any(t.status is TaskStatus.PENDING for t in moved):
            self._notify()
        return moved

    def _move_dependents(self, moves: Sequence[DependencyMove]) -> builtins.list[Task]:
        moved = []
        with change(self._layout, events=self._events, durable=True) as work:
            for move in moves:
                record = self._layout.read(move.task_id)
                if record is None:
                    continue
                task = copy(record.task)
                if lifecycle.move_dependent(task, move, work.now):
                    work.update(record, task)
                    work.record(task, lifecycle.moved_event(move), message=move.error.message if move.error else None)
                    moved.append(task)
        return moved

    async def forget_cached(self, *, name: str | None = None) -> int:
        """Clear the cache key of the tasks that have one (named ``name``, or all), found by their cache markers."""
        return await self._run(self._forget_cached, name)

    def _forget_cached(self, name: str | None) -> int:
        forgotten = 0
        with change(self._layout, events=self._events, durable=True) as work:
            for folder in os.listdir(self._layout.cache):
                with contextlib.suppress(FileNotFoundError):
                    for task_id in os.listdir(self._layout.cache / folder):
                        record = self._layout.read(task_id)
                        if record is None or record.task.cache_key is None or name not in (None, record.task.name):
                            continue
                        self._layout.drop_links([self._layout.cache / folder / task_id])  # before the record
                        work.update(record, copy(record.task, cache_key=None))
                        forgotten += 1
        return forgotten

    async def requeue(self, task_id: str) -> Task | None:
        """Put a failed, cancelled or expired task back to ``pending`` with one more attempt allowed."""
        requeued = await self._run(self._requeue, task_id)
        if requeued is not None and requeued.status is TaskStatus.PENDING:
            self._notify()
        return requeued

    def _requeue(self, task_id: str) -> Task | None:
        with change(self._layout, events=self._events, durable=True) as work:
            record = self._layout.read(task_id)
            if record is None or record.task.status not in lifecycle.REQUEUEABLE:
                return None if record is None else record.task
            task = copy(record.task, status=TaskStatus.PENDING, eta=work.now, finished_at=None)
            task.expires_at = lifecycle.requeued_expiry(record.task, work.now)
            task.retries = max(task.retries, task.attempt)
            task.lease_token = task.lease_until = None
            work.update(record, task)
            work.record(task, EventKind.RETRIED)
            return task

    async def expire(self) -> builtins.list[Task]:
        """Move pending tasks whose ``expires_at`` has passed to ``expired``; return them."""
        return await self._run(self._expire)

    def _expire(self) -> builtins.list[Task]:
        """Expire the tasks whose expiry marker is due; the listing takes no lock, so a quiet store costs one."""
        current = round(now().timestamp() * 1_000_000)
        due = []
        for name in os.listdir(self._layout.expiring):
            at, _, task_id = name.partition("-")
            if at.isdigit() and task_id and int(at) <= current:
                due.append((name, task_id))
        if not due:
            return []
        expired = []
        with change(self._layout, events=self._events, durable=True) as work:
            for name, task_id in sorted(due):
                marker = self._layout.expiring / name
                record = self._layout.read(task_id)
                if record is None or marker not in self._layout.markers(record):
                    marker.unlink(missing_ok=True)  # left by a crash: the record moved on
                    continue
                if lifecycle.due_to_expire(record.task, work.now):
                    task = copy(record.task, status=TaskStatus.EXPIRED, finished_at=work.now)
                    work.update(record, task)
                    work.record(task, EventKind.EXPIRED)
                    expired.append(task)
        return expired
