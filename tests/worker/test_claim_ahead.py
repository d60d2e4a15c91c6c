"""Claiming ahead: a pool whose runs are quick claims more tasks than it has free slots.

The claimed tasks wait in the pool, their leases held, and start as slots free up. A pool
whose runs are slow claims only its free slots; tasks that wait too long for a slot go back
to the queue for another worker; a cancel or a stop reaches a waiting task too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import worker_tasks as wt
from pool_helpers import stored

import omniq_nb as omniq
from omniq_nb import AsyncOmniQ, AsyncWorkerPool, TaskStatus
from omniq_nb.worker import pool as pool_module

pytestmark = pytest.mark.anyio

Wait = Callable[..., Awaitable[None]]


async def quick(i: int) -> int:
    return i


async def slow(i: int) -> int:
    await asyncio.sleep(0.05)
    return i


def spy_on_claims(q: AsyncOmniQ, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the ``limit`` of every claim the store serves (the store still does the work)."""
    limits: list[int] = []
    claim = q.storage.claim

    async def recording_claim(**kwargs: Any) -> Any:
        limits.append(kwargs["limit"])
        return await claim(**kwargs)

    monkeypatch.setattr(q.storage, "claim", recording_claim)
    return limits


async def test_a_pool_of_quick_runs_claims_more_than_its_free_slots(
    q: AsyncOmniQ, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = spy_on_claims(q, monkeypatch)
    async with AsyncWorkerPool(q, concurrency=2):
        handles = await q.enqueue_many(quick, [(i,) for i in range(300)])
        assert await handles.result(timeout=60) == list(range(300))
    assert max(limits) > 2
    assert {t.attempt for t in await q.list(limit=1000)} == {1}  # each ran once


async def test_an_idle_pool_claims_once_per_task_it_is_given(
    db_url: str, monkeypatch: pytest.MonkeyPatch, wait_until: Wait
) -> None:
    """A claim that got fewer tasks than asked means none is left: the pool waits for news.

    Neither its own claim nor its runs' outcomes (rows claimed or finished, no pending one)
    wake it to claim nothing beside its runs; an enqueue does, once.
    """
    async with AsyncOmniQ(db_url=db_url, poll_interval=60) as q:
        limits = spy_on_claims(q, monkeypatch)
        async with AsyncWorkerPool(q, concurrency=2, kind="thread"):
            await wait_until(lambda: len(limits) == 1, timeout=10)  # its first claim, at start, found nothing
            for i in range(10):
                assert await (await q.enqueue(wt.add, i, 1)).result(timeout=30) == i + 1
    assert len(limits) == 1 + 10


async def test_a_pool_of_slow_runs_claims_only_its_free_slots(q: AsyncOmniQ, monkeypatch: pytest.MonkeyPatch) -> None:
    limits = spy_on_claims(q, monkeypatch)
    async with AsyncWorkerPool(q, concurrency=2):
        handles = await q.enqueue_many(slow, [(i,) for i in range(12)])
        assert await handles.result(timeout=60) == list(range(12))
    assert limits and max(limits) <= 2


async def claimed_behind_a_blocker(
    q: AsyncOmniQ, pool: AsyncWorkerPool, tmp_path: Path, wait_until: Wait
) -> tuple[omniq.TaskHandle, list[omniq.TaskHandle], Path]:
    """Make ``pool`` (one slot) quick, then have it claim a blocking task and three quick ones behind it."""
    assert await (await q.enqueue_many(quick, [(i,) for i in range(30)])).result(timeout=60) == list(range(30))
    gate = tmp_path / "gate"
    blocker = await q.enqueue(wt.async_gated, str(tmp_path), "blocker", str(gate))
    await wait_until(lambda: (tmp_path / "blocker.start").exists(), timeout=15)
    behind = list(await q.enqueue_many(quick, [(i,) for i in range(3)]))
    await wait_until(lambda: len(pool._runs.waiting) == 3, timeout=15)
    return blocker, behind, gate


async def test_tasks_that_wait_too_long_for_a_slot_go_back_to_an_idle_worker(
    q: AsyncOmniQ, db_url: str, tmp_path: Path, wait_until: Wait
) -> None:
    async with AsyncWorkerPool(q, concurrency=1) as busy:
        blocker, behind, gate = await claimed_behind_a_blocker(q, busy, tmp_path, wait_until)
        async with AsyncOmniQ(db_url=db_url, poll_interval=0.05) as other, AsyncWorkerPool(other) as idle:
            for handle in behind:
                assert await handle.result(timeout=30) == behind.index(handle)
            for handle in behind:
                task = await stored(q, handle.id)
                assert (task.worker, task.attempt) == (idle.name, 1)  # handed back without using an attempt
            assert (await stored(q, blocker.id)).status is TaskStatus.RUNNING
        gate.touch()
        assert await blocker.result(timeout=30) == "blocker"


async def test_cancelling_a_task_that_waits_for_a_slot_drops_it(
    q: AsyncOmniQ, tmp_path: Path, wait_until: Wait, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_module, "HAND_BACK_AFTER", 60.0)  # it stays waiting for the whole test
    async with AsyncWorkerPool(q, concurrency=1) as pool:
        blocker, behind, gate = await claimed_behind_a_blocker(q, pool, tmp_path, wait_until)
        dropped = behind[2]
        await q.cancel(dropped.id)
        await wait_until(lambda: not pool._runs.holds(dropped.id), timeout=15)
        assert pool._keeper is not None and dropped.id not in pool._keeper._leases
        gate.touch()
        assert await blocker.result(timeout=30) == "blocker"
        for handle in behind:
            if handle is not dropped:
                assert await handle.result(timeout=30) == behind.index(handle)
    task = await stored(q, dropped.id)
    assert (task.status, task.has_value) == (TaskStatus.CANCELLED, False)


async def test_stopping_a_pool_hands_its_waiting_tasks_back_unrun(
    q: AsyncOmniQ, tmp_path: Path, wait_until: Wait, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_module, "HAND_BACK_AFTER", 60.0)
    pool = AsyncWorkerPool(q, concurrency=1)
    await pool.start()
    blocker, behind, gate = await claimed_behind_a_blocker(q, pool, tmp_path, wait_until)
    await pool.stop(timeout=0.2)
    for handle in [blocker, *behind]:
        task = await stored(q, handle.id)
        assert (task.status, task.attempt) == (TaskStatus.PENDING, 0)
    gate.touch()
    async with AsyncWorkerPool(q):
        assert await blocker.result(timeout=30) == "blocker"
        assert [await h.result(timeout=30) for h in behind] == list(range(3))


async def test_an_at_most_once_task_never_waits_in_a_pool_for_a_slot(
    q: AsyncOmniQ, tmp_path: Path, wait_until: Wait, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_module, "HAND_BACK_AFTER", 60.0)
    claimed: list[str] = []
    claim = q.storage.claim

    async def recording_claim(**kwargs: Any) -> Any:
        tasks = await claim(**kwargs)
        claimed.extend(t.id for t in tasks)
        return tasks

    monkeypatch.setattr(q.storage, "claim", recording_claim)
    async with AsyncWorkerPool(q, concurrency=1) as pool:
        _, behind, gate = await claimed_behind_a_blocker(q, pool, tmp_path, wait_until)
        once = await q.enqueue_call(quick, args=(7,), at_most_once=True)
        await wait_until(lambda: once.id in claimed, timeout=15)
        assert not pool._runs.holds(once.id)  # handed straight back: a crash now cannot fail it unrun
        task = await stored(q, once.id)
        assert (task.status, task.attempt) == (TaskStatus.PENDING, 0)
        assert len(pool._runs.waiting) == 3  # the others still wait
        gate.touch()
        assert await once.result(timeout=30) == 7
        assert [await h.result(timeout=30) for h in behind] == list(range(3))
