from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from omniq_nb.models import Task, TaskError, TaskResult, TaskStatus
from omniq_nb.storage import Storage

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]
LeaseLapsed = Callable[[str], Awaitable[Task]]

SHORT_LEASE = 0.2


async def claim(store: Storage, n: int = 1, *, lease: float = 30, worker: str = "w") -> list[Task]:
    claimed = await store.claim(queues=["default"], limit=n, lease=lease, worker=worker)
    assert len(claimed) == n
    return claimed


def token(task: Task) -> str:
    assert task.lease_token is not None
    return task.lease_token


def succeeded(task: Task, lease_token: str | None = None, *, rescue: bool = False) -> TaskResult:
    return TaskResult(
        task_id=task.id, lease_token=lease_token or token(task), status=TaskStatus.SUCCEEDED, result=b"r", rescue=rescue
    )


def rescued(task: Task) -> TaskResult:
    error = TaskError(type="omniq_nb.errors.WorkerLost", message="worker lost", attempt=task.attempt)
    return TaskResult(
        task_id=task.id, lease_token=token(task), status=TaskStatus.PENDING, error=error, eta=None, rescue=True
    )


async def test_renew_extends_only_leases_still_held(store: Storage, make_task: MakeTask) -> None:
    await store.insert([make_task() for _ in range(3)])
    held, finished, other = await claim(store, 3, lease=30)
    assert await store.settle([succeeded(finished)])

    renewed = await store.renew(
        leases={held.id: token(held), finished.id: token(finished), other.id: "0" * 32, "f" * 32: "0" * 32},
        lease=600,
    )
    assert renewed == {held.id}

    after = await store.get(held.id)
    assert after is not None
    assert held.lease_until is not None
    assert after.lease_until is not None
    assert after.lease_until.timestamp() > held.lease_until.timestamp() + 500
    assert (after.status, after.lease_token, after.attempt) == (TaskStatus.RUNNING, held.lease_token, 1)
    assert await store.get(other.id) == other
    assert await store.renew(leases={}, lease=30) == set()


async def test_renew_keeps_a_short_lease_alive(store: Storage, make_task: MakeTask) -> None:
    await store.insert([make_task()])
    [task] = await claim(store, lease=SHORT_LEASE)
    assert await store.renew(leases={task.id: token(task)}, lease=600) == {task.id}
    assert await store.expired_leases(limit=10) == []


async def test_expired_leases_lists_running_tasks_whose_lease_ran_out(
    store: Storage, make_task: MakeTask, lease_lapsed: LeaseLapsed
) -> None:
    await store.insert([make_task() for _ in range(3)])
    [short] = await claim(store, lease=SHORT_LEASE, worker="dying")
    [long] = await claim(store, lease=600)
    lapsed = await lease_lapsed(short.id)

    assert (lapsed.status, lapsed.lease_token, lapsed.worker) == (TaskStatus.RUNNING, short.lease_token, "dying")
    listed = await store.expired_leases(limit=10)
    assert [t.id for t in listed] == [short.id]
    assert long.id not in {t.id for t in listed}


async def test_expired_leases_honours_its_limit(store: Storage, make_task: MakeTask, lease_lapsed: LeaseLapsed) -> None:
    await store.insert([make_task() for _ in range(4)])
    claimed = await claim(store, 4, lease=SHORT_LEASE)
    for task in claimed:
        await lease_lapsed(task.id)
    assert len(await store.expired_leases(limit=3)) == 3
    assert {t.id for t in await store.expired_leases(limit=10)} == {t.id for t in claimed}


async def test_expired_leases_ignores_tasks_no_longer_running(
    store: Storage, make_task: MakeTask, lease_lapsed: LeaseLapsed
) -> None:
    await store.insert([make_task() for _ in range(3)])
    done, cancelled, waiting = await claim(store, 3, lease=SHORT_LEASE)
    await lease_lapsed(waiting.id)
    assert await store.settle([succeeded(done)])
    await store.cancel(cancelled.id)
    assert [t.id for t in await store.expired_leases(limit=10)] == [waiting.id]


async def test_a_wrong_token_changes_nothing(store: Storage, make_task: MakeTask) -> None:
    await store.insert([make_task()])
    [task] = await claim(store)
    wrong = "0" * 32

    assert await store.settle([succeeded(task, wrong)]) == []
    assert not await store.progress(task_id=task.id, lease_token=wrong, done=1, total=2, message="half")
    assert await store.renew(leases={task.id: wrong}, lease=600) == set()
    assert await store.release(leases={task.id: wrong}) == []
    assert await store.get(task.id) == task


