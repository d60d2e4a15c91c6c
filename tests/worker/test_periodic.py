"""Interval and cron tasks: the next run of a series, retried or expired runs, a cron that never matches."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
import worker_tasks as wt
from pool_helpers import own_timeout, series_of, stored, wait_for_status

import omniq_nb as omniq
from omniq_nb import AsyncOmniQ, AsyncWorkerPool, Task, TaskStatus
from omniq_nb.models import new_task_id

pytestmark = pytest.mark.anyio

UTC = timezone.utc
Wait = Callable[..., Any]
RESULT_WAIT = 30.0  # seconds a test waits for a result at most (generous: a loaded 2-core machine)


def tick() -> int:
    return 1


async def _settled(q: omniq.AsyncOmniQ, task_id: str) -> None:
    with pytest.raises(omniq.TaskFailed):
        await q.result(task_id)


async def test_interval_task_reschedules_itself_after_each_run(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    lines = tmp_path / "runs"
    h = await q.enqueue_call(wt.append_line, args=(str(lines),), interval=0.3)
    async with AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5):

        async def three_runs_and_a_next() -> bool:
            tasks = await series_of(q, h.id)
            done = [t for t in tasks if t.status is TaskStatus.SUCCEEDED]
            return len(done) >= 3 and any(t.status is TaskStatus.PENDING for t in tasks)

        await wait_until(three_runs_and_a_next, timeout=RESULT_WAIT)
    tasks = sorted(await series_of(q, h.id), key=lambda t: t.eta)
    assert tasks[0].id == h.id
    assert len({t.id for t in tasks}) == len(tasks)
    assert all(t.name == tasks[0].name for t in tasks)
    assert len(lines.read_text().splitlines()) == sum(t.status is TaskStatus.SUCCEEDED for t in tasks)
    pending = [t for t in tasks if t.status is TaskStatus.PENDING]
    assert len(pending) == 1, "exactly one next run is scheduled"
    assert pending[0].attempt == 0
    for earlier, later in itertools.pairwise(tasks):
        assert (later.eta - earlier.eta).total_seconds() >= 0.3 - 1e-3


async def test_cron_task_gets_its_next_run_at_the_right_minute(q: AsyncOmniQ, wait_until: Wait) -> None:
    h = await q.enqueue_call(wt.add, args=(1, 2), cron="*/2 * * * *", eta=datetime.now(UTC))
    following: list[Task] = []

    async def scheduled() -> bool:
        following[:] = [t for t in await series_of(q, h.id) if t.id != h.id]
        return bool(following)

    async with AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5):
        assert await h.result(timeout=RESULT_WAIT) == 3
        await wait_until(scheduled, timeout=RESULT_WAIT)
    [after] = following
    ran = await stored(q, h.id)
    assert ran.finished_at is not None
    assert after.status is TaskStatus.PENDING
    assert after.eta.second == 0 and after.eta.microsecond == 0
    assert after.eta.minute % 2 == 0
    assert ran.finished_at < after.eta <= ran.finished_at + timedelta(minutes=2)
    assert after.series == h.id


async def test_retrying_a_finished_periodic_run_does_not_fork_its_series() -> None:
    async with omniq.AsyncOmniQ(db_url="memory://", retry_backoff=0.01) as q:
        async with omniq.AsyncWorkerPool(q, concurrency=1):
            handle = await q.enqueue_call(own_timeout, interval=timedelta(seconds=30), delay=0)
            await asyncio.wait_for(asyncio.shield(_settled(q, handle.id)), 15)
            again = await q.retry(handle.id)
            await asyncio.wait_for(asyncio.shield(_settled(q, again.id)), 15)
        series = [t for t in await q.list(limit=20) if t.series == handle.id]
        assert sum(t.status is TaskStatus.PENDING for t in series) == 1


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


async def test_a_stored_cron_that_never_matches_ends_its_series_and_the_worker_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with omniq.AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'q.db'}", poll_interval=0.05) as q:
        parked = await q.enqueue_call(tick, cron="* * * * *", delay=0, queue="parked")
        task_id = new_task_id()  # as an older version, or a year-bounded cron run out, left it:
        row = await q.storage.get(parked.id)  # with its payload (a handle keeps none)
        assert row is not None
        stored = msgspec.structs.replace(
            row, id=task_id, series=task_id, queue="default", schedule=omniq.Schedule(cron="0 0 31 2 *")
        )
        await q.storage.insert([stored])
        async with omniq.AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5):
            assert await (await q.get(task_id)).result(timeout=30) == 1
            assert await (await q.enqueue(tick)).result(timeout=30) == 1
        assert [t.id for t in await q.list(queue="default") if t.series == task_id] == [task_id]  # no next run
    assert "'0 0 31 2 *' matches no time" in caplog.text


async def test_a_handle_of_the_next_run_sees_the_cancel_of_its_series(q: AsyncOmniQ, wait_until: Wait) -> None:
    """Cancelling any run stops the series: the handle of its next run, in this process, says so.

    The cancel's row names only the run cancelled; the next run's change reaches its handle
    through the event its cancel recorded (nobody waits for a result here).
    """
    h = await q.enqueue_call(wt.add, args=(1, 2), interval=3600, delay=0)  # the first run now, the next in an hour
    async with AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5):
        assert await h.result(timeout=RESULT_WAIT) == 3

        async def next_run() -> Task | None:
            return next((t for t in await series_of(q, h.id) if t.status is TaskStatus.PENDING), None)

        await wait_until(next_run, timeout=RESULT_WAIT)
        upcoming = await q.get((await next_run()).id)  # type: ignore[union-attr]
        assert upcoming.status == "pending"
        assert await q.cancel(h.id) is False  # it had finished; its series' next run had not
        await wait_until(lambda: upcoming.status == "cancelled", timeout=RESULT_WAIT)
