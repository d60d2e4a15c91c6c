from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from omniq_nb.errors import InvalidTransition
from omniq_nb.models import EventKind, Schedule, Task, TaskError, TaskResult, TaskStatus
from omniq_nb.storage import Storage

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]
At = Callable[[float], datetime]

EVERY_MINUTE = Schedule(interval=timedelta(minutes=1))


async def claim(store: Storage, n: int, queue: str = "default") -> list[Task]:
    claimed = await store.claim(queues=[queue], limit=n, lease=30, worker="w")
    assert len(claimed) == n
    return claimed


def token(task: Task) -> str:
    assert task.lease_token is not None
    return task.lease_token


def error_for(task: Task) -> TaskError:
    return TaskError(
        type="builtins.ZeroDivisionError",
        message=f"division by zero in {task.id}",
        traceback="Traceback: ...",
        attempt=task.attempt,
    )


async def test_settle_many_outcomes_at_once(store: Storage, make_task: MakeTask) -> None:
    await store.insert([make_task() for _ in range(6)])
    claimed = await claim(store, 6)
    winners, losers = claimed[:4], claimed[4:]
    results = [
        TaskResult(task_id=t.id, lease_token=token(t), status=TaskStatus.SUCCEEDED, result=t.id.encode())
        for t in winners
    ] + [TaskResult(task_id=t.id, lease_token=token(t), status=TaskStatus.FAILED, error=error_for(t)) for t in losers]
    before = await store.now()
    accepted = await store.settle(results)
    after = await store.now()

    assert sorted(t.id for t in accepted) == sorted(t.id for t in claimed)
    stored = {t.id: t for t in await store.get_many([t.id for t in claimed])}
    assert {t.id: t for t in accepted} == stored
    for task in winners:
        done = stored[task.id]
        assert (done.status, done.result, done.progress, done.error) == (
            TaskStatus.SUCCEEDED,
            task.id.encode(),
            1.0,
            None,
        )
        assert done.finished_at is not None
        assert before <= done.finished_at <= after
        assert (done.lease_token, done.lease_until, done.attempt) == (None, None, 1)
    for task in losers:
        failed = stored[task.id]
        assert (failed.status, failed.error, failed.result) == (TaskStatus.FAILED, error_for(task), None)
        assert failed.finished_at is not None
        assert (failed.lease_token, failed.attempt) == (None, 1)


async def test_settle_nothing(store: Storage) -> None:
    assert await store.settle([]) == []


async def test_settle_accepts_only_outcomes_whose_lease_holds(store: Storage, make_task: MakeTask) -> None:
    await store.insert([make_task() for _ in range(3)])
    good, stale, unknown = await claim(store, 3)
    await store.cancel(stale.id)
    results = [
        TaskResult(task_id=good.id, lease_token=token(good), status=TaskStatus.SUCCEEDED, result=b"1"),
        TaskResult(task_id=stale.id, lease_token=token(stale), status=TaskStatus.SUCCEEDED, result=b"2"),
        TaskResult(task_id="f" * 32, lease_token=token(unknown), status=TaskStatus.SUCCEEDED, result=b"3"),
    ]
    [accepted] = await store.settle(results)
    assert accepted.id == good.id
    cancelled = await store.get(stale.id)
    assert cancelled is not None
    assert (cancelled.status, cancelled.result) == (TaskStatus.CANCELLED, None)
    assert await store.get(unknown.id) == unknown


def next_run(task: Task, make_task: MakeTask, at: At) -> Task:
    assert task.series is not None
    return make_task(name=task.name, schedule=task.schedule, series=task.series, eta=at(60))


async def test_successors_are_inserted_for_accepted_outcomes(store: Storage, make_task: MakeTask, at: At) -> None:
    first = make_task(name="tick", schedule=EVERY_MINUTE)
    first.series = first.id
    await store.insert([first])
    [running] = await claim(store, 1)
    following = next_run(first, make_task, at)

    [done] = await store.settle(
        [TaskResult(task_id=first.id, lease_token=token(running), status=TaskStatus.SUCCEEDED, result=b"ok")],
        successors={first.id: following},
    )
    assert done.status is TaskStatus.SUCCEEDED
    assert await store.get(following.id) == following
    [enqueued] = await store.events(task_id=following.id)
    assert enqueued.kind is EventKind.ENQUEUED
    assert [t.id for t in await store.list(statuses=[TaskStatus.PENDING])] == [following.id]


