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
from collections.abc import Iterable, Sequence
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


Followed = weakref.ref[Watched] | tuple[weakref.ref[Watched], ...]
"""The handles followed for one task: a weak reference, or a tuple of them when there are several.

One handle per task is the rule (100,000 submitted tasks, 100,000 handles): a bare weak
reference saves a container per task.
"""


def refs_of(followed: Followed | None) -> tuple[weakref.ref[Watched], ...]:
    """Return the weak references of one task's ``Followed`` entry (none for ``None``)."""
    if followed is None:
        return ()
    return (followed,) if isinstance(followed, weakref.ref) else followed


def followed_by(refs: Sequence[weakref.ref[Watched]]) -> Followed:
    """Return the ``Followed`` entry of ``refs`` (at least one)."""
    return refs[0] if len(refs) == 1 else tuple(refs)


def alive(followed: dict[str, Followed]) -> dict[str, Followed]:
    """Return ``followed`` without the tasks all of whose handles are gone."""
    return {i: refs for i, refs in followed.items() if any(ref() is not None for ref in refs_of(refs))}


def live(followed: Followed | None) -> list[Watched]:
    """Return the handles of one task's ``Followed`` entry that are still alive."""
    return [handle for ref in refs_of(followed) if (handle := ref()) is not None]
