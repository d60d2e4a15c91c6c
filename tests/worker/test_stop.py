"""Stopping a pool: running tasks handed back or finished and stored, at_most_once tasks failed."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
import worker_tasks as wt
from pool_helpers import blocking_fn, kinds_of_events, nap, series_of, stored, wait_for_status

import omniq_nb as omniq
from omniq_nb import AsyncOmniQ, AsyncWorkerPool, EventKind, TaskStatus

pytestmark = pytest.mark.anyio

UTC = timezone.utc
KINDS = ["async", "thread", "process"]
Wait = Callable[..., Any]
RESULT_WAIT = 30.0  # seconds a test waits for a result at most (generous: a loaded 2-core machine)


def blocked_until(flag: str) -> str:
    while not Path(flag).exists():
        time.sleep(0.01)
    return "done"


@pytest.mark.parametrize("kind", KINDS)
async def test_stop_hands_a_running_task_back_without_using_an_attempt(
    q: AsyncOmniQ, tmp_path: Path, kind: str, wait_until: Wait
) -> None:
    folder, gate = tmp_path / "runs", tmp_path / "gate"
    fn = blocking_fn(kind)
    h = await q.enqueue(fn, str(folder), "job", str(gate))
    pool = AsyncWorkerPool(q, concurrency=1, kind=kind, lease=5)
    await pool.start()
    try:
        await wait_until(lambda: (folder / "job.start").exists(), timeout=RESULT_WAIT)
        running = await stored(q, h.id)
        assert running.status is TaskStatus.RUNNING
        assert running.attempt == 1
    finally:
        with anyio.fail_after(RESULT_WAIT):
            await pool.stop(timeout=0.2)
    assert not pool.running
    task = await stored(q, h.id)
    assert task.status is TaskStatus.PENDING
    assert task.attempt == 0
    assert task.lease_token is None
    assert EventKind.RELEASED in await kinds_of_events(q, h.id)

    gate.touch()
    async with AsyncWorkerPool(q, concurrency=1, kind=kind, lease=5):
        assert await h.result(timeout=RESULT_WAIT) == "job"
    assert (await stored(q, h.id)).attempt == 1


@pytest.mark.parametrize("periodic", [False, True], ids=["plain", "interval"])
async def test_a_task_finishing_during_stop_keeps_its_outcome(
    q: AsyncOmniQ, db_url: str, tmp_path: Path, periodic: bool, wait_until: Wait
) -> None:
    folder, gate = tmp_path / "runs", tmp_path / "gate"
    options: dict[str, Any] = {"interval": 3600, "eta": datetime.now(UTC)} if periodic else {}
    h = await q.enqueue_call(wt.gated, args=(str(folder), "job", str(gate)), **options)
    pool = AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5)
    await pool.start()
    try:
        await wait_until(lambda: (folder / "job.start").exists(), timeout=RESULT_WAIT)
    finally:
        async with anyio.create_task_group() as group:
            group.start_soon(pool.stop, RESULT_WAIT)  # waits for the running task to finish
            await wait_until(lambda: pool._stopping, timeout=RESULT_WAIT)
            gate.touch()
    task = await stored(q, h.id)
    assert task.status is TaskStatus.SUCCEEDED, f"the outcome of a task that finished during stop was lost: {task}"
    assert task.attempt == 1
    if periodic:
        assert [t.status for t in await series_of(q, h.id) if t.id != h.id] == [TaskStatus.PENDING]
    # The queue's connection is left clean: another connection sees its later writes.
    later = await q.enqueue(wt.add, 1, 1)
    async with AsyncOmniQ(db_url=db_url) as other:
        assert (await other.get(later.id)).status is TaskStatus.PENDING


async def test_stop_stores_every_outcome_that_finishes_during_it(tmp_path: Path) -> None:
    async with omniq.AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'q.db'}", poll_interval=0.05) as q:
        pool = omniq.AsyncWorkerPool(q, concurrency=2)
        await pool.start()
        handles = [await q.enqueue(nap, 0.2), await q.enqueue(nap, 0.6)]
        for handle in handles:
            await wait_for_status(q, handle.id, "running")
        await pool.stop(timeout=10)  # both finish well inside the timeout
        for handle in handles:
            task = (await q.get(handle.id)).task
            assert (task.status, task.attempt, task.lease_token) == (TaskStatus.SUCCEEDED, 1, None)


async def test_stop_fails_an_interrupted_at_most_once_task_instead_of_running_it_again(tmp_path: Path) -> None:
    flag = tmp_path / "release"
    async with omniq.AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'q.db'}", poll_interval=0.05) as q:
        pool = omniq.AsyncWorkerPool(q, concurrency=1)
        await pool.start()
        handle = await q.enqueue_call(blocked_until, args=(str(flag),), at_most_once=True)
        try:
            await wait_for_status(q, handle.id, "running")
            await pool.stop(timeout=0.1)
            task = (await q.get(handle.id)).task
        finally:
            flag.touch()  # let the abandoned thread end, whatever happened
        assert task.status is TaskStatus.FAILED and task.attempt == 1, task
        assert task.error is not None and "at_most_once" in task.error.message
        with pytest.raises(omniq.WorkerLost, match="lost"):
            await handle.result(timeout=5)