async def test_a_failed_run_also_gets_its_successor(store: Storage, make_task: MakeTask, at: At) -> None:
    first = make_task(name="tick", schedule=EVERY_MINUTE)
    first.series = first.id
    await store.insert([first])
    [running] = await claim(store, 1)
    following = next_run(first, make_task, at)
    result = TaskResult(task_id=first.id, lease_token=token(running), status=TaskStatus.FAILED, error=error_for(first))
    assert await store.settle([result], successors={first.id: following})
    assert await store.get(following.id) == following


async def test_successors_of_refused_outcomes_are_not_inserted(store: Storage, make_task: MakeTask, at: At) -> None:
    series = [make_task(name=f"tick{n}", schedule=EVERY_MINUTE) for n in range(2)]
    for task in series:
        task.series = task.id
    await store.insert(series)
    accepted_run, refused_run = await claim(store, 2)
    following = {t.id: next_run(t, make_task, at) for t in series}

    accepted = await store.settle(
        [
            TaskResult(task_id=accepted_run.id, lease_token=token(accepted_run), status=TaskStatus.SUCCEEDED),
            TaskResult(task_id=refused_run.id, lease_token="0" * 32, status=TaskStatus.SUCCEEDED),
        ],
        successors=following,
    )
    assert [t.id for t in accepted] == [accepted_run.id]
    assert await store.get(following[accepted_run.id].id) == following[accepted_run.id]
    assert await store.get(following[refused_run.id].id) is None
    assert await store.get(refused_run.id) == refused_run


@pytest.mark.parametrize("target", [TaskStatus.RUNNING, TaskStatus.EXPIRED])
async def test_an_invalid_target_status_raises_and_changes_nothing(
    store: Storage, make_task: MakeTask, at: At, target: TaskStatus
) -> None:
    first = make_task(schedule=EVERY_MINUTE)
    first.series = first.id
    await store.insert([first, make_task()])
    a, b = await claim(store, 2)
    following = next_run(first, make_task, at)
    cursor = await store.last_event_seq()

    with pytest.raises(InvalidTransition, match=target.value):
        await store.settle(
            [
                TaskResult(task_id=a.id, lease_token=token(a), status=TaskStatus.SUCCEEDED, result=b"ok"),
                TaskResult(task_id=b.id, lease_token=token(b), status=target),
            ],
            successors={first.id: following},
        )
    assert await store.get(a.id) == a
    assert await store.get(b.id) == b
    assert await store.get(following.id) is None
    assert await store.events(since=cursor) == []


async def test_a_claimed_reported_and_retried_task_reads_back_field_by_field(
    store: Storage, make_task: MakeTask, at: At
) -> None:
    task = make_task(
        name="pkg.job",
        queue="q",
        priority=3,
        payload=b"\x01payload",
        retries=2,
        retry_on=("ValueError",),
        timeout=5.0,
        expires_at=at(3600),
        result_ttl=60.0,
        kind="thread",
        origin="kernel-1/cell-7",
    )
    await store.insert([task])
    [claimed] = await store.claim(queues=["q"], limit=1, lease=30, worker="w1")
    assert (claimed.status, claimed.attempt, claimed.worker) == (TaskStatus.RUNNING, 1, "w1")
    assert claimed.lease_until is not None and claimed.started_at is not None
    assert claimed.lease_until > claimed.started_at
    assert await store.progress(task_id=task.id, lease_token=token(claimed), done=2, total=4, message="half")
    error = error_for(claimed)
    [settled] = await store.settle(
        [TaskResult(task_id=task.id, lease_token=token(claimed), status=TaskStatus.PENDING, error=error, eta=at(30))]
    )
    stored = await store.get(task.id)
    assert stored == settled
    kept = ("id", "name", "queue", "priority", "payload", "retries", "retry_on", "timeout", "created_at")
    assert [getattr(stored, f) for f in kept] == [getattr(task, f) for f in kept]
    assert (stored.expires_at, stored.result_ttl, stored.kind, stored.origin) == (
        task.expires_at,
        60.0,
        "thread",
        "kernel-1/cell-7",
    )
    assert (stored.status, stored.attempt, stored.error, stored.worker) == (TaskStatus.PENDING, 1, error, "w1")
    assert stored.eta is not None and abs((stored.eta - at(30)).total_seconds()) < 1
    assert stored.started_at == claimed.started_at is not None
    assert (stored.progress, stored.progress_done, stored.progress_total, stored.progress_message) == (
        0.5,
        2,
        4,
        "half",
    )
    assert (stored.lease_token, stored.lease_until, stored.finished_at, stored.result) == (None, None, None, None)
