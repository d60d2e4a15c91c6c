"""Each executor kind (async, thread, process) runs a task; ``omniq.current()`` inside it; the ``kind`` option."""

from __future__ import annotations

import os

import pytest
import worker_tasks as wt
from pool_helpers import stored

from omniq_nb import AsyncOmniQ, AsyncWorkerPool, TaskStatus

pytestmark = pytest.mark.anyio

KINDS = ["async", "thread", "process"]
RESULT_WAIT = 30.0  # seconds a test waits for a result at most (generous: a loaded 2-core machine)


@pytest.mark.parametrize("kind", KINDS)
async def test_each_kind_runs_a_task_and_returns_its_value(q: AsyncOmniQ, kind: str) -> None:
    async with AsyncWorkerPool(q, concurrency=2, kind=kind, lease=5):
        sync = await q.enqueue(wt.add, 2, 3)
        coroutine = await q.enqueue(wt.async_add, 4, 5)
        info = await q.enqueue(wt.where)
        assert await sync.result(timeout=RESULT_WAIT) == 5
        assert await coroutine.result(timeout=RESULT_WAIT) == 9
        ran = await info.result(timeout=RESULT_WAIT)
    if kind == "process":
        assert ran["pid"] != os.getpid(), "a process pool ran a sync task in the parent"
    else:
        assert ran["pid"] == os.getpid()
    task = await stored(q, sync.id)
    assert task.status is TaskStatus.SUCCEEDED
    assert task.attempt == 1
    assert task.lease_token is None or task.status.is_terminal


@pytest.mark.parametrize("kind", KINDS)
async def test_current_gives_id_attempt_queue_and_run_id_inside_a_task(q: AsyncOmniQ, kind: str) -> None:
    fn = wt.async_where if kind == "async" else wt.where
    async with AsyncWorkerPool(q, concurrency=1, kind=kind, queues=["special"], lease=5):
        h = await q.enqueue_call(fn, queue="special")
        ran = await h.result(timeout=RESULT_WAIT)
    run_id = (await q.get(h.id)).task.run_id
    assert run_id
    assert ran["context"] == {"id": h.id, "task_id": h.id, "attempt": 1, "queue": "special", "run_id": run_id}
    assert wt.where()["context"] is None  # outside a task


@pytest.mark.parametrize(("pool_kind", "task_kind"), [("thread", "process"), ("process", "thread")])
async def test_the_kind_task_option_chooses_where_a_sync_task_runs(
    q: AsyncOmniQ, pool_kind: str, task_kind: str
) -> None:
    async with AsyncWorkerPool(q, concurrency=1, kind=pool_kind, lease=5):
        h = await q.enqueue_call(wt.where, kind=task_kind)
        ran = await h.result(timeout=RESULT_WAIT)
    in_child = ran["pid"] != os.getpid()
    assert in_child is (task_kind == "process"), f"a kind={task_kind!r} task ran in a {pool_kind} slot as such"
    assert ran["context"]["attempt"] == 1
