from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime

import pytest
from store_spec import open_spec

from omniq_nb.config import Settings
from omniq_nb.models import EventKind, Task, TaskError, TaskEvent, TaskResult, TaskStatus
from omniq_nb.storage import Storage

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]
At = Callable[[float], datetime]

E = EventKind


async def claim(store: Storage) -> Task:
    [task] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
    return task


def token(task: Task) -> str:
    assert task.lease_token is not None
    return task.lease_token


def history(events: list[TaskEvent]) -> list[tuple[EventKind, TaskStatus, int]]:
    return [(e.kind, e.status, e.attempt) for e in events]


async def test_enqueue_claim_progress_succeed(store: Storage, make_task: MakeTask) -> None:
    task = make_task()
    await store.insert([task])
    running = await claim(store)
    assert await store.progress(task_id=task.id, lease_token=token(running), done=1, total=4, message="a quarter")
    await store.settle([TaskResult(task_id=task.id, lease_token=token(running), status=TaskStatus.SUCCEEDED)])

    events = await store.events(task_id=task.id)
    assert history(events) == [
        (E.ENQUEUED, TaskStatus.PENDING, 0),
        (E.STARTED, TaskStatus.RUNNING, 1),
        (E.PROGRESS, TaskStatus.RUNNING, 1),
        (E.SUCCEEDED, TaskStatus.SUCCEEDED, 1),
    ]
    assert {e.task_id for e in events} == {task.id}
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    # seq orders events; times may be coarser (a store's clock may tick in milliseconds)
    for earlier, later in itertools.pairwise(events):
        assert (later.at - earlier.at).total_seconds() > -0.005, (earlier, later)


async def test_retry_then_failure(store: Storage, make_task: MakeTask, at: At) -> None:
    task = make_task(retries=1)
    await store.insert([task])
    first = await claim(store)
    boom = TaskError(type="builtins.ValueError", message="boom")
    await store.settle(
        [TaskResult(task_id=task.id, lease_token=token(first), status=TaskStatus.PENDING, error=boom, eta=at(-1))]
    )
    second = await claim(store)
    await store.settle([TaskResult(task_id=task.id, lease_token=token(second), status=TaskStatus.FAILED, error=boom)])

    events = await store.events(task_id=task.id)
    assert history(events) == [
        (E.ENQUEUED, TaskStatus.PENDING, 0),
        (E.STARTED, TaskStatus.RUNNING, 1),
        (E.RETRIED, TaskStatus.PENDING, 1),
        (E.STARTED, TaskStatus.RUNNING, 2),
        (E.FAILED, TaskStatus.FAILED, 2),
    ]
    assert events[-1].message == "boom"


async def test_release(store: Storage, make_task: MakeTask) -> None:
    task = make_task()
    await store.insert([task])
    running = await claim(store)
    await store.release(leases={task.id: token(running)})
    assert history(await store.events(task_id=task.id)) == [
        (E.ENQUEUED, TaskStatus.PENDING, 0),
        (E.STARTED, TaskStatus.RUNNING, 1),
        (E.RELEASED, TaskStatus.PENDING, 0),
    ]


async def test_cancel_pending_and_running(store: Storage, make_task: MakeTask) -> None:
    pending, running = make_task(queue="idle"), make_task()
    await store.insert([pending, running])
    await claim(store)
    await store.cancel(pending.id)
    await store.cancel(running.id)
    await store.cancel(running.id)  # already finished: no second event
    assert history(await store.events(task_id=pending.id)) == [
        (E.ENQUEUED, TaskStatus.PENDING, 0),
        (E.CANCELLED, TaskStatus.CANCELLED, 0),
    ]
    assert history(await store.events(task_id=running.id)) == [
        (E.ENQUEUED, TaskStatus.PENDING, 0),
        (E.STARTED, TaskStatus.RUNNING, 1),
        (E.CANCELLED, TaskStatus.CANCELLED, 1),
    ]


async def test_expire_and_requeue(store: Storage, make_task: MakeTask, at: At) -> None:
    task = make_task(created_at=at(-20), eta=at(-20), expires_at=at(-10))
    await store.insert([task])
    await store.expire()
    await store.requeue(task.id)
    assert history(await store.events(task_id=task.id)) == [
        (E.ENQUEUED, TaskStatus.PENDING, 0),
        (E.EXPIRED, TaskStatus.EXPIRED, 0),
        (E.RETRIED, TaskStatus.PENDING, 0),
    ]


