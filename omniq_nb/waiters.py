"""The event hub's waits: each ``wait_many`` call (``Waiter``) and their time-outs (``Expiries``).

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
import math
from collections.abc import Iterable

from omniq_nb.models import Task

_EXPIRY_STEP = 0.002  # seconds: waits whose time-outs end within one step share a timer
_LONGEST = 1e9  # seconds (about 31 years): a longer time-out is as good as none, and its tick would overflow


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


class Expiries:
    """The time-outs of waits: waits ending within one ``_EXPIRY_STEP`` share one timer of the loop.

    An ``asyncio.gather`` of 10,000 results makes a handful of timers, not 10,000: each
    timer costs the loop's heap a Python comparison per level, in and out. A wait times out
    up to one step late, never early.
    """

    def __init__(self) -> None:
        self._by_tick: dict[int, tuple[set[Waiter], asyncio.TimerHandle]] = {}

    def add(self, waiter: Waiter, timeout: float) -> int:
        """Have ``waiter`` time out in ``timeout`` seconds; return its tick, for ``discard`` (on the loop)."""
        loop = asyncio.get_running_loop()
        tick = math.ceil((loop.time() + min(timeout, _LONGEST)) / _EXPIRY_STEP)
        expiring = self._by_tick.get(tick)
        if expiring is None:
            expiring = self._by_tick[tick] = (set(), loop.call_at(tick * _EXPIRY_STEP, self._expire, tick))
        expiring[0].add(waiter)
        return tick

    def discard(self, waiter: Waiter, tick: int) -> None:
        """Take an ended wait off its timer; the timer goes with the last wait it was for."""
        expiring = self._by_tick.get(tick)
        if expiring is not None:
            expiring[0].discard(waiter)
            if not expiring[0]:
                expiring[1].cancel()
                del self._by_tick[tick]

    def _expire(self, tick: int) -> None:
        waiters, _ = self._by_tick.pop(tick, (set(), None))
        for waiter in waiters:
            waiter.expire()
