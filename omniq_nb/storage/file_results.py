"""The file store's state (folder, settings, wake-ups, the thread hop) and its ``ResultStore`` role.

Every method does its file work in one call on a worker thread (``asyncio.to_thread``), so the
event loop never waits on the disk, and one operation costs one thread hop however many
files it touches. Reads take no lock: each file is replaced whole, never written in place.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import partial
from typing import Self, TypeVar

from omniq_nb.errors import StorageError, StoreLost
from omniq_nb.models import Task, TaskStatus, WorkerInfo
from omniq_nb.opening import OpensAndCloses
from omniq_nb.storage import lifecycle
from omniq_nb.storage.file_base import FileLayout, Record, decode_worker, directory_of, now, parse_marker
from omniq_nb.storage.file_change import roll_back_batches
from omniq_nb.storage.wakeup import WakeChannel
from omniq_nb.urls import redact_url

__all__ = ["FileResults", "FileState"]

T = TypeVar("T")


class FileState(OpensAndCloses):
    """The folder of one file store, its settings and wake-up channel, and the helpers every role uses.

    Args:
        url: ``file:///absolute/folder``.
        events: record a ``TaskEvent`` per transition.

    Raises:
        StorageError: the URL is not ``file:///absolute/folder``.

    """

    supports_notify = True
    multi_host = False

    def __init__(self, url: str, *, events: bool = True) -> None:
        self.url = redact_url(url)
        self._url = url
        self.path = directory_of(url)
        self._layout = FileLayout(self.path)
        self._events = events
        self._wakeups = WakeChannel(str(self._layout.root / "queue"))  # its folder: <dir>/queue.wake
        self._identity: tuple[int, int] | None = None  # (device, inode) of the folder this store opened
        self._unreadable: set[str] = set()  # damaged task files already reported (claims pass them over)

    async def open(self) -> None:
        """Create the folder and its subfolders (owner-only) if needed.

        Raises:
            StorageError: the folder cannot be created, or lies on a network filesystem.

        """
        await self._run(self._open_folder)

    def _open_folder(self) -> None:
        self._layout.prepare()
        with self._layout.locked():
            roll_back_batches(self._layout)  # of a process that died mid-batch
        opened = os.stat(self._layout.root)
        self._identity = (opened.st_dev, opened.st_ino)

    def _lost(self) -> bool:
        """Return whether the folder this store opened is gone from its path (deleted or moved)."""
        if self._identity is None:
            return False
        try:
            now = os.stat(self._layout.root)
        except OSError:
            return True
        return (now.st_dev, now.st_ino) != self._identity

    async def close(self) -> None:
        """Unregister from wake-ups; the files stay."""
        self._wakeups.close()

    def clone(self) -> Self:
        """Return a new, unopened store on the same folder."""
        return type(self)(self._url, events=self._events)

    async def now(self) -> datetime:
        """Return the store's clock: this machine's, as every process on the folder shares it."""
        return now()

    async def wait_for_tasks(self, timeout: float) -> None:
        """Return when another process on this machine hints that it added ready tasks, or after ``timeout``."""
        await self._wakeups.wait(timeout)

    def _notify(self) -> None:
        self._wakeups.notify()

    async def _run(self, work: Callable[..., T], /, *args: object) -> T:
        """Run blocking file work on a worker thread: one hop per operation.

        Raises:
            StoreLost: the store's folder was deleted or moved while open.
            StorageError: the filesystem failed (a full disk, no permission).

        """
        try:
            return await asyncio.to_thread(partial(work, *args))
        except OSError as exc:
            if self._lost():
                raise StoreLost(
                    f"the file store's folder {self.path} was deleted or moved while in use; nothing more is "
                    "written to it. Reopen the queue to start a new store at that path."
                ) from exc
            if exc.errno == errno.ENOSPC:
                raise StorageError(
                    f"the disk holding the file store {self.path} is full ({exc}); free space and try again"
                ) from exc
            raise StorageError(f"the file store {self.path} failed: {exc}") from exc

    def _records(self) -> builtins.list[Record]:
        """Return every task's record (a task deleted meanwhile is left out)."""
        found = []
        for task_id in self._layout.task_ids():
            record = self._layout.read(task_id)
            if record is not None:
                found.append(record)
        return found

    def _registry(self) -> builtins.list[WorkerInfo]:
        """Return every registry entry, live or dead (an entry deleted meanwhile is left out)."""
        found = []
        for name in os.listdir(self._layout.workers):
            with contextlib.suppress(FileNotFoundError):
                found.append(decode_worker((self._layout.workers / name).read_bytes()))
        return found

    def _held(self, task_id: str, token: str) -> Record | None:
        record = self._layout.read(task_id)
        return record if record is not None and lifecycle.holds_lease(record.task, token) else None

    def _unfinished(self) -> Iterable[Record]:
        """Yield the records of pending and running tasks (found by their markers)."""
        ids = set(os.listdir(self._layout.running))
        for folder in self._layout.ready.iterdir():
            ids.update(parsed[1] for name in os.listdir(folder) if (parsed := parse_marker(name)) is not None)
        for task_id in ids:
            record = self._layout.read(task_id)
            if record is not None and record.task.status in lifecycle.UNFINISHED:
                yield record


class FileResults(FileState):
    """``ResultStore``: reads of task records."""

    async def get(self, task_id: str) -> Task | None:
        """Return the task with this id, or ``None``."""
        record = await self._run(self._layout.read, task_id)
        return None if record is None else record.task

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Return the tasks with these ids that exist."""
        return await self._run(self._read_many, builtins.list(task_ids))

    def _read_many(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        records = (self._layout.read(task_id) for task_id in task_ids)
        return [record.task for record in records if record is not None]

    async def list(
        self, *, statuses: Sequence[TaskStatus] = (), queue: str | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Return up to ``limit`` tasks, newest first (by enqueue order), filtered by status and queue.

        Reads every task's file: fine for listings, not for a hot path.
        """
        wanted = {TaskStatus(s) for s in statuses}
        records = await self._run(self._records)
        found = [
            r.task
            for r in sorted(records, key=lambda r: r.seq, reverse=True)
            if (not wanted or r.task.status in wanted) and (queue is None or r.task.queue == queue)
        ]
        return found[:limit]

    async def cached(self, keys: Sequence[str], *, finished_after: datetime | None = None) -> dict[str, Task]:
        """Return the newest succeeded task of each key that has one, found by its markers (``cache/<key sha256>/``)."""
        return await self._run(self._cached, keys, finished_after)

    def _cached(self, keys: Sequence[str], finished_after: datetime | None) -> dict[str, Task]:
        found: dict[str, Task] = {}
        for key in keys:
            try:
                task_ids = os.listdir(self._layout.cache_folder(key))
            except FileNotFoundError:
                continue
            records = map(self._layout.read, task_ids)
            newest = lifecycle.newest_cached((r.task for r in records if r is not None), key, finished_after)
            if newest is not None:
                found[key] = newest
        return found

    async def count(self, *, task_ids: Sequence[str] | None = None) -> dict[TaskStatus, int]:
        """Return how many tasks (of ``task_ids``, or all) are in each status."""
        if task_ids is None:
            tasks = [r.task for r in await self._run(self._records)]
        else:
            tasks = await self.get_many(task_ids)
        counts = dict.fromkeys(TaskStatus, 0)
        for task in tasks:
            counts[task.status] += 1
        return counts
