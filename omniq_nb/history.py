"""The durations of each function's past successful runs, read from the store and kept per queue.

``RunHistory`` serves ``omniq.stats(fn)`` and the views' expected durations and ETAs. It
keeps no state of its own in the store: it reads the latest succeeded tasks through the
store's ordinary listing (``ResultStore.list``), so it works the same on every backend,
and groups their durations by task name (``Task.name``, what ``@omniq.task`` and
``enqueue`` set). Runs that finish in this process (its pools' outcomes, ``publish``) are
added at once; others' are seen at the next reading: a new view reads unless the last
reading is under ``FRESH_FOR_NEW`` seconds old, a live one every ``FRESH`` seconds, and
``stats()`` always reads.

Runs are told apart by name only: a function whose code changed keeps its old runs until
``SAMPLE`` new ones have replaced them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from omniq_nb.building import task_name
from omniq_nb.estimates import TaskStats, run_seconds, stats_of
from omniq_nb.models import Task, TaskStatus
from omniq_nb.storage.base import ResultStore

logger = logging.getLogger(__name__)

SAMPLE = 50
"""Runs kept per function: the latest ones."""
SCAN = 500
"""Succeeded tasks (of every function) one reading of the store looks at, newest first."""
FRESH = 10.0
"""Seconds a reading serves the live views before they ask for another."""
FRESH_FOR_NEW = 1.0
"""Seconds a reading serves a view just made (a new task is when its estimate matters most)."""


def stats_name(fn: Any, *, caller: str = "stats()") -> str:
    """Return the task name whose runs ``omniq.stats(fn)`` describes (or whose cache ``cache_clear(fn)`` forgets).

    Args:
        fn: an ``@omniq.task`` function (its ``name``), a plain callable (the name
            ``enqueue`` gives it) or a task name.
        caller: the public function asking, named in error messages.

    Raises:
        TypeError: ``fn`` is neither callable nor a string.
        ValueError: ``fn`` is an empty string.

    Example:
        >>> stats_name(len), stats_name("train")
        ('len', 'train')

    """
    if isinstance(fn, str):
        if not fn.strip():
            raise ValueError(f"{caller} needs a task name, got an empty string")
        return fn
    named = getattr(fn, "name", None) if hasattr(fn, "task_options") else None  # an @omniq.task function
    if isinstance(named, str):
        return named
    if callable(fn):
        return task_name(fn)
    raise TypeError(f"{caller} takes an @omniq.task function, a callable or a task name, got {fn!r}")


class RunHistory:
    """The latest successful run durations of every function, per task name, from one store.

    Use it from the queue's loop. ``known`` answers from memory (never blocks; the views use
    it), ``stats`` reads the store first.

    Args:
        storage: the store whose succeeded tasks are read.
    """

    def __init__(self, storage: ResultStore) -> None:
        self._storage = storage
        self._runs: dict[str, dict[str, float]] = {}  # name -> {task id: seconds}
        self._read_at: float | None = None
        self._reading: asyncio.Future[None] | None = None

    def stale(self, max_age: float = FRESH) -> bool:
        """Return whether the store was never read, or last read over ``max_age`` seconds ago."""
        return self._read_at is None or time.monotonic() - self._read_at > max_age

    def known(self, name: str) -> TaskStats | None:
        """Return what memory holds of ``name``'s runs; ``None`` before the store was first read."""
        if self._read_at is None and name not in self._runs:
            return None
        runs = self._runs.get(name, {})
        return stats_of(name, [runs[task_id] for task_id in sorted(runs)])

    async def stats(self, name: str) -> TaskStats:
        """Read the store (or join a reading under way), then return the statistics of ``name``'s latest runs.

        Raises:
            StorageError: the store cannot be read.
        """
        await self.refresh(max_age=0.0)
        known = self.known(name)
        return known if known is not None else TaskStats(name=name)

    async def refresh(self, *, max_age: float = FRESH) -> None:
        """Read the latest succeeded tasks unless the last reading is under ``max_age`` seconds old.

        Callers while a reading is under way share it.

        Raises:
            StorageError: the store cannot be read.
        """
        if not self.stale(max_age):
            return
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read())
            self._reading.add_done_callback(self._read_done)
        await asyncio.shield(self._reading)

    def note(self, tasks: Sequence[Task]) -> None:
        """Add the runs of succeeded tasks a write of this process returned."""
        for task in tasks:
            seconds = run_seconds(task)
            if seconds is not None:
                self._add(task.name, task.id, seconds)

    async def _read(self) -> None:
        tasks = await self._storage.list(statuses=[TaskStatus.SUCCEEDED], limit=SCAN)
        for task in tasks:
            seconds = run_seconds(task)
            if seconds is not None:
                self._add(task.name, task.id, seconds)
        self._read_at = time.monotonic()

    def _read_done(self, reading: asyncio.Future[None]) -> None:
        self._reading = None
        if not reading.cancelled() and reading.exception() is not None:
            self._read_at = time.monotonic()  # an unreachable store is not asked again on every frame
            logger.debug("could not read the run history", exc_info=reading.exception())

    def _add(self, name: str, task_id: str, seconds: float) -> None:
        runs = self._runs.setdefault(name, {})
        runs[task_id] = seconds
        if len(runs) > SAMPLE:  # ids are time-ordered: the smallest is the oldest run
            del runs[min(runs)]


class HistoryReading:
    """The run-history role of ``AsyncOmniQ``: ``stats(fn)``, and ``history`` for the views."""

    history: RunHistory

    async def stats(self, fn: Any, /) -> TaskStats:
        """Return how long ``fn``'s latest successful runs took: ``count``, ``median``, ``p90``, ...

        Reads the store (every process's runs count), up to the latest ``SAMPLE`` runs among
        the ``SCAN`` latest succeeded tasks; runs of ``fn`` older than those are not seen.

        Args:
            fn: an ``@omniq.task`` function, a plain callable or a task name.

        Raises:
            TypeError: ``fn`` is neither callable nor a string.
            ValueError: ``fn`` is an empty string.
            StorageError: the store cannot be read.

        """
        return await self.history.stats(stats_name(fn))