async def test_refused_writes_record_nothing(store: Storage, make_task: MakeTask) -> None:
    task = make_task()
    await store.insert([task])
    running = await claim(store)
    seq = await store.last_event_seq()
    wrong = "0" * 32
    await store.settle([TaskResult(task_id=task.id, lease_token=wrong, status=TaskStatus.SUCCEEDED)])
    await store.progress(task_id=task.id, lease_token=wrong, done=1, total=2, message=None)
    await store.release(leases={task.id: wrong})
    await store.renew(leases={task.id: token(running)}, lease=60)
    await store.requeue(task.id)
    assert await store.events(since=seq) == []
    assert await store.last_event_seq() == seq


async def test_events_since_a_cursor_returns_only_newer_ones(store: Storage, make_task: MakeTask) -> None:
    assert await store.last_event_seq() == 0
    assert await store.events() == []
    first, second = make_task(), make_task()
    await store.insert([first])
    cursor = await store.last_event_seq()
    assert cursor > 0
    await store.insert([second])
    running = await claim(store)

    newer = await store.events(since=cursor)
    assert [(e.task_id, e.kind) for e in newer] == [(second.id, E.ENQUEUED), (running.id, E.STARTED)]
    assert all(e.seq > cursor for e in newer)
    assert await store.last_event_seq() == newer[-1].seq
    assert await store.events(since=newer[-1].seq) == []
    everything = await store.events()
    assert everything[-2:] == newer
    assert [e.seq for e in await store.events(limit=2)] == [e.seq for e in everything[:2]]


async def test_events_of_one_task(store: Storage, make_task: MakeTask) -> None:
    a, b = make_task(), make_task()
    await store.insert([a, b])
    await store.cancel(b.id)
    assert [e.kind for e in await store.events(task_id=a.id)] == [E.ENQUEUED]
    assert [e.kind for e in await store.events(task_id=b.id)] == [E.ENQUEUED, E.CANCELLED]
    [enqueued_b, cancelled_b] = await store.events(task_id=b.id)
    assert await store.events(task_id=b.id, since=enqueued_b.seq) == [cancelled_b]
    assert await store.events(task_id="0" * 32) == []


async def test_progress_updates_the_task_and_records_an_event(store: Storage, make_task: MakeTask) -> None:
    task = make_task()
    await store.insert([task])
    running = await claim(store)
    assert running.progress == 0.0
    cursor = await store.last_event_seq()

    assert await store.progress(task_id=task.id, lease_token=token(running), done=3, total=4, message="3 of 4")
    stored = await store.get(task.id)
    assert stored is not None
    assert (stored.progress, stored.progress_done, stored.progress_total, stored.progress_message) == (
        0.75,
        3,
        4,
        "3 of 4",
    )
    assert stored.status is TaskStatus.RUNNING
    [event] = await store.events(since=cursor)
    assert (event.kind, event.task_id, event.progress, event.message) == (E.PROGRESS, task.id, 0.75, "3 of 4")

    assert await store.progress(task_id=task.id, lease_token=token(running), done=9, total=4, message=None)
    stored = await store.get(task.id)
    assert stored is not None
    assert stored.progress == 1.0
    assert [e.kind for e in await store.events(since=cursor)] == [E.PROGRESS, E.PROGRESS]


async def test_a_new_claim_resets_progress(store: Storage, make_task: MakeTask) -> None:
    await store.insert([make_task(retries=1)])
    first = await claim(store)
    await store.progress(task_id=first.id, lease_token=token(first), done=1, total=2, message="half")
    await store.release(leases={first.id: token(first)})
    second = await claim(store)
    assert (second.progress, second.progress_done, second.progress_total, second.progress_message) == (
        0.0,
        0.0,
        None,
        None,
    )


async def test_events_off_records_nothing(store: Storage, store_url: str, make_task: MakeTask) -> None:
    async with open_spec(store_url, settings=Settings(events=False)) as quiet:
        task = make_task()
        await quiet.insert([task])
        [running] = await quiet.claim(queues=["default"], limit=1, lease=30, worker="w")
        await quiet.progress(task_id=task.id, lease_token=token(running), done=1, total=2, message=None)
        await quiet.settle([TaskResult(task_id=task.id, lease_token=token(running), status=TaskStatus.SUCCEEDED)])
        done = await quiet.get(task.id)
        assert done is not None
        assert done.status is TaskStatus.SUCCEEDED
        assert await quiet.events() == []
        assert await quiet.last_event_seq() == 0