async def test_a_stale_token_changes_nothing(store: Storage, make_task: MakeTask) -> None:
    await store.insert([make_task()])
    [first] = await claim(store)
    assert await store.release(leases={first.id: token(first)})
    [second] = await claim(store, worker="w2")
    stale = token(first)
    assert stale != second.lease_token

    assert await store.settle([succeeded(first, stale)]) == []
    assert not await store.progress(task_id=first.id, lease_token=stale, done=1, total=2, message="half")
    assert await store.renew(leases={first.id: stale}, lease=600) == set()
    assert await store.release(leases={first.id: stale}) == []
    assert await store.get(first.id) == second


async def test_a_token_of_a_finished_task_changes_nothing(store: Storage, make_task: MakeTask) -> None:
    await store.insert([make_task()])
    [task] = await claim(store)
    [done] = await store.settle([succeeded(task)])

    failure = TaskResult(
        task_id=task.id, lease_token=token(task), status=TaskStatus.FAILED, error=TaskError(type="E", message="late")
    )
    assert await store.settle([failure]) == []
    assert await store.settle([succeeded(task)]) == []
    assert not await store.progress(task_id=task.id, lease_token=token(task), done=1, total=2, message=None)
    assert await store.renew(leases={task.id: token(task)}, lease=600) == set()
    assert await store.release(leases={task.id: token(task)}) == []
    assert await store.get(task.id) == done


async def test_rescue_is_refused_while_the_lease_holds(store: Storage, make_task: MakeTask) -> None:
    await store.insert([make_task()])
    [task] = await claim(store, lease=600)
    assert await store.settle([rescued(task)]) == []
    assert await store.get(task.id) == task


async def test_rescue_is_accepted_once_the_lease_ran_out(
    store: Storage, make_task: MakeTask, lease_lapsed: LeaseLapsed
) -> None:
    await store.insert([make_task(retries=2)])
    [task] = await claim(store, lease=SHORT_LEASE)
    await lease_lapsed(task.id)

    [back] = await store.settle([rescued(task)])
    assert (back.status, back.attempt, back.lease_token) == (TaskStatus.PENDING, 1, None)
    assert back.error is not None
    assert back.error.message == "worker lost"
    assert await store.expired_leases(limit=10) == []
    assert await store.settle([rescued(task)]) == []


async def test_a_worker_that_lost_its_lease_cannot_complete(
    store: Storage, make_task: MakeTask, lease_lapsed: LeaseLapsed
) -> None:
    await store.insert([make_task(retries=1)])
    [lost] = await claim(store, lease=SHORT_LEASE, worker="paused")
    await lease_lapsed(lost.id)
    assert await store.settle([rescued(lost)])
    [rerun] = await claim(store, lease=600, worker="alive")
    assert (rerun.id, rerun.attempt, rerun.worker) == (lost.id, 2, "alive")

    assert await store.settle([succeeded(lost)]) == []
    assert not await store.progress(task_id=lost.id, lease_token=token(lost), done=1, total=1, message="done")
    assert await store.renew(leases={lost.id: token(lost)}, lease=600) == set()
    assert await store.release(leases={lost.id: token(lost)}) == []
    assert await store.get(lost.id) == rerun

    [done] = await store.settle([succeeded(rerun)])
    assert (done.status, done.attempt, done.result) == (TaskStatus.SUCCEEDED, 2, b"r")


async def test_a_lapsed_lease_not_yet_rescued_may_still_complete(
    store: Storage, make_task: MakeTask, lease_lapsed: LeaseLapsed
) -> None:
    await store.insert([make_task()])
    [slow] = await claim(store, lease=SHORT_LEASE)
    await lease_lapsed(slow.id)
    [done] = await store.settle([succeeded(slow)])
    assert done.status is TaskStatus.SUCCEEDED
    assert await store.settle([rescued(slow)]) == []


async def test_each_claim_has_its_own_run_id_even_when_a_handback_gives_the_attempt_back(
    store: Storage, make_task: MakeTask
) -> None:
    task = make_task()
    await store.insert([task])
    [first] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
    [released] = await store.release(leases={first.id: token(first)})
    assert released.run_id == first.run_id  # the snapshot names the run that was handed back
    [second] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
    assert (first.attempt, second.attempt) == (1, 1)
    assert first.run_id and second.run_id and first.run_id != second.run_id
    kinds = [(e.kind.value, e.run_id) for e in await store.events(task_id=task.id)]
    assert kinds == [
        ("enqueued", None),
        ("started", first.run_id),
        ("released", first.run_id),
        ("started", second.run_id),
    ]
