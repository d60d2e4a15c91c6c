"""Task timeouts for every kind: what is stored, what is raised, and when the slot is free again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import worker_tasks as wt
from pool_helpers import exists, own_timeout, read, stored
from processes import pid_exists

import omniq_nb as omniq
from omniq_nb import AsyncOmniQ, AsyncWorkerPool, TaskStatus, TaskTimeout

pytestmark = pytest.mark.anyio

Wait = Callable[..., Any]
RESULT_WAIT = 30.0  # seconds a test waits for a result at most (generous: a loaded 2-core machine)


async def own_timeout_async() -> None:
    raise TimeoutError("socket read timed out")


async def slow_to_clean_up(marker: str) -> None:
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        await asyncio.sleep(0.5)  # cleanup that takes a while after the cancel
        await asyncio.to_thread(Path(marker).write_text, "cleaned up")
        raise


async def test_timeout_cancels_an_async_task(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    marker = tmp_path / "slow"
    async with AsyncWorkerPool(q, concurrency=1, kind="async", lease=5):
        h = await q.enqueue_call(wt.async_wait_forever, args=(str(marker),), timeout=0.3)
        with pytest.raises(TaskTimeout, match="timed out"):
            await h.result(timeout=RESULT_WAIT)
        await wait_until(lambda: Path(f"{marker}.cancelled").exists(), timeout=RESULT_WAIT)
        assert await (await q.enqueue(wt.add, 1, 1)).result(timeout=RESULT_WAIT) == 2
    task = await stored(q, h.id)
    assert task.status is TaskStatus.FAILED
    assert task.error is not None and "timed out" in task.error.message


async def test_timeout_fails_a_thread_task_and_flags_it(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    marker = tmp_path / "slow"
    async with AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5):
        h = await q.enqueue_call(wt.wait_until_cancelled, args=(str(marker),), timeout=0.3)
        with pytest.raises(TaskTimeout) as info:
            await h.result(timeout=RESULT_WAIT)
        assert "timed out" in str(info.value)
        await wait_until(lambda: Path(f"{marker}.flagged").exists(), timeout=RESULT_WAIT)
        assert read(f"{marker}.flagged") == "cancelled"
        assert await (await q.enqueue(wt.add, 1, 1)).result(timeout=RESULT_WAIT) == 2
    task = await stored(q, h.id)
    assert task.status is TaskStatus.FAILED
    assert task.error is not None and task.error.type.endswith("TaskTimeout")


async def test_a_timed_out_thread_keeps_its_slot_until_it_returns(q: AsyncOmniQ, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    async with AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5) as pool:
        slow = await q.enqueue_call(wt.wait_for_gate_only, args=(str(gate),), timeout=0.3)
        with pytest.raises(TaskTimeout):
            await slow.result(timeout=RESULT_WAIT)
        following = await q.enqueue(wt.add, 1, 1)
        # An observation window (not synchronisation): the thread still runs, so its slot is
        # still taken and the next task must not start.
        await anyio.sleep(0.3)
        assert pool.busy == 1
        assert (await stored(q, following.id)).status is TaskStatus.PENDING
        gate.touch()
        assert await following.result(timeout=RESULT_WAIT) == 2
    assert pool.busy == 0


async def test_timeout_terminates_a_process_task(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    marker = tmp_path / "slow"
    async with AsyncWorkerPool(q, concurrency=1, kind="process", lease=5):
        child = await (await q.enqueue(wt.pid)).result(timeout=RESULT_WAIT)  # start the child first
        h = await q.enqueue_call(wt.sleep_in_process, args=(str(marker),), timeout=1.0)
        with pytest.raises(TaskTimeout, match="timed out"):
            await h.result(timeout=RESULT_WAIT)
        assert marker.read_text() == str(child)
        await wait_until(lambda: not pid_exists(child), timeout=RESULT_WAIT)
        assert await (await q.enqueue(wt.add, 1, 1)).result(timeout=RESULT_WAIT) == 2
    assert not exists(f"{marker}.finished")
    assert (await stored(q, h.id)).status is TaskStatus.FAILED


@pytest.mark.parametrize("task_timeout", [None, 60.0])
@pytest.mark.parametrize("fn", [own_timeout, own_timeout_async], ids=["thread", "async"])
async def test_a_task_raising_timeout_error_keeps_its_own_error(fn: object, task_timeout: float | None) -> None:
    async with omniq.AsyncOmniQ(db_url="memory://") as q, omniq.AsyncWorkerPool(q, concurrency=1):
        handle = await q.enqueue_call(fn, timeout=task_timeout)  # type: ignore[arg-type]
        with pytest.raises(omniq.TaskFailed) as caught:
            await handle.result(timeout=10)
        assert not isinstance(caught.value, omniq.TaskTimeout)
        assert caught.value.error.type == "TimeoutError"
        assert "timed out" in caught.value.error.message and caught.value.error.traceback


async def test_an_async_task_that_timed_out_keeps_its_slot_while_it_cleans_up(tmp_path: Path) -> None:
    marker = tmp_path / "cleaned"
    async with (
        omniq.AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'q.db'}", poll_interval=0.05) as q,
        omniq.AsyncWorkerPool(q, concurrency=1, kind="async", lease=5),
    ):
        slow = await q.enqueue_call(slow_to_clean_up, args=(str(marker),), timeout=0.2)
        following = await q.enqueue(exists, str(marker))
        with pytest.raises(TaskTimeout):
            await slow.result(timeout=15)
        assert await following.result(timeout=15) is True  # it started only once the cleanup had ended
