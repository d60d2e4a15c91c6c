from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest

from omniq_nb.models import Task, TaskError, TaskResult, TaskStatus
from omniq_nb.storage import Storage

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]
At = Callable[[float], datetime]
Eventually = Callable[..., Awaitable[Any]]

BOOM = TaskError(type="builtins.ValueError", message="boom", traceback="Traceback ...", attempt=1)


async def claim(store: Storage, n: int = 10) -> list[Task]:
    return await store.claim(queues=["default"], limit=n, lease=30, worker="w")


def token(task: Task) -> str:
    assert task.lease_token is not None
    return task.lease_token


def outcome(task: Task, status: TaskStatus, **fields: Any) -> TaskResult:
    return TaskResult(task_id=task.id, lease_token=token(task), status=status, **fields)


async def test_retry_waits_for_its_eta_and_uses_one_attempt_per_claim(
    store: Storage, make_task: MakeTask, at: At, eventually: Eventually
) -> None:
    await store.insert([make_task(retries=2)])
    [first] = await claim(store)
    assert first.attempt == 1

    eta = at(1.0)
    [back] = await store.settle([outcome(first, TaskStatus.PENDING, error=BOOM, eta=eta)])
    assert (back.status, back.attempt, back.eta, back.lease_token) == (TaskStatus.PENDING, 1, eta, None)
    assert back.finished_at is None
    assert await claim(store) == []
    stored = await store.get(first.id)
    assert stored is not None
    assert (stored.status, stored.attempt) == (TaskStatus.PENDING, 1)

    [second] = await eventually(lambda: claim(store), what="the retry to become claimable at its eta")
    assert second.started_at is not None
    assert second.started_at >= eta
    assert (second.id, second.attempt) == (first.id, 2)
    assert second.lease_token != first.lease_token

    [third_round] = await store.settle([outcome(second, TaskStatus.PENDING, error=BOOM, eta=at(-1))])
    assert third_round.attempt == 2
    [third] = await claim(store)
    assert third.attempt == 3
    [failed] = await store.settle([outcome(third, TaskStatus.FAILED, error=BOOM)])
    assert (failed.status, failed.attempt, failed.error) == (TaskStatus.FAILED, 3, BOOM)


async def test_retry_without_eta_keeps_the_old_eta(store: Storage, make_task: MakeTask) -> None:
    task = make_task(retries=1)
    await store.insert([task])
    [first] = await claim(store)
    [back] = await store.settle([outcome(first, TaskStatus.PENDING)])
    assert back.eta == task.eta
    [second] = await claim(store)
    assert second.attempt == 2


async def test_release_hands_back_without_using_an_attempt(store: Storage, make_task: MakeTask) -> None:
    await store.insert([make_task(), make_task()])
    kept, handed_back = await claim(store, 2)

    [released] = await store.release(leases={handed_back.id: token(handed_back)})
    assert released.id == handed_back.id
    assert (released.status, released.attempt, released.lease_token) == (TaskStatus.PENDING, 0, None)
    assert released.lease_until is None
    assert released.worker is None
    assert released.finished_at is None
    assert await store.get(handed_back.id) == released
    still = await store.get(kept.id)
    assert still is not None
    assert still.status is TaskStatus.RUNNING

    [again] = await claim(store)
    assert (again.id, again.attempt) == (handed_back.id, 1)


async def test_release_of_many(store: Storage, make_task: MakeTask) -> None:
    await store.insert([make_task() for _ in range(5)])
    claimed = await claim(store)
    released = await store.release(leases={t.id: token(t) for t in claimed})
    assert {t.id for t in released} == {t.id for t in claimed}
    assert {(t.status, t.attempt) for t in released} == {(TaskStatus.PENDING, 0)}
    assert len(await claim(store)) == 5


