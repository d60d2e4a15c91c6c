"""``h.result()``: values, stored failures as exceptions, waiting, and results written by another store object."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from emulated_worker import add, boom_error, claim, fail, succeed

from omniq_nb import (
    AsyncOmniQ,
    GroupHandle,
    TaskCancelled,
    TaskError,
    TaskFailed,
    TaskResult,
    TaskStatus,
    TaskTimeout,
    WorkerLost,
    open_storage,
)

pytestmark = pytest.mark.anyio

UTC = timezone.utc


async def test_result_of_succeeded_task(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1, 2)
    [task] = await claim(q)
    fn, args, kwargs = q.serializer.load_call(task.payload)
    await succeed(q, task, {"sum": fn(*args, **kwargs), "when": datetime(2024, 1, 1, tzinfo=UTC)})
    expected = {"sum": 3, "when": datetime(2024, 1, 1, tzinfo=UTC)}
    assert await h.result(timeout=5) == expected
    assert await h == expected
    assert await q.result(h.id) == expected
    assert (await q.get(h.id)).done()


async def test_result_none(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    [task] = await claim(q)
    await succeed(q, task, None)
    assert await h.result(timeout=5) is None


async def test_failed_task_raises_task_failed_with_remote_error(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    [task] = await claim(q)
    await fail(q, task, boom_error())
    with pytest.raises(TaskFailed) as info:
        await h.result(timeout=5)
    exc = info.value
    assert type(exc) is TaskFailed
    assert exc.error.type == "ValueError"
    assert exc.error.message == "bad input 7"
    assert 'File "remote.py", line 3' in exc.error.traceback
    assert exc.error.attempt == 1
    text = str(exc)
    assert h.id in text
    assert "ValueError: bad input 7" in text
    assert 'File "remote.py", line 3, in job' in text
    handle = await q.get(h.id)
    assert handle.error == boom_error()
    with pytest.raises(TaskFailed):
        await handle


async def test_stored_timeout_raises_task_timeout(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    [task] = await claim(q)
    await fail(q, task, TaskError(type="omniq_nb.errors.TaskTimeout", message="timed out after 5 s", attempt=1))
    with pytest.raises(TaskTimeout, match="timed out") as info:
        await h.result(timeout=5)
    assert isinstance(info.value, TaskFailed)


async def test_stored_worker_lost_raises_worker_lost(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    [task] = await claim(q)
    await fail(q, task, TaskError(type="omniq_nb.errors.WorkerLost", message="worker lost", attempt=1))
    with pytest.raises(WorkerLost, match="lost"):
        await h.result(timeout=5)


async def test_cancelled_task_raises_task_cancelled(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    await q.cancel(h.id)
    with pytest.raises(TaskCancelled, match="cancelled") as info:
        await h.result(timeout=5)
    assert isinstance(info.value, TaskFailed)


async def test_result_timeout_raises_builtin_timeout_error(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    with pytest.raises(TimeoutError, match=h.id) as info:
        await h.result(timeout=0.2)
    assert type(info.value) is TimeoutError
    with pytest.raises(TimeoutError):
        await q.results([h.id], timeout=0.2)
    group = GroupHandle(q, [h])
    with pytest.raises(TimeoutError):
        await group.result(timeout=0.2)
    assert h.status == "pending"


async def test_result_waits_for_a_settle_in_the_same_process(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    values: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def wait() -> None:
            values.append(await h.result(timeout=5))

        tg.start_soon(wait)
        [task] = await claim(q)
        await succeed(q, task, "late")
    assert values == ["late"]


async def test_result_written_by_another_store_object_is_seen(sqlite_url: str) -> None:
    async with AsyncOmniQ(db_url=sqlite_url) as q, open_storage(sqlite_url) as other:
        h = await q.enqueue(add, 1)
        values: list[Any] = []
        async with anyio.create_task_group() as tg:

            async def wait() -> None:
                values.append(await h.result(timeout=5))

            tg.start_soon(wait)
            [task] = await other.claim(queues=["default"], limit=1, lease=30, worker="elsewhere")
            accepted = await other.settle(
                [
                    TaskResult(
                        task_id=task.id,
                        lease_token=task.lease_token or "",
                        status=TaskStatus.SUCCEEDED,
                        result=q.serializer.dumps([1, 2]),
                    )
                ]
            )
            assert len(accepted) == 1  # not published: only polling can see it
        assert values == [[1, 2]]
