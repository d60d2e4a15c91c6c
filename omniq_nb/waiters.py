"""What the event hub keeps: the handles it follows (``Watched``) and each wait for a set of tasks (``Waiter``).

Example:
    >>> import asyncio
    >>> async def one_wait() -> bool:
    ...     waiter = Waiter(["t1"], until_failure=False)
    ...     waiter.settle("t1", None)  # no such task: the wait is over, with nothing found
    ...     return waiter.future.done() and waiter.found == {"t1": None}
    >>> asyncio.run(one_wait())
    True

"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable
from typing import Protocol

from omniq_nb.models import Task, TaskEvent


class Watched(Protocol):
    """What the hub keeps current: anything holding a task snapshot (a handle)."""

    id: str

    def _apply_event(self, event: TaskEvent) -> None: ...

    def _apply_task(self, task: Task) -> None: ...

    def done(self) -> bool:
        """Return True once the task has finished."""
        ...

    def _finished_row(self) -> Task | None:
        """Return the task's stored row if it is finished (not a snapshot folded from events)."""
        ...


class Waiter:
    """One ``wait_many`` call: the tasks it still waits for and the finished rows it got."""

    __slots__ = ("found", "future", "pending", "until_failure")

    def __init__(self, task_ids: Iterable[str], *, until_failure: bool) -> None:
        self.pending = set(task_ids)
        self.found: dict[str, Task | None] = {}
        self.until_failure = until_failure
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def settle(self, task_id: str, task: Task | None) -> None:
        """Take one task's outcome (``None``: no such task); wake the caller when it is done waiting."""
        if task_id not in self.pending:
            return
        self.pending.discard(task_id)
        self.found[task_id] = task
        failed = task is None or not task.has_value  # no such task: no result either
        if (not self.pending or (failed and self.until_failure)) and not self.future.done():
            self.future.set_result(None)

    def fail(self, exc: BaseException) -> None:
        """End the wait with ``exc`` (the store is gone: nothing awaited can finish any more)."""
        if not self.future.done():
            self.future.set_exception(exc)


def alive(
    followed: dict[str, tuple[weakref.ref[Watched], ...]],
) -> dict[str, tuple[weakref.ref[Watched], ...]]:
    """Return ``followed`` without the tasks all of whose handles are gone."""
    return {i: refs for i, refs in followed.items() if any(ref() is not None for ref in refs)}


def live(refs: Iterable[weakref.ref[Watched]]) -> list[Watched]:
    """Return the handles of ``refs`` that are still alive."""
    return [handle for ref in refs if (handle := ref()) is not None]
