"""What the event hub keeps: the handles it follows (``Watched``, ``HandleBatch``) and each wait (``Waiter``).

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
import bisect
import operator
import weakref
from collections.abc import Iterable, Sequence
from typing import Protocol

from omniq_nb.models import Task, TaskEvent, batch_position


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

    def expire(self) -> None:
        """End the wait with ``TimeoutError`` (its time is up), unless it ended already."""
        if not self.future.done():
            self.future.set_exception(TimeoutError())

    def fail(self, exc: BaseException) -> None:
        """End the wait with ``exc`` (the store is gone: nothing awaited can finish any more)."""
        if not self.future.done():
            self.future.set_exception(exc)


class HandleBatch:
    """The new tasks' handles of one ``enqueue_many``, followed as one: the hub keeps one weak reference for all.

    A weak reference per handle cost more than the handle itself (100,000 handles of a
    ``.map()``: 8 MB of them). The batch lives as long as its group; members still held
    when the group goes are then followed one by one (``EventHub.watch_batch``).

    Args:
        handles: the batch's handles, in increasing id order (``new_task_ids`` makes them so);
            the list is kept, not copied.

    """

    __slots__ = ("__weakref__", "handles")

    def __init__(self, handles: Sequence[Watched]) -> None:
        self.handles = handles

    def member(self, task_id: str) -> Watched | None:
        """Return the handle of ``task_id``, or ``None`` if it is not in this batch."""
        handles = self.handles
        index = batch_position(task_id)  # where new_task_ids put it: found at once
        if not (0 <= index < len(handles) and handles[index].id == task_id):
            index = bisect.bisect_left(handles, task_id, key=_ID_OF)
        if index < len(handles) and (handle := handles[index]).id == task_id:
            return handle
        return None


_ID_OF = operator.attrgetter("id")


Follower = weakref.ref[Watched | HandleBatch]
"""A weak reference to a followed handle, or to the batch of handles it belongs to."""
Followed = Follower | tuple[Follower, ...]
"""Who follows one task: a weak reference (to a handle or its batch), or a tuple of them when there are several.

One handle per task is the rule (100,000 submitted tasks, 100,000 handles): a bare weak
reference saves a container per task.
"""


def refs_of(followed: Followed | None) -> tuple[Follower, ...]:
    """Return the weak references of one task's ``Followed`` entry (none for ``None``)."""
    if followed is None:
        return ()
    return (followed,) if isinstance(followed, weakref.ref) else followed


def followed_by(refs: Sequence[Follower]) -> Followed:
    """Return the ``Followed`` entry of ``refs`` (at least one)."""
    return refs[0] if len(refs) == 1 else tuple(refs)


def merged(first: Followed, second: Followed) -> Followed:
    """Return one ``Followed`` entry with the references of both, each once."""
    refs = list(refs_of(first))
    refs += [ref for ref in refs_of(second) if all(ref is not known for known in refs)]
    return followed_by(refs)


def alive(followed: dict[str, Followed]) -> dict[str, Followed]:
    """Return ``followed`` without the tasks all of whose handles (or batches) are gone."""
    return {i: refs for i, refs in followed.items() if any(ref() is not None for ref in refs_of(refs))}


def live(followed: Followed | None, task_id: str) -> list[Watched]:
    """Return the live handles of task ``task_id`` in its ``Followed`` entry."""
    if followed is None:
        return []
    found: list[Watched] = []
    for ref in (followed,) if isinstance(followed, weakref.ref) else followed:
        held = ref()
        handle = held.member(task_id) if isinstance(held, HandleBatch) else held
        if handle is not None:
            found.append(handle)
    return found
