"""``Maintenance`` runs alone, without a pool: rescue of lapsed leases, expiry with schedule continuation, purge."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pytest

import omniq_nb as omniq
from omniq_nb.errors import StorageError
from omniq_nb.models import Task, TaskStatus
from omniq_nb.worker import Maintenance
from omniq_nb.worker.link import StoreLink

pytestmark = pytest.mark.anyio


def add(a: int, b: int) -> int:
    return a + b


async def test_run_once_rescues_a_task_whose_lease_ran_out() -> None:
    async with omniq.AsyncOmniQ(db_url="memory://") as q:
        h = await q.enqueue_call(add, args=(1, 2), retries=2)
        [claimed] = await q.storage.claim(queues=["default"], limit=1, lease=0.05, worker="gone")
        assert claimed.id == h.id
        published: list[Task] = []
        q.on_local_write(lambda tasks: published.extend(tasks))
        await asyncio.sleep(0.2)  # the worker that claimed it never renews: its lease lapses

        await Maintenance(q).run_once()

        task = (await q.get(h.id)).task
        assert (task.status, task.attempt) == (TaskStatus.PENDING, 1)
        assert task.error is not None and "lost" in task.error.message
        assert [t.id for t in published] == [h.id]


async def test_run_once_fails_an_at_most_once_task_whose_lease_ran_out() -> None:
    async with omniq.AsyncOmniQ(db_url="memory://") as q:
        h = await q.enqueue_call(add, args=(1, 2), retries=2, at_most_once=True)
        await q.storage.claim(queues=["default"], limit=1, lease=0.05, worker="gone")
        await asyncio.sleep(0.2)
        await Maintenance(q).run_once()
        with pytest.raises(omniq.WorkerLost):
            await h.result(timeout=5)


async def test_a_lapsed_lease_this_process_still_renews_is_not_rescued(tmp_path: Path) -> None:
    """An outage kept its renewals (or its outcome) from the store: the holder is alive, here."""
    async with omniq.AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'q.db'}") as q:
        h = await q.enqueue_call(add, args=(1, 2))
        [claimed] = await q.storage.claim(queues=["default"], limit=1, lease=0.05, worker="here")
        await asyncio.sleep(0.2)  # the lease lapses in the store's eyes
        assert [t.id for t in await q.storage.expired_leases(limit=10)] == [h.id]

        await Maintenance(q, held=lambda: {h.id: claimed.lease_token or ""}).run_once()
        assert (await q.get(h.id)).status == TaskStatus.RUNNING
        await Maintenance(q, held=lambda: {h.id: "an older lease"}).run_once()
        assert (await q.get(h.id)).status == TaskStatus.FAILED  # no retries left: lost


async def test_nothing_is_rescued_within_the_grace_after_the_store_came_back(tmp_path: Path) -> None:
    """Workers cut off by the same outage get one lease to renew before their tasks are rescued."""
    async with omniq.AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'q.db'}") as q:
        h = await q.enqueue_call(add, args=(1, 2), retries=1)
        await q.storage.claim(queues=["default"], limit=1, lease=0.05, worker="cut off")
        await asyncio.sleep(0.2)
        link = StoreLink("pool", q.storage.url)
        started = time.monotonic()
        link.failed(StorageError("the server went away"), started)
        link.succeeded(time.monotonic())  # back

        await Maintenance(q, link=link, grace=3600).run_once()
        assert (await q.get(h.id)).status == TaskStatus.RUNNING
        await Maintenance(q, link=link, grace=0).run_once()
        assert (await q.get(h.id)).task.status == TaskStatus.PENDING  # rescued: its retry waits


async def test_run_once_expires_a_pending_task_and_keeps_its_schedule_going() -> None:
    async with omniq.AsyncOmniQ(db_url="memory://") as q:
        h = await q.enqueue_call(add, args=(1, 2), ttl=0.05, interval=3600, eta=datetime.now(timezone.utc))
        await asyncio.sleep(0.2)

        await Maintenance(q).run_once()

        assert (await q.get(h.id)).status == TaskStatus.EXPIRED
        series = [t for t in await q.list(limit=10) if t.series == h.task.series and t.id != h.id]
        assert [t.status for t in series] == [TaskStatus.PENDING]  # the next run of the interval


async def test_run_once_purges_finished_tasks_past_their_result_ttl_unless_told_not_to() -> None:
    async with omniq.AsyncOmniQ(db_url="memory://") as q:
        async with omniq.AsyncWorkerPool(q, concurrency=1, kind="async"):
            h = await q.enqueue_call(add, args=(1, 2), result_ttl=0.05)
            assert await h.result(timeout=5) == 3
        await asyncio.sleep(0.2)
        await Maintenance(q).run_once(purge=False)
        assert [t.id for t in await q.list()] == [h.id]
        await Maintenance(q).run_once()
        assert await q.list() == []


async def test_run_steps_until_cancelled_and_survives_a_failing_step(
    caplog: pytest.LogCaptureFixture, wait_until: Callable[..., Awaitable[None]]
) -> None:
    steps: list[str] = []

    class FlakyStore:
        async def lead_maintenance(self, runner: str, *, term: float) -> bool:
            return True

        async def expired_leases(self, *, limit: int) -> Sequence[Task]:
            steps.append("rescue")
            if len(steps) == 1:
                raise OSError("the store hiccuped")
            return []

        async def expire(self) -> list[Task]:
            return []

        async def checkpoint(self) -> None:
            return None

        async def purge(self) -> int:
            return 0

    class Host:
        storage = FlakyStore()

    runner = asyncio.ensure_future(Maintenance(Host(), interval=0.01).run())  # type: ignore[arg-type]
    try:
        await wait_until(lambda: len(steps) >= 3)
    finally:
        runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert "store upkeep failed" in caplog.text


def test_only_an_outage_long_enough_to_let_a_lease_run_out_starts_a_grace() -> None:
    link = StoreLink("pool", "sqlite:///q.db", long_outage=3600)
    link.failed(StorageError("a hiccup"), time.monotonic())
    assert link.steady_for() == 0.0  # lost
    link.succeeded(time.monotonic())
    assert link.steady_for() == float("inf")  # a short outage: nothing to wait for
