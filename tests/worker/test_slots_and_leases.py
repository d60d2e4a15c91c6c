"""A pool's slots and leases: freed by an abandoned attempt, kept for a re-claim, lease minimum."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pool_helpers import nap

import omniq_nb as omniq
from omniq_nb import AsyncOmniQ, AsyncWorkerPool, ConfigError, OmniQ, Task, TaskStatus, WorkerPool
from omniq_nb.worker.lease import LeaseKeeper

pytestmark = pytest.mark.anyio


def tick() -> int:
    return 1


@pytest.mark.parametrize("lease", [0.001, 0.5, 0, -1, float("nan"), "soon"])
async def test_a_lease_shorter_than_a_second_is_refused(q: AsyncOmniQ, lease: Any) -> None:
    with pytest.raises(ConfigError, match=r"lease=.*seconds >= 1") as info:
        AsyncWorkerPool(q, lease=lease)
    assert len(str(info.value).splitlines()) == 1
    assert AsyncWorkerPool(q, lease=1).lease == 1.0
    assert AsyncWorkerPool(q, lease=timedelta(minutes=1)).lease == 60.0


def test_the_blocking_pool_refuses_a_short_lease_too(db_url: str) -> None:
    with OmniQ(db_url=db_url) as q, pytest.raises(ConfigError, match=r"lease=0\.001 .*seconds >= 1"):
        WorkerPool(q, lease=0.001)


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
                    pool._runs.abandon(task.id, "abandoned by the test")

        q.on_local_write(abandon_at_once)
        await wait_until(lambda: bool(abandoned), timeout=15)
        await wait_until(lambda: pool.busy == 0, timeout=15)
        assert pool._keeper is not None and not pool._keeper._leases
        assert await (await q.enqueue(tick)).result(timeout=15) == 1  # the slot is usable again


async def test_releasing_an_old_lease_keeps_the_newer_lease_of_the_same_task() -> None:
    info = omniq.WorkerInfo(id="k", name="k", host="h", pid=1, kind="thread", concurrency=1, queues=("default",))
    loop = asyncio.get_running_loop()
    keeper = LeaseKeeper(omniq.AsyncOmniQ(db_url="memory://").storage, 5, 1, loop, print, info, print)
    keeper.hold("t", "attempt-1")
    keeper.hold("t", "attempt-2")  # the task was re-claimed while attempt 1 was still ending
    keeper.release("t", "attempt-1")
    assert keeper._leases == {"t": "attempt-2"}
    keeper.release("t", "attempt-2")
    assert keeper._leases == {}
