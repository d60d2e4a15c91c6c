"""``INTERRUPT=cancel``: a kernel interrupt also cancels the unfinished tasks the interrupted cell launched.

By default (``wait``) an interrupt only stops what the cell itself does, such as waiting in
``h.result()``; its tasks go on. With ``cancel``, the kernel runner keeps, per cell, the ids of
the tasks enqueued while it runs (``CellTasks``: each write this process publishes carries
its rows, and a task records its launching cell as its ``origin``), and when the cell ends on
an interrupt, cancels those still pending, waiting or running through ``AsyncOmniQ.cancel``:
an async task is cancelled, a process task's child terminated, a thread task flagged and
abandoned (a thread cannot be killed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from omniq_nb.async_queue import AsyncOmniQ
from omniq_nb.errors import TaskNotFound
from omniq_nb.models import Task

_SHOWN_IDS = 3  # ids named in the one line an interrupt prints


class CellTasks:
    """The ids of the tasks the running cell launched, in launch order.

    Example:
        >>> cell = CellTasks()
        >>> cell.start("kernel:msg-1")
        >>> cell.launched()
        []
    """

    def __init__(self) -> None:
        self._origin: str | None = None
        self._ids: dict[str, None] = {}  # an ordered set

    def start(self, origin: str | None) -> None:
        """Begin a cell whose tasks carry ``origin`` (``None``: not a cell of this kernel; nothing is kept)."""
        self._origin = origin
        self._ids = {}

    def saw(self, tasks: Sequence[Task]) -> None:
        """Keep the ids of ``tasks`` (rows a local write published) that the running cell launched."""
        origin = self._origin
        if origin is None:
            return
        for task in tasks:
            if task.origin == origin:
                self._ids[task.id] = None

    def launched(self) -> list[str]:
        """Return the ids of the tasks the running (or last) cell launched, oldest first."""
        return list(self._ids)


def ended_on_interrupt(result: Any) -> bool:
    """Return True when a cell's ``ExecutionResult`` says a kernel interrupt stopped it.

    A blocking cell gets ``KeyboardInterrupt``; a cell that awaits gets its coroutine
    cancelled by ipykernel (``CancelledError``).
    """
    error = getattr(result, "error_in_exec", None)
    return isinstance(error, (KeyboardInterrupt, asyncio.CancelledError))


async def cancel_unfinished(queue: AsyncOmniQ, task_ids: Sequence[str]) -> list[str]:
    """Cancel those of ``task_ids`` that are not finished yet; return the ids cancelled, in the given order.

    Args:
        queue: the queue whose ``cancel`` does it (its pool in this process stops running ones at once).
        task_ids: the tasks to look at (finished or purged ones are left alone).
    """
    order = {task_id: n for n, task_id in enumerate(task_ids)}
    rows = sorted(await queue.storage.get_many(list(task_ids)), key=lambda task: order[task.id])
    cancelled: list[str] = []
    for task in rows:
        if task.status.is_terminal:
            continue
        with contextlib.suppress(TaskNotFound):  # purged meanwhile
            if await queue.cancel(task.id):
                cancelled.append(task.id)
    return cancelled


def cancelled_line(task_ids: Sequence[str]) -> str:
    """Return the one line an interrupt prints about the tasks it cancelled.

    Example:
        >>> cancelled_line(["a1", "b2"])
        'interrupted: cancelled 2 tasks launched by this cell (a1, b2)'
    """
    shown = ", ".join(task_ids[:_SHOWN_IDS]) + (", ..." if len(task_ids) > _SHOWN_IDS else "")
    tasks = "task" if len(task_ids) == 1 else "tasks"
    return f"interrupted: cancelled {len(task_ids)} {tasks} launched by this cell ({shown})"
