"""Progress reports reach the store and the events; a cancelled task reports no more."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import worker_tasks as wt
from pool_helpers import stored

from omniq_nb import AsyncOmniQ, AsyncWorkerPool, EventKind, Task, TaskStatus
from omniq_nb.context import Progress, TaskContext

pytestmark = pytest.mark.anyio

KINDS = ["async", "thread", "process"]
Wait = Callable[..., Any]
RESULT_WAIT = 30.0  # seconds a test waits for a result at most (generous: a loaded 2-core machine)


async def holds_within(predicate: Callable[[], Any], seconds: float) -> bool:
    """Poll an async ``predicate`` until it holds; return False (not fail) after ``seconds``."""
    with anyio.move_on_after(seconds):
        while True:
            if await predicate():
                return True
            await anyio.sleep(0.02)
    return False


async def has_progress(q: AsyncOmniQ, task_id: str, done: int) -> bool:
    task = await stored(q, task_id)
    return task.progress_done == done and task.progress_message == f"step {done}"


@pytest.mark.parametrize("kind", KINDS)
async def test_progress_reaches_the_store_and_events(
    q: AsyncOmniQ, tmp_path: Path, kind: str, wait_until: Wait
) -> None:
    gate = tmp_path / "gate"
    fn = wt.async_progress_then_wait if kind == "async" else wt.progress_then_wait
    async with AsyncWorkerPool(q, concurrency=1, kind=kind, lease=5):
        h = await q.enqueue(fn, str(gate))
        seen: list[Task] = []

        async def all_reported() -> bool:
            seen[:] = [await stored(q, h.id)]
            return seen[0].progress_done == 4 and seen[0].progress_message == "all done"

        try:
            await holds_within(all_reported, 15)
            task = seen[0]
            assert (task.progress_done, task.progress_total, task.progress_message) == (4, 4, "all done"), (
                f"the last progress report never reached the store: stored done={task.progress_done} "
                f"total={task.progress_total} message={task.progress_message!r}"
            )
            assert task.status is TaskStatus.RUNNING
            assert task.progress == pytest.approx(1.0)
            # the pool's claim reached the handle at once; its progress writes hand on no row: their events do
            await wait_until(lambda: h.status == "running" and h.progress == pytest.approx(1.0), timeout=15)
            assert h.task.progress_message == "all done"
        finally:
            gate.touch()
        assert await h.result(timeout=RESULT_WAIT) == "reported"
    progress = [e for e in await q.events(task_id=h.id) if e.kind is EventKind.PROGRESS]
    assert progress, "no progress event was recorded"
    assert progress[-1].progress == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["thread", "process"])
async def test_every_progress_report_of_a_long_task_reaches_the_store(
    q: AsyncOmniQ, tmp_path: Path, kind: str, wait_until: Wait
) -> None:
    async with AsyncWorkerPool(q, concurrency=1, kind=kind, lease=5):
        h = await q.enqueue(wt.progress_in_steps, str(tmp_path), 4)
        for n in range(1, 5):  # each step is reported long after the pool's previous write
            await wait_until(lambda n=n: has_progress(q, h.id, n), timeout=RESULT_WAIT)
            (tmp_path / f"go{n}").touch()
        assert await h.result(timeout=RESULT_WAIT) == 4


def test_a_cancelled_task_reports_no_more_progress() -> None:
    reports: list[Progress] = []
    context = TaskContext("t", 1, "default", "r1", reports.append)
    context.report(Progress(1, 2))
    context.cancel()
    context.report(Progress(2, 2))  # a timed-out thread still running: a newer attempt may own the task
    assert reports == [Progress(1, 2)]
