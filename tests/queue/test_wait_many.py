"""Waiting for many tasks as a set: groups finished elsewhere, failures in input order, no needless store reads."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
import worker_tasks as wt
from emulated_worker import add, boom_error, claim, fail, succeed
from processes import Processes

from omniq_nb import AsyncOmniQ, AsyncWorkerPool, GroupHandle, Task, TaskFailed, TaskNotFound
from omniq_nb.errors import StoreLost
from omniq_nb.storage.sqlite import SQLiteStorage
from omniq_nb.waiters import Expiries

pytestmark = pytest.mark.anyio


class CountingStorage(SQLiteStorage):
    """The SQLite store, counting the reads of task rows that result() may make."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.reads = 0

    async def get(self, task_id: str) -> Task | None:
        self.reads += 1
        return await super().get(task_id)

    async def get_many(self, task_ids: Sequence[str]) -> list[Task]:
        self.reads += 1
        return await super().get_many(task_ids)


async def test_result_of_a_task_finished_in_this_process_reads_no_row(sqlite_url: str) -> None:
    store = CountingStorage(sqlite_url)
    async with AsyncOmniQ(storage=store) as q:
        h = await q.enqueue(add, 1, 2)
        group = await q.enqueue_many(add, [(i, i) for i in range(20)])
        async with AsyncWorkerPool(q, concurrency=4, kind="async"):
            assert await h.result(timeout=10) == 3
            assert await group.result(timeout=10) == [2 * i for i in range(20)]
        before = store.reads
        assert await h.result(timeout=10) == 3
        assert await group.result(timeout=10) == [2 * i for i in range(20)]
        assert [await g.result() for g in group] == [2 * i for i in range(20)]
        assert store.reads == before


async def test_awaiting_handles_this_process_follows_reads_no_row(sqlite_url: str) -> None:
    store = CountingStorage(sqlite_url)
    async with AsyncOmniQ(storage=store) as q:
        handles = [await q.enqueue(add, i, 1) for i in range(5)]
        before = store.reads
        async with AsyncWorkerPool(q, concurrency=2, kind="async"):
            assert [await h.result(timeout=10) for h in handles] == [1, 2, 3, 4, 5]
            assert await (await q.enqueue(add, 2, 2)).result(timeout=10) == 4  # the handle lives while it waits
        assert store.reads == before  # the events keep their snapshots current: no read when a wait begins


async def test_a_followed_handle_whose_task_is_purged_ends_its_wait_with_task_not_found(sqlite_url: str) -> None:
    async with AsyncOmniQ(db_url=sqlite_url) as q:
        h = await q.enqueue(add, 1, 2)  # no worker: it stays pending, followed through the events
        assert await q.purge(everything=True) == 1
        with pytest.raises(TaskNotFound):
            await h.result(timeout=30)  # the safety re-read finds no row (a purge records no event)


