"""``TaskThreads``: calls on long-lived threads, their outcomes handed to the loop in batches."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from omniq_nb.worker.threads import TaskThreads

pytestmark = pytest.mark.anyio

WAIT = 10.0


def returned_log() -> tuple[list[str], Callable[[str], Callable[[], None]]]:
    log: list[str] = []
    return log, lambda name: lambda: log.append(name)


async def test_results_and_errors_reach_the_futures() -> None:
    threads: TaskThreads[int] = TaskThreads(2, asyncio.get_running_loop())
    returned, on_return = returned_log()

    def fail() -> int:
        raise KeyError("boom")

    try:
        ok = threads.submit(lambda: 41 + 1, on_return("ok"))
        bad = threads.submit(fail, on_return("bad"))
        assert await asyncio.wait_for(ok, WAIT) == 42
        with pytest.raises(KeyError, match="boom"):
            await asyncio.wait_for(bad, WAIT)
        assert sorted(returned) == ["bad", "ok"]
    finally:
        threads.shutdown()


async def test_no_more_threads_than_its_size_run_at_once(wait_until: Callable[..., Any]) -> None:
    threads: TaskThreads[str] = TaskThreads(3, asyncio.get_running_loop())
    gate, lock = threading.Event(), threading.Lock()
    running = peak = 0

    def call() -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        gate.wait(WAIT)
        with lock:
            running -= 1
        return threading.current_thread().name

    try:
        futures = [threads.submit(call, lambda: None) for _ in range(9)]
        await wait_until(lambda: running == 3, timeout=WAIT)
        gate.set()
        names = await asyncio.wait_for(asyncio.gather(*futures), WAIT)
        assert peak == 3
        assert len(set(names)) == 3  # threads are reused, not started per call
    finally:
        threads.shutdown()


async def test_a_cancelled_future_still_reports_when_its_call_returns() -> None:
    threads: TaskThreads[str] = TaskThreads(1, asyncio.get_running_loop())
    gate = threading.Event()
    returned = asyncio.Event()
    try:
        future = threads.submit(lambda: "late" if gate.wait(WAIT) else "never", returned.set)
        future.cancel()  # a time-out or a cancel stops the wait, not the thread
        await asyncio.sleep(0.05)
        assert not returned.is_set()
        gate.set()
        await asyncio.wait_for(returned.wait(), WAIT)
        assert future.cancelled()
    finally:
        threads.shutdown()


async def test_calls_that_finish_together_are_handed_back_in_one_wake_up() -> None:
    loop = asyncio.get_running_loop()
    threads: TaskThreads[int] = TaskThreads(4, loop)
    wake_ups = 0
    hand_back = threads._hand_back

    def counted() -> None:
        nonlocal wake_ups
        wake_ups += 1
        hand_back()

    threads._hand_back = counted  # type: ignore[method-assign]

    def hold_the_loop_until_all_finished() -> None:
        deadline = time.monotonic() + WAIT
        while len(threads._finished) < 4 and time.monotonic() < deadline:
            time.sleep(0.001)

    try:
        loop.call_soon(hold_the_loop_until_all_finished)
        futures = [threads.submit(lambda n=n: n, lambda: None) for n in range(4)]
        assert await asyncio.wait_for(asyncio.gather(*futures), WAIT) == [0, 1, 2, 3]
        assert wake_ups == 1
    finally:
        threads.shutdown()


async def test_shutdown_cancels_queued_calls_and_ends_the_threads() -> None:
    threads: TaskThreads[Any] = TaskThreads(1, asyncio.get_running_loop())
    started, gate = threading.Event(), threading.Event()
    returned, on_return = returned_log()
    running = threads.submit(lambda: started.set() or gate.wait(WAIT), on_return("running"))
    queued = threads.submit(lambda: "never", on_return("queued"))
    assert await asyncio.to_thread(started.wait, WAIT)
    threads.shutdown()
    assert queued.cancelled()
    assert returned == ["queued"]
    gate.set()
    assert await asyncio.wait_for(running, WAIT) is True
    assert returned == ["queued", "running"]
    for thread in threads._threads:
        thread.join(WAIT)
        assert not thread.is_alive()
