"""A task that raises, exits or returns something unstorable fails alone: the pool goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest
import worker_tasks as wt
from pool_helpers import stored

import omniq_nb as omniq
from omniq_nb import AsyncOmniQ, AsyncWorkerPool, SignatureError, Task, TaskFailed, TaskStatus

pytestmark = pytest.mark.anyio

KINDS = ["async", "thread", "process"]
RESULT_WAIT = 30.0  # seconds a test waits for a result at most (generous: a loaded 2-core machine)


def tick() -> int:
    return 1


class Abort(BaseException):
    """Not an Exception: raised by task code that means to stop hard."""


async def abort() -> None:
    raise Abort("stop everything")


async def await_a_cancelled_future() -> None:
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    await future  # raises CancelledError, though nobody cancelled the task itself


def too_deep_result() -> list[object]:
    value: list[object] = []
    for _ in range(100_000):
        value = [value]
    return value


def raise_too_deep() -> None:
    raise ValueError(too_deep_result())  # str() of this error recurses too deeply


@pytest.mark.parametrize("kind", KINDS)
async def test_sys_exit_in_a_task_fails_only_that_task(q: AsyncOmniQ, kind: str) -> None:
    async with AsyncWorkerPool(q, concurrency=1, kind=kind, lease=5):
        h = await q.enqueue(wt.exit_softly, 3)
        with pytest.raises(TaskFailed, match="SystemExit"):
            await h.result(timeout=RESULT_WAIT)
        assert await (await q.enqueue(wt.add, 1, 1)).result(timeout=RESULT_WAIT) == 2
    task = await stored(q, h.id)
    assert task.status is TaskStatus.FAILED
    assert task.error is not None and task.error.type.endswith("SystemExit")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_raising_task_stores_the_remote_traceback(q: AsyncOmniQ, kind: str) -> None:
    async with AsyncWorkerPool(q, concurrency=1, kind=kind, lease=5):
        h = await q.enqueue(wt.raise_value_error, "boom 42")
        with pytest.raises(TaskFailed) as info:
            await h.result(timeout=RESULT_WAIT)
    error = info.value.error
    assert error.type == "ValueError"
    assert error.message == "boom 42"
    assert error.attempt == 1
    assert "raise_value_error" in error.traceback
    assert "ValueError: boom 42" in error.traceback
    assert "library frame" in error.traceback  # the executor's frames are collapsed
    assert "omniq_nb" not in error.traceback
    assert "Remote traceback" in str(info.value)
    task = await stored(q, h.id)
    assert task.status is TaskStatus.FAILED
    assert task.error == error


@pytest.mark.parametrize("kind", KINDS)
async def test_a_bad_signature_fails_the_task_without_running_it(db_url: str, tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "ran"
    async with (
        AsyncOmniQ(db_url=db_url, secret="secret-A", poll_interval=0.05, retry_backoff=0.05) as producer,
        AsyncOmniQ(db_url=db_url, secret="secret-B", poll_interval=0.05, retry_backoff=0.05) as consumer,
    ):
        h = await producer.enqueue_call(wt.touch, args=(str(marker),), retries=2)
        async with AsyncWorkerPool(consumer, concurrency=1, kind=kind, lease=5):
            with pytest.raises(SignatureError) as info:
                await consumer.result(h.id, timeout=RESULT_WAIT)
        task = await stored(consumer, h.id)
    assert isinstance(info.value, TaskFailed)
    assert "signature" in str(info.value).lower()
    assert task.status is TaskStatus.FAILED
    assert task.attempt == 1, "a bad signature is not retried"
    assert task.error is not None and "signature" in task.error.message.lower()
    assert not marker.exists(), "a payload with a bad signature was executed"


@pytest.mark.parametrize(
    ("fn", "raised"),
    [(abort, "Abort"), (await_a_cancelled_future, "CancelledError")],
    ids=["BaseException", "own cancel"],
)
async def test_an_async_task_raising_a_base_exception_fails_and_the_pool_goes_on(
    tmp_path: Path, fn: Callable[[], Awaitable[None]], raised: str
) -> None:
    async with omniq.AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'q.db'}", poll_interval=0.05) as q:
        async with omniq.AsyncWorkerPool(q, concurrency=1, kind="async", lease=5):
            h = await q.enqueue(fn)
            with pytest.raises(TaskFailed):
                await h.result(timeout=15)
            assert await (await q.enqueue(tick)).result(timeout=15) == 1
        task = (await q.get(h.id)).task
        assert (task.status, task.attempt) == (TaskStatus.FAILED, 1)
        assert task.error is not None and task.error.type.endswith(raised)  # its own error, not a lost lease


async def test_a_failing_output_router_or_write_callback_does_not_stop_the_pool(tmp_path: Path) -> None:
    def broken_router(task: Task) -> None:
        raise RuntimeError("the notebook cell is gone")

    def broken_callback(tasks: Sequence[Task]) -> None:
        raise RuntimeError("listener bug")

    async with omniq.AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'q.db'}", poll_interval=0.05) as q:
        q.on_local_write(broken_callback)
        async with omniq.AsyncWorkerPool(q, concurrency=2, kind="thread", lease=5, output=broken_router):
            handles = [await q.enqueue(tick) for _ in range(5)]
            assert await q.results([h.id for h in handles], timeout=15) == [1] * 5


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_result_or_error_too_deeply_nested_fails_its_task_and_the_pool_goes_on(tmp_path: Path, kind: str) -> None:
    with (
        omniq.OmniQ(db_url=f"sqlite:///{tmp_path / 'x.db'}", poll_interval=0.05) as q,
        omniq.WorkerPool(q, concurrency=1, kind=kind, lease=5),
    ):
        deep, broken, after = q.enqueue(too_deep_result), q.enqueue(raise_too_deep), q.enqueue(tick)
        with pytest.raises(TaskFailed) as result:
            deep.result(timeout=30)
        with pytest.raises(TaskFailed) as error:
            broken.result(timeout=30)
        assert after.result(timeout=30) == 1
    assert result.value.error.type == "omniq_nb.errors.SerializationError"
    assert "the task's result: it is too deeply nested" in result.value.error.message
    assert error.value.error.type == "ValueError"  # not WorkerLost: the worker stored the failure
    assert error.value.error.attempt == 1
