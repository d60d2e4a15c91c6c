"""Regressions found in review: graceful stop, at_most_once, own TimeoutError, periodic series, slots, leases."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
import worker_tasks as wt

import omniq_nb as omniq
from omniq_nb.context import Progress, TaskContext
from omniq_nb.errors import TaskFailed, TaskTimeout
from omniq_nb.models import Task, TaskStatus, new_task_id
from omniq_nb.worker.lease import LeaseKeeper as _LeaseKeeper

pytestmark = pytest.mark.anyio


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def own_timeout() -> None:
    raise TimeoutError("upstream API timed out")


async def own_timeout_async() -> None:
    raise TimeoutError("socket read timed out")


def blocked_until(flag: str) -> str:
    while not Path(flag).exists():
        time.sleep(0.01)
    return "done"


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


async def slow_to_clean_up(marker: str) -> None:
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        await asyncio.sleep(0.5)  # cleanup that takes a while after the cancel
        await asyncio.to_thread(Path(marker).write_text, "cleaned up")
        raise


def exists(path: str) -> bool:
    return Path(path).exists()


async def wait_for_status(q: omniq.AsyncOmniQ, task_id: str, status: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while (await q.get(task_id)).status != status:
        assert time.monotonic() < deadline, f"task {task_id} never reached {status}"
        await asyncio.sleep(0.02)


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


@pytest.mark.parametrize("timeout", [None, 60.0])
@pytest.mark.parametrize("fn", [own_timeout, own_timeout_async], ids=["thread", "async"])
async def test_a_task_raising_timeout_error_keeps_its_own_error(fn: object, timeout: float | None) -> None:
    async with omniq.AsyncOmniQ(db_url="memory://") as q, omniq.AsyncWorkerPool(q, concurrency=1):
        handle = await q.enqueue_call(fn, timeout=timeout)  # type: ignore[arg-type]
        with pytest.raises(omniq.TaskFailed) as caught:
            await handle.result(timeout=10)
        assert not isinstance(caught.value, omniq.TaskTimeout)
        assert caught.value.error.type == "TimeoutError"
        assert "timed out" in caught.value.error.message and caught.value.error.traceback


async def test_retrying_a_finished_periodic_run_does_not_fork_its_series() -> None:
    async with omniq.AsyncOmniQ(db_url="memory://", retry_backoff=0.01) as q:
        async with omniq.AsyncWorkerPool(q, concurrency=1):
            handle = await q.enqueue_call(own_timeout, interval=timedelta(seconds=30), delay=0)
            await asyncio.wait_for(asyncio.shield(_settled(q, handle.id)), 15)
            again = await q.retry(handle.id)
            await asyncio.wait_for(asyncio.shield(_settled(q, again.id)), 15)
        series = [t for t in await q.list(limit=20) if t.series == handle.id]
        assert sum(t.status is TaskStatus.PENDING for t in series) == 1


async def _settled(q: omniq.AsyncOmniQ, task_id: str) -> None:
    with pytest.raises(omniq.TaskFailed):
        await q.result(task_id)


async def test_an_expired_periodic_run_keeps_the_schedule_going() -> None:
    async with omniq.AsyncOmniQ(db_url="memory://", poll_interval=0.05) as q:
        handle = await q.enqueue_call(tick, interval=timedelta(seconds=0.5), ttl=0.2)
        # a pool on another queue runs nothing here, but its upkeep expires the overdue run
        async with omniq.AsyncWorkerPool(q, concurrency=1, queues=["nobody-serves-this"]):
            await wait_for_status(q, handle.id, "expired")
            deadline = time.monotonic() + 15
            while not any(t.series == handle.id and t.status is TaskStatus.PENDING for t in await q.list(limit=20)):
                assert time.monotonic() < deadline, "the series got no next run after an expired one"
                await asyncio.sleep(0.02)


async def test_bad_arguments_are_clear_errors() -> None:
    async with omniq.AsyncOmniQ(db_url="memory://") as q:
        with pytest.raises(TypeError, match="args=5 must be a tuple"):
            await q.enqueue_call(tick, args=5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"kwargs=.* must be a mapping"):
            await q.enqueue_call(tick, kwargs=[1, 2])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="calls=5 must be an iterable"):
            await q.enqueue_many(tick, 5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="status=5"):
            await q.list(status=5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="not one id"):
            await q.results("abc")
        with pytest.raises(ValueError, match="since='x'"):
            await q.events(since="x")  # type: ignore[arg-type]


async def test_an_attempt_abandoned_before_its_first_step_frees_its_slot_and_lease(
    tmp_path: Path, wait_until: Callable[..., Awaitable[None]]
) -> None:
    async with (
        omniq.AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'q.db'}", poll_interval=0.05) as q,
        omniq.AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5) as pool,
    ):
        first = await q.enqueue(nap, 0.0)
        abandoned: list[str] = []

        def abandon_at_once(tasks: Sequence[Task]) -> None:  # on the claim's publish: before the job starts
            for task in tasks:
                if task.id == first.id and task.status is TaskStatus.RUNNING and not abandoned:
                    abandoned.append(task.id)
                    pool._abandon(task.id, "abandoned by the test")

        q.on_local_write(abandon_at_once)
        await wait_until(lambda: bool(abandoned), timeout=15)
        await wait_until(lambda: pool.busy == 0, timeout=15)
        assert pool._keeper is not None and not pool._keeper._leases
        assert await (await q.enqueue(tick)).result(timeout=15) == 1  # the slot is usable again


async def test_a_dead_idle_child_process_is_replaced(
    tmp_path: Path, wait_until: Callable[..., Awaitable[None]]
) -> None:
    async with (
        omniq.AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'q.db'}", poll_interval=0.05) as q,
        omniq.AsyncWorkerPool(q, concurrency=1, kind="process", lease=5) as pool,
    ):
        child = await (await q.enqueue(wt.pid)).result(timeout=30)
        os.kill(child, signal.SIGKILL)  # dies while idle, between tasks
        await wait_until(lambda: not any(c.alive for c in pool._children), timeout=15)  # gone, not dying
        fresh = await (await q.enqueue(wt.pid)).result(timeout=30)
        assert fresh != child


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


async def test_releasing_an_old_lease_keeps_the_newer_lease_of_the_same_task() -> None:
    info = omniq.WorkerInfo(id="k", name="k", host="h", pid=1, kind="thread", concurrency=1, queues=("default",))
    loop = asyncio.get_running_loop()
    keeper = _LeaseKeeper(omniq.AsyncOmniQ(db_url="memory://").storage, 5, 1, loop, print, info, print)
    keeper.hold("t", "attempt-1")
    keeper.hold("t", "attempt-2")  # the task was re-claimed while attempt 1 was still ending
    keeper.release("t", "attempt-1")
    assert keeper._leases == {"t": "attempt-2"}
    keeper.release("t", "attempt-2")
    assert keeper._leases == {}


def test_a_cancelled_task_reports_no_more_progress() -> None:
    reports: list[Progress] = []
    context = TaskContext("t", 1, "default", "r1", reports.append)
    context.report(Progress(1, 2))
    context.cancel()
    context.report(Progress(2, 2))  # a timed-out thread still running: a newer attempt may own the task
    assert reports == [Progress(1, 2)]


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


def too_deep_result() -> list[object]:
    value: list[object] = []
    for _ in range(100_000):
        value = [value]
    return value


def raise_too_deep() -> None:
    raise ValueError(too_deep_result())  # str() of this error recurses too deeply


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


async def test_a_stored_cron_that_never_matches_ends_its_series_and_the_worker_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with omniq.AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'q.db'}", poll_interval=0.05) as q:
        parked = await q.enqueue_call(tick, cron="* * * * *", delay=0, queue="parked")
        task_id = new_task_id()  # as an older version, or a year-bounded cron run out, left it:
        stored = msgspec.structs.replace(
            parked.task, id=task_id, series=task_id, queue="default", schedule=omniq.Schedule(cron="0 0 31 2 *")
        )
        await q.storage.insert([stored])
        async with omniq.AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5):
            assert await (await q.get(task_id)).result(timeout=30) == 1
            assert await (await q.enqueue(tick)).result(timeout=30) == 1
        assert [t.id for t in await q.list(queue="default") if t.series == task_id] == [task_id]  # no next run
    assert "'0 0 31 2 *' matches no time" in caplog.text
