"""A task view's kept output: what the store has of it, then what it gets while the task runs.

A view of a task this kernel did not launch (another kernel ran it, a previous kernel of this
notebook, a CLI worker) gets no live output through a sink: ``StoredOutput`` reads the task's
kept output from the store (``TaskOutputStore.output``, by pages), then, while the task runs,
reads what was added every ``FOLLOW_INTERVAL`` seconds; after the task finished it reads once
more (a finished task's output is stored before its outcome) and stops. Once the view gets
output live through the kernel's sink (this kernel runs the task), it stops reading, so no
line is shown twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from omniq_nb.models import TaskOutput, TaskStatus

__all__ = ["FOLLOW_INTERVAL", "OutputReader", "StoredOutput"]

logger = logging.getLogger(__name__)

FOLLOW_INTERVAL = 0.5  # seconds between reads of a running task's new output
_PAGE = 1000  # chunks read at a time


class OutputReader(Protocol):
    """Reads a task's kept output (``AsyncOmniQ.output``)."""

    async def output(self, task_id: str, /, *, after: int = 0, limit: int = 1000) -> TaskOutput:
        """Return the task's kept chunks after ``seq`` ``after``."""
        ...


class StoredOutput:
    """Feed a view the kept output of its task (see the module's docstring).

    Args:
        task_id: the task.
        reader: reads its kept output (the view's queue).
        status: returns the task's status as the view knows it now.
        show: called on the loop with each page read (chunks after those shown before).
    """

    def __init__(
        self,
        task_id: str,
        reader: OutputReader,
        status: Callable[[], TaskStatus],
        show: Callable[[TaskOutput], None],
    ) -> None:
        self._task_id, self._reader, self._status, self._show = task_id, reader, status, show
        self._after = 0
        self._live = False
        self._job: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        """Start reading (on the running loop; without one, nothing is read)."""
        with contextlib.suppress(RuntimeError):
            self._job = asyncio.get_running_loop().create_task(self._follow(), name=f"omniq-output-{self._task_id}")

    def live(self) -> None:
        """Stop reading: the view now gets the task's output live from this kernel."""
        self._live = True
        self.stop()

    def changed(self) -> None:
        """Read again soon: the task's status changed (it started, finished, or runs again after a retry)."""
        if self._live:
            return
        if self._job is None or self._job.done():
            self.start()
        self._wake.set()

    def following(self) -> bool:
        """Return True once the view gets the output live from this kernel (no more reads)."""
        return self._live

    def stop(self) -> None:
        """Stop reading for good."""
        if self._job is not None:
            self._job.cancel()
            self._job = None

    async def _follow(self) -> None:
        while not self.following():
            self._wake.clear()  # a change from now on wakes the wait below
            status = self._status()  # before the read: the read after a task finished has all of it
            try:
                page = await self._reader.output(self._task_id, after=self._after, limit=_PAGE)
            except Exception:  # a view never raises; it reads again later
                logger.debug("the output of task %s could not be read", self._task_id, exc_info=True)
                page = TaskOutput(chunks=[])
            if self.following():
                return
            if page.chunks:
                self._after = page.chunks[-1].seq
                self._show(page)
                if len(page.chunks) == _PAGE:
                    continue
            if status.is_terminal:
                return
            if status is TaskStatus.RUNNING:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), FOLLOW_INTERVAL)
            else:  # pending or waiting: nothing is written until it starts
                await self._wake.wait()
