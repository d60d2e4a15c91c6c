"""Child processes of process pools: one that exits fails only its attempt; a dead idle one is replaced."""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import worker_tasks as wt
from pool_helpers import stored

import omniq_nb as omniq
from omniq_nb import AsyncOmniQ, AsyncWorkerPool, TaskStatus, WorkerLost

pytestmark = pytest.mark.anyio

RESULT_WAIT = 30.0  # seconds a test waits for a result at most (generous: a loaded 2-core machine)


async def test_a_child_that_exits_fails_only_that_attempt(q: AsyncOmniQ, tmp_path: Path) -> None:
    async with AsyncWorkerPool(q, concurrency=1, kind="process", lease=5):
        lost = await q.enqueue(wt.exit_hard, str(tmp_path / "exited"))
        after = await q.enqueue(wt.add, 5, 6)
        with pytest.raises(WorkerLost) as info:
            await lost.result(timeout=RESULT_WAIT)
        assert await after.result(timeout=RESULT_WAIT) == 11
        again = await q.enqueue_call(wt.exit_on_first_attempt, retries=1)
        assert await again.result(timeout=RESULT_WAIT) == 2
    assert "lost" in info.value.error.message
    assert info.value.error.attempt == 1
    task = await stored(q, lost.id)
    assert task.status is TaskStatus.FAILED
    assert task.attempt == 1
    assert (await stored(q, again.id)).attempt == 2


async def test_a_dead_idle_child_process_is_replaced(
    tmp_path: Path, wait_until: Callable[..., Awaitable[None]]
) -> None:
    async with (
        omniq.AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'q.db'}", poll_interval=0.05) as q,
        omniq.AsyncWorkerPool(q, concurrency=1, kind="process", lease=5) as pool,
    ):
        child = await (await q.enqueue(wt.pid)).result(timeout=30)
        os.kill(child, signal.SIGKILL)  # dies while idle, between tasks
        idle = pool._executors.processes.idle
        await wait_until(lambda: not any(c.alive for c in idle), timeout=15)  # gone, not dying
        fresh = await (await q.enqueue(wt.pid)).result(timeout=30)
        assert fresh != child
