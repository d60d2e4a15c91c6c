"""The file store's ``QueueStore`` role: each transition is one change under the store lock.

A claim lists the pending markers of the asked queues, sorts their names (priority, eta,
enqueue order are in the name) and reads only the records of due candidates, best first,
until it has ``limit`` tasks. Every later write by a worker (renew, progress, settle,
release) reads the record under the lock and writes only while the lease token still
holds a running task (``lifecycle.holds_lease``), so the check and the write cannot be
separated by another process's change.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import secrets
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path

import msgspec

from omniq_nb.errors import StorageError
from omniq_nb.models import EventKind, Task, TaskResult, TaskStatus
from omniq_nb.storage import lifecycle
from omniq_nb.storage.file_base import Record, check_task_id, parse_marker
from omniq_nb.storage.file_change import Change, change
from omniq_nb.storage.file_results import FileResults

logger = logging.getLogger(__name__)

__all__ = ["FileQueue"]

copy = msgspec.structs.replace
_HEX = frozenset("0123456789abcdef")


def _checked_digest(digest: str) -> str:
    """Return ``digest`` once it is a SHA-256 digest in hex (it names a file)."""
    if len(digest) != 64 or not _HEX.issuperset(digest):
        raise ValueError(f"not a SHA-256 digest in hex: {digest!r}")
    return digest


class FileQueue(FileResults):
    """``QueueStore``: the transitions, each under the store lock, in a worker thread."""

    async def insert(self, tasks: Iterable[Task]) -> None:
        """Add new tasks; a duplicate id (in the store or the batch) inserts none of them."""
        batch = builtins.list(tasks)
        if batch:
            await self._run(self._insert, batch)
            self._notify()

    async def insert_many(
        self, template: Task, entries: Iterable[tuple[str, bytes]], kept: tuple[str, bytes] | None = None
    ) -> None:
        """Add tasks equal to ``template`` but for id and payload, keeping ``kept`` under the same lock."""
        batch = builtins.list(lifecycle.batch_tasks(template, entries))
        if batch:
            await self._run(self._insert, batch, kept)
            self._notify()

    def _keep_callable(self, digest: str, body: bytes) -> None:
        path = self._layout.callables / _checked_digest(digest)
        if not path.exists():
            self._layout.write(path, body, durable=True)
            self._layout.sync_folders(self._layout.callables)

    async def kept_callables(self, digests: Collection[str]) -> dict[str, bytes]:
        """Return the kept callables of these digests (those not kept are left out)."""
        return await self._run(self._kept_callables, builtins.list(digests))

    def _kept_callables(self, digests: builtins.list[str]) -> dict[str, bytes]:
        found = {}
        for digest in digests:
            with contextlib.suppress(FileNotFoundError):
                found[digest] = (self._layout.callables / _checked_digest(digest)).read_bytes()
        return found

    def _insert(self, tasks: Sequence[Task], kept: tuple[str, bytes] | None = None) -> None:
        ids = [t.id for t in tasks]
        for task_id in ids + [dependency for t in tasks for dependency in t.depends_on]:
            check_task_id(task_id)
        with change(self._layout, events=self._events, durable=True) as work:
            clash = next((i for n, i in enumerate(ids) if i in ids[:n] or self._layout.read(i) is not None), None)
            if clash is not None:
                raise ValueError(f"a task with id {clash!r} already exists; nothing was inserted")
            if kept is not None:  # before the tasks that name it, durable with them
                self._keep_callable(*kept)
            if len(tasks) > 1:
                work.begin_batch(tasks)
            for task in tasks:
                work.put(Record(task, work.next_seq()), None)
                work.record(task, EventKind.ENQUEUED, at=task.created_at)

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
        if limit <= 0 or not queues:
            return []
        return await self._run(
            self._claim, builtins.list(queues), limit, lease, worker, unowned_only, owner, tuple(skip_kinds)
        )

    def _claim(
        self,
        queues: Sequence[str],
        limit: int,
        lease: float,
        worker: str,
        unowned_only: bool,
        owner: str | None,
        skip_kinds: Sequence[str],
    ) -> builtins.list[Task]:
        with change(self._layout, events=self._events, durable=False) as work:
            live = self._live_kernels(work) if unowned_only else set()
            claimed: builtins.list[Task] = []
            for record, marker in self._due(work, queues):
                task = copy(record.task)
                if unowned_only and task.owner is not None and task.owner != owner and task.owner in live:
                    continue
                if task.kind is not None and task.kind in skip_kinds:
                    continue
                task.status, task.attempt = TaskStatus.RUNNING, task.attempt + 1
                task.lease_token, task.lease_until = secrets.token_hex(16), work.now + timedelta(seconds=lease)
                task.run_id, task.started_at, task.worker = secrets.token_hex(8), work.now, worker
                task.progress, task.progress_done, task.progress_total, task.progress_message = 0.0, 0.0, None, None
                try:
                    work.claim(record, task, marker)
                except (OSError, StorageError):  # a full disk, say: keep what is claimed (a half claim is rescued)
                    if not claimed:
                        raise
                    logger.warning("the file store %s: a claim stopped early", self.url, exc_info=True)
                    break
                work.record(task, EventKind.STARTED)
                claimed.append(task)
                if len(claimed) >= limit:
                    break
            return claimed

    def _due(self, work: Change, queues: Sequence[str]) -> Iterable[tuple[Record, Path]]:
        """Yield the claimable tasks of ``queues``, best first; drop stale markers on the way."""
        now_us = round(work.now.timestamp() * 1_000_000)
        names = []
        for queue in dict.fromkeys(queues):
            folder = self._layout.queue_folder(queue)
            try:
                entries = os.listdir(folder)
            except FileNotFoundError:
                continue
            names += [(name, folder) for name in entries]
        names.sort()
        for name, folder in names:
            parsed = parse_marker(name)
            if parsed is None or parsed[0] > now_us:
                continue
            try:
                record = self._layout.read(parsed[1])
            except StorageError as exc:  # one damaged task file must not stop the queue behind it
                if parsed[1] not in self._unreadable:
                    self._unreadable.add(parsed[1])
                    logger.error("%s; claims pass it over", exc)
                continue
            if record is None or folder / name not in self._layout.markers(record):
                (folder / name).unlink(missing_ok=True)  # left by a crash: the record moved on
                continue
            if lifecycle.claimable(record.task, queues, work.now):
                yield record, folder / name

    def _live_kernels(self, work: Change) -> set[str | None]:
        return {w.kernel for w in self._registry() if lifecycle.worker_alive(w, work.now)}

    async def renew(self, *, leases: Mapping[str, str], lease: float) -> set[str]:
        """Extend the leases still held; return the ids whose renewal held."""
        if not leases:
            return set()
        return await self._run(self._renew, dict(leases), lease)

    def _renew(self, leases: Mapping[str, str], lease: float) -> set[str]:
        held = set()
        with change(self._layout, events=self._events, durable=False) as work:
            for task_id, token in leases.items():
                record = self._held(task_id, token)
                if record is not None:
                    work.update(record, copy(record.task, lease_until=work.now + timedelta(seconds=lease)))
                    held.add(task_id)
        return held

    async def progress(
        self, *, task_id: str, lease_token: str, done: float, total: float | None, message: str | None
    ) -> bool:
        """Store progress of a running task, fenced on its lease; return whether it was written."""
        return await self._run(self._progress, task_id, lease_token, done, total, message)

    def _progress(self, task_id: str, token: str, done: float, total: float | None, message: str | None) -> bool:
        with change(self._layout, events=self._events, durable=False) as work:
            record = self._held(task_id, token)
            if record is None:
                return False
            task = copy(record.task, progress_done=done, progress_total=total, progress_message=message)
            task.progress = lifecycle.progress_fraction(done, total)
            work.update(record, task)
            work.record(task, EventKind.PROGRESS, message=message)
            return True

    def _may_follow(self, following: Task) -> bool:
        """Return whether a periodic task's next run may be inserted: it is new and its series is idle."""
        if self._layout.read(following.id) is not None:
            return False
        series = following.series
        return series is None or not any(r.task.series == series for r in self._unfinished())

    async def settle(
        self, results: Sequence[TaskResult], *, successors: Mapping[str, Task] = {}
    ) -> builtins.list[Task]:
        """Apply attempt outcomes, each fenced on its lease; insert successors of accepted ones."""
        lifecycle.check_outcomes(results)
        if not results:
            return []
        accepted = await self._run(self._settle, builtins.list(results), dict(successors))
        if any(t.status is TaskStatus.PENDING for t in accepted) or successors:
            self._notify()
        return accepted

    def _settle(self, results: Sequence[TaskResult], successors: Mapping[str, Task]) -> builtins.list[Task]:
        accepted = []
        with change(self._layout, events=self._events, durable=True) as work:
            for r in results:
                record = self._layout.read(r.task_id)
                if record is None or not lifecycle.outcome_applies(record.task, r, work.now):
                    continue
                task = copy(record.task, status=r.status, result=r.result, error=r.error, lease_token=None)
                task.eta, task.lease_until = r.eta or task.eta, None
                task.finished_at = None if r.status is TaskStatus.PENDING else work.now
                if r.status is TaskStatus.SUCCEEDED:
                    task.progress = 1.0
                work.update(record, task)
                work.record(task, lifecycle.entered(r.status), message=r.error.message if r.error else None)
                accepted.append(task)
                following = successors.get(task.id)
                if following is not None and self._may_follow(following):
                    work.put(Record(following, work.next_seq()), None)
                    work.record(following, EventKind.ENQUEUED, at=following.created_at)
        return accepted