async def test_a_followed_handle_whose_store_file_is_deleted_ends_its_wait_with_store_lost(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with AsyncOmniQ(db_url=f"sqlite:///{path}") as q:
        h = await q.enqueue(add, 1, 2)
        path.unlink()
        with pytest.raises(StoreLost):
            await h.result(timeout=30)  # the follower's next poll finds the store gone, and says so


async def test_waits_started_together_read_their_rows_in_one_batch(sqlite_url: str) -> None:
    store = CountingStorage(sqlite_url)
    async with AsyncOmniQ(storage=store) as q:
        group = await q.enqueue_many(add, [(i,) for i in range(50)])
        values: list[Any] = []
        before = store.reads
        async with anyio.create_task_group() as tg:

            async def wait(index: int) -> None:
                values.append((index, await group[index].result(timeout=10)))

            for index in range(50):
                tg.start_soon(wait, index)
            for task in await claim(q, limit=50):
                await succeed(q, task, group.ids.index(task.id))
        assert sorted(values) == [(i, i) for i in range(50)]
        assert store.reads - before <= 2  # one batch, at most one safety re-read; not one read per wait


async def test_a_finished_wait_leaves_no_waiter_behind(q: AsyncOmniQ) -> None:
    """Tasks found finished by the store read, or never finished in time, are no longer awaited.

    A waiter left registered kept the hub polling fast and re-reading those tasks for ever.
    """
    group = await q.enqueue_many(add, [(i,) for i in range(10)])
    ids = list(group.ids)
    for task in await claim(q, limit=10):
        await succeed(q, task, ids.index(task.id))
    del group  # no handle holds the finished rows: the wait reads them from the store
    assert await q.results(ids, timeout=10) == list(range(10))
    assert not q._hub._waiters
    late = await q.enqueue(add, 1)
    with pytest.raises(TimeoutError):
        await q.results([*ids, late.id], timeout=0.2)
    assert not q._hub._waiters


async def test_waits_that_time_out_together_leave_no_timer_behind(q: AsyncOmniQ, wait_until: Any) -> None:
    """Waits ending within a step share one timer: it fires for those still waiting, and goes with the last."""
    group = await q.enqueue_many(add, [(i,) for i in range(200)])
    for task in await claim(q, limit=100):
        await succeed(q, task, 0)
    outcomes = await asyncio.gather(*(h.result(timeout=0.3) for h in group), return_exceptions=True)
    assert outcomes.count(0) == 100 and sum(isinstance(o, TimeoutError) for o in outcomes) == 100
    assert not q._hub._expiries._by_tick and not q._hub._waiters and not _expiry_timers()

    waiting = asyncio.ensure_future(group[150].result(timeout=1e307))  # as good as none: no overflow
    await wait_until(lambda: bool(q._hub._expiries._by_tick), timeout=5)  # the wait holds its timer
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not q._hub._expiries._by_tick and not q._hub._waiters and not _expiry_timers()


def _expiry_timers() -> list[asyncio.TimerHandle]:
    """Return the loop's timers of wait time-outs that are not cancelled."""
    scheduled: list[asyncio.TimerHandle] = getattr(asyncio.get_running_loop(), "_scheduled", [])
    return [t for t in scheduled if not t.cancelled() and getattr(t._callback, "__func__", None) is Expiries._expire]


async def test_a_failure_does_not_wait_for_the_tasks_after_it(q: AsyncOmniQ) -> None:
    """The first failure in order is raised once the tasks before it succeed, not after the rest finish."""
    first, failing, last = [await q.enqueue(add, i) for i in range(3)]
    for task in await claim(q, limit=2):  # ``last`` stays pending: nothing will ever finish it
        if task.id == first.id:
            await succeed(q, task, 0)
        else:
            await fail(q, task, boom_error())
    with pytest.raises(TaskFailed):
        await q.results([first.id, failing.id, last.id], timeout=10)
    with pytest.raises(TaskNotFound):
        await q.results(["no-such-task", last.id], timeout=10)


async def test_closing_the_queue_cancels_a_pending_result_wait(sqlite_url: str, wait_until: Any) -> None:
    q = AsyncOmniQ(db_url=sqlite_url)
    await q.open()
    h = await q.enqueue(add, 1)
    waiting = asyncio.ensure_future(h.result(timeout=60))
    await wait_until(lambda: q._hub._waiters)
    await q.close()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 10)


async def test_group_raises_the_first_failure_in_input_order(q: AsyncOmniQ) -> None:
    group = await q.enqueue_many(add, [(0,), (1,), (2,)])
    outcome: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def wait() -> None:
            try:
                outcome.append(await group.result(timeout=10))
            except TaskFailed as exc:
                outcome.append(exc)

        tg.start_soon(wait)
        first, second, third = sorted(await claim(q, limit=3), key=lambda t: group.ids.index(t.id))
        await fail(q, third, boom_error())  # a later member fails first: the group keeps waiting
        await anyio.sleep(0.05)
        assert not outcome
        await fail(q, second, boom_error())
        await anyio.sleep(0.05)
        assert not outcome  # the first member is still running
        await succeed(q, first, "ok")
    [error] = outcome
    assert isinstance(error, TaskFailed)
    assert error.task_id == second.id
    with pytest.raises(TaskFailed):
        await group.result(timeout=1)
    values = await group.result(timeout=1, return_exceptions=True)
    assert values[0] == "ok"
    assert [type(v) for v in values[1:]] == [TaskFailed, TaskFailed]


async def test_group_with_one_failed_member_returns_it_in_place(q: AsyncOmniQ) -> None:
    group = await q.enqueue_many(add, [(i,) for i in range(5)])
    for task in sorted(await claim(q, limit=5), key=lambda t: group.ids.index(t.id)):
        if task.id == group.ids[3]:
            await fail(q, task, boom_error())
        else:
            await succeed(q, task, group.ids.index(task.id))
    values = await group.result(timeout=5, return_exceptions=True)
    assert values[:3] == [0, 1, 2] and values[4] == 4
    assert isinstance(values[3], TaskFailed) and values[3].error.message == "bad input 7"


@pytest.mark.slow
async def test_group_finished_by_a_worker_in_another_process(
    tmp_path: Path, sqlite_url: str, wait_until_sync: Callable[..., Any]
) -> None:
    workers = Processes(tmp_path, wait_until_sync)
    try:
        async with AsyncOmniQ(db_url=sqlite_url, poll_interval=0.05) as q:
            group: GroupHandle = await q.enqueue_many(wt.add, [(i, 1) for i in range(30)])
            failing = await q.enqueue(wt.raise_value_error, "elsewhere")
            await anyio.to_thread.run_sync(
                lambda: workers.worker(sqlite_url, concurrency=4, program=(sys.executable, "-m", "omniq_nb"))
            )
            assert await group.result(timeout=60) == [i + 1 for i in range(30)]
            assert all(h.status == "succeeded" for h in group)
            both = GroupHandle(q, [group[0], failing])
            with pytest.raises(TaskFailed) as raised:
                await both.result(timeout=60)
            assert raised.value.error.type.endswith("ValueError")
    finally:
        workers.close()
