from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import pytest

from omniq_nb.models import EventKind, Task, TaskError, TaskResult, TaskStatus
from omniq_nb.storage import Storage

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]
At = Callable[[float], datetime]
ClockPasses = Callable[[datetime], Awaitable[datetime]]


async def run_to(store: Storage, task: Task, status: TaskStatus) -> Task:
    """Insert ``task``, claim it and settle it with ``status``; return the stored outcome."""
    await store.insert([task])
    claimed = await store.claim(queues=[task.queue], limit=1, lease=30, worker="w")
    assert [t.id for t in claimed] == [task.id]
    token = claimed[0].lease_token
    assert token is not None
    error = None if status is TaskStatus.SUCCEEDED else TaskError(type="E", message="no")
    [settled] = await store.settle(
        [TaskResult(task_id=task.id, lease_token=token, status=status, result=b"ok", error=error)]
    )
    return settled


async def ids(store: Storage) -> set[str]:
    return {t.id for t in await store.list(limit=1000)}


async def test_expire_moves_pending_tasks_past_their_expiry(store: Storage, make_task: MakeTask, at: At) -> None:
    old = make_task(created_at=at(-20), eta=at(-20), expires_at=at(-10))
    future_eta = make_task(created_at=at(-20), eta=at(3600), expires_at=at(-1))
    fresh = make_task(expires_at=at(3600))
    forever = make_task()
    await store.insert([old, future_eta, fresh, forever])

    expired = await store.expire()
    assert {t.id for t in expired} == {old.id, future_eta.id}
    assert {t.status for t in expired} == {TaskStatus.EXPIRED}
    assert all(t.finished_at is not None for t in expired)
    for task in expired:
        assert await store.get(task.id) == task
    assert {t.id for t in await store.list(statuses=[TaskStatus.PENDING])} == {fresh.id, forever.id}
    assert await store.expire() == []


async def test_expire_leaves_running_tasks_alone(
    store: Storage, make_task: MakeTask, at: At, clock_passes: ClockPasses
) -> None:
    deadline = at(1.0)
    await store.insert([make_task(expires_at=deadline)])
    [running] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
    await clock_passes(deadline)
    assert await store.expire() == []
    assert await store.get(running.id) == running


async def test_expired_tasks_are_never_claimed(store: Storage, make_task: MakeTask, at: At) -> None:
    await store.insert([make_task(created_at=at(-20), eta=at(-20), expires_at=at(-10))])
    await store.expire()
    assert await store.claim(queues=["default"], limit=10, lease=30, worker="w") == []


async def test_purge_removes_finished_tasks_past_their_result_ttl(store: Storage, make_task: MakeTask) -> None:
    gone_ok = await run_to(store, make_task(result_ttl=0.0), TaskStatus.SUCCEEDED)
    gone_failed = await run_to(store, make_task(result_ttl=0.0), TaskStatus.FAILED)
    kept_ttl = await run_to(store, make_task(result_ttl=3600.0), TaskStatus.SUCCEEDED)
    kept_forever = await run_to(store, make_task(), TaskStatus.SUCCEEDED)
    gone_cancelled = make_task(result_ttl=0.0)
    await store.insert([gone_cancelled])
    await store.cancel(gone_cancelled.id)
    pending = make_task(result_ttl=0.0)
    await store.insert([pending])
    running = make_task(result_ttl=0.0, queue="other")
    await store.insert([running])
    await store.claim(queues=["other"], limit=1, lease=30, worker="w")

    assert await store.purge() == 3
    for task in (gone_ok, gone_failed, gone_cancelled):
        assert await store.get(task.id) is None
    assert await ids(store) == {kept_ttl.id, kept_forever.id, pending.id, running.id}
    assert await store.purge() == 0


async def test_purge_removes_expired_tasks_past_their_result_ttl(store: Storage, make_task: MakeTask, at: At) -> None:
    task = make_task(created_at=at(-20), eta=at(-20), expires_at=at(-10), result_ttl=0.0)
    await store.insert([task])
    await store.expire()
    assert await store.purge() == 1
    assert await store.get(task.id) is None


async def test_purge_finished_before_a_moment(store: Storage, make_task: MakeTask, clock_passes: ClockPasses) -> None:
    early_ok = await run_to(store, make_task(), TaskStatus.SUCCEEDED)
    early_failed = await run_to(store, make_task(), TaskStatus.FAILED)
    early_cancelled = make_task()
    await store.insert([early_cancelled])
    await store.cancel(early_cancelled.id)
    still_pending = make_task(queue="idle")
    await store.insert([still_pending])
    assert early_failed.finished_at is not None
    cutoff = await clock_passes(max(t.finished_at for t in (early_ok, early_failed) if t.finished_at))
    late = await run_to(store, make_task(), TaskStatus.SUCCEEDED)
    await clock_passes(cutoff)

    assert await store.purge(finished_before=cutoff) == 3
    assert await ids(store) == {still_pending.id, late.id}


async def test_purge_finished_before_only_the_given_statuses(
    store: Storage, make_task: MakeTask, clock_passes: ClockPasses
) -> None:
    early_ok = await run_to(store, make_task(), TaskStatus.SUCCEEDED)
    early_failed = await run_to(store, make_task(), TaskStatus.FAILED)
    assert early_ok.finished_at is not None
    assert early_failed.finished_at is not None
    cutoff = await clock_passes(max(early_ok.finished_at, early_failed.finished_at))
    late_failed = await run_to(store, make_task(), TaskStatus.FAILED)

    assert await store.purge(finished_before=cutoff, statuses=[TaskStatus.FAILED]) == 1
    assert await ids(store) == {early_ok.id, late_failed.id}
    assert await store.purge(finished_before=cutoff, statuses=[TaskStatus.CANCELLED, TaskStatus.EXPIRED]) == 0


async def test_purge_everything_empties_the_store(store: Storage, make_task: MakeTask) -> None:
    await run_to(store, make_task(), TaskStatus.SUCCEEDED)
    await store.insert([make_task(queue="other"), make_task()])
    await store.claim(queues=["other"], limit=1, lease=30, worker="w")
    assert await store.purge(everything=True) == 3
    assert await store.list() == []
    assert await store.count() == dict.fromkeys(TaskStatus, 0)
    assert await store.events() == []
    assert await store.purge(everything=True) == 0


async def test_purge_deletes_the_tasks_events(store: Storage, make_task: MakeTask) -> None:
    kept = await run_to(store, make_task(), TaskStatus.SUCCEEDED)
    gone = await run_to(store, make_task(result_ttl=0.0), TaskStatus.SUCCEEDED)
    assert await store.events(task_id=gone.id)
    kept_events = await store.events(task_id=kept.id)
    assert kept_events

    assert await store.purge() == 1
    assert await store.events(task_id=gone.id) == []
    assert await store.events(task_id=kept.id) == kept_events
    assert {e.task_id for e in await store.events()} == {kept.id}


async def test_purge_never_lets_a_cursor_miss_new_events(store: Storage, make_task: MakeTask) -> None:
    await run_to(store, make_task(result_ttl=0.0), TaskStatus.SUCCEEDED)
    cursor = await store.last_event_seq()
    assert await store.purge() == 1
    newer = make_task()
    await store.insert([newer])
    assert [(e.task_id, e.kind) for e in await store.events(since=cursor)] == [(newer.id, EventKind.ENQUEUED)]

    cursor = await store.last_event_seq()
    assert await store.purge(everything=True) == 1
    newest = make_task()
    await store.insert([newest])
    assert [(e.task_id, e.kind) for e in await store.events(since=cursor)] == [(newest.id, EventKind.ENQUEUED)]