@pytest.mark.parametrize("how", ["failed", "cancelled-pending", "cancelled-running"])
async def test_requeue_allows_one_more_attempt(store: Storage, make_task: MakeTask, how: str) -> None:
    task = make_task(retries=0)
    await store.insert([task])
    if how == "cancelled-pending":
        await store.cancel(task.id)
        attempts = 0
    else:
        [running] = await claim(store)
        attempts = 1
        if how == "failed":
            assert await store.settle([outcome(running, TaskStatus.FAILED, error=BOOM)])
        else:
            await store.cancel(task.id)

    again = await store.requeue(task.id)
    assert again is not None
    assert (again.status, again.attempt, again.finished_at, again.lease_token) == (
        TaskStatus.PENDING,
        attempts,
        None,
        None,
    )
    assert again.max_attempts > again.attempt
    assert await store.get(task.id) == again

    [rerun] = await claim(store)
    assert (rerun.id, rerun.attempt) == (task.id, attempts + 1)
    [done] = await store.settle([outcome(rerun, TaskStatus.SUCCEEDED, result=b"ok")])
    assert done.status is TaskStatus.SUCCEEDED


async def test_requeue_of_an_expired_task_makes_it_claimable(store: Storage, make_task: MakeTask, at: At) -> None:
    task = make_task(created_at=at(-60), eta=at(-60), expires_at=at(-30))
    await store.insert([task])
    assert [t.id for t in await store.expire()] == [task.id]

    again = await store.requeue(task.id)
    assert again is not None
    assert again.status is TaskStatus.PENDING
    assert again.expires_at is not None
    assert again.expires_at > await store.now()
    [rerun] = await claim(store)
    assert (rerun.id, rerun.attempt) == (task.id, 1)


@pytest.mark.parametrize("status", [TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCEEDED])
async def test_requeue_leaves_other_statuses_unchanged(store: Storage, make_task: MakeTask, status: TaskStatus) -> None:
    await store.insert([make_task()])
    if status is not TaskStatus.PENDING:
        [running] = await claim(store)
        if status is TaskStatus.SUCCEEDED:
            await store.settle([outcome(running, TaskStatus.SUCCEEDED, result=b"ok")])
    [before] = await store.list()
    assert before.status is status
    assert await store.requeue(before.id) == before
    assert await store.get(before.id) == before


async def test_requeue_and_cancel_of_an_unknown_id_return_none(store: Storage) -> None:
    assert await store.requeue("0" * 32) is None
    assert await store.cancel("0" * 32) is None
    assert await store.list() == []


async def test_cancel_of_a_pending_task(store: Storage, make_task: MakeTask) -> None:
    task = make_task()
    await store.insert([task])
    cancelled = await store.cancel(task.id)
    assert cancelled is not None
    assert cancelled.status is TaskStatus.CANCELLED
    assert cancelled.finished_at is not None
    assert await store.get(task.id) == cancelled
    assert await claim(store) == []


async def test_cancel_of_a_running_task_fences_its_worker(store: Storage, make_task: MakeTask) -> None:
    await store.insert([make_task()])
    [running] = await claim(store)
    cancelled = await store.cancel(running.id)
    assert cancelled is not None
    assert (cancelled.status, cancelled.attempt) == (TaskStatus.CANCELLED, 1)
    assert cancelled.finished_at is not None
    assert cancelled.lease_until is None

    assert await store.settle([outcome(running, TaskStatus.SUCCEEDED, result=b"late")]) == []
    assert not await store.progress(task_id=running.id, lease_token=token(running), done=1, total=2, message=None)
    assert await store.renew(leases={running.id: token(running)}, lease=30) == set()
    assert await store.release(leases={running.id: token(running)}) == []
    assert await store.expired_leases(limit=10) == []
    assert await store.get(running.id) == cancelled


@pytest.mark.parametrize("status", [TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED])
async def test_cancel_of_a_finished_task_returns_it_unchanged(
    store: Storage, make_task: MakeTask, status: TaskStatus
) -> None:
    task = make_task()
    await store.insert([task])
    if status is TaskStatus.CANCELLED:
        await store.cancel(task.id)
    else:
        [running] = await claim(store)
        await store.settle([outcome(running, status, result=b"ok" if status is TaskStatus.SUCCEEDED else None)])
    before = await store.get(task.id)
    assert before is not None
    assert before.status is status
    assert await store.cancel(task.id) == before
    assert await store.get(task.id) == before
