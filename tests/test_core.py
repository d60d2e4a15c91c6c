from __future__ import annotations

import operator
import threading
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import omniq_nb
from omniq_nb import (
    AsyncOmniQ,
    ConfigError,
    EventKind,
    GroupHandle,
    InvalidTransition,
    Schedule,
    SerializationError,
    StorageError,
    Task,
    TaskCancelled,
    TaskError,
    TaskEvent,
    TaskFailed,
    TaskHandle,
    TaskNotFound,
    TaskResult,
    TaskStatus,
    TaskTimeout,
    WorkerLost,
    open_storage,
)

pytestmark = pytest.mark.anyio

UTC = timezone.utc
Wait = Callable[..., Any]


@pytest.fixture(params=["memory", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'omniq.db'}"


@pytest.fixture
async def q(db_url: str) -> AsyncIterator[AsyncOmniQ]:
    async with AsyncOmniQ(db_url=db_url) as queue:
        yield queue


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shared.db'}"


def announce(q: AsyncOmniQ, tasks: list[Task]) -> None:
    """Tell the queue what the emulated worker wrote, as a pool in this process would."""
    q.publish(tasks)


async def claim(q: AsyncOmniQ, queue: str = "default", limit: int = 1) -> list[Task]:
    return await q.storage.claim(queues=[queue], limit=limit, lease=30, worker="w")


async def succeed(q: AsyncOmniQ, task: Task, value: Any) -> None:
    result = TaskResult(
        task_id=task.id,
        lease_token=task.lease_token or "",
        status=TaskStatus.SUCCEEDED,
        result=q.serializer.dumps(value),
    )
    accepted = await q.storage.settle([result])
    assert len(accepted) == 1
    announce(q, accepted)


async def fail(q: AsyncOmniQ, task: Task, error: TaskError) -> None:
    result = TaskResult(task_id=task.id, lease_token=task.lease_token or "", status=TaskStatus.FAILED, error=error)
    accepted = await q.storage.settle([result])
    assert len(accepted) == 1
    announce(q, accepted)


def boom_error(attempt: int = 1) -> TaskError:
    return TaskError(
        type="ValueError",
        message="bad input 7",
        traceback='Traceback (most recent call last):\n  File "remote.py", line 3, in job\nValueError: bad input 7\n',
        attempt=attempt,
    )


def add(a: int, b: int = 0) -> int:
    return a + b


# -- enqueue ------------------------------------------------------------------------------------


async def test_enqueue_stores_a_pending_task(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1, b=2)
    assert isinstance(h, TaskHandle)
    assert h.status == "pending"
    assert h.status is TaskStatus.PENDING
    assert (h.attempt, h.progress, h.error, h.done()) == (0, 0.0, None, False)
    task = (await q.get(h.id)).task
    assert task.name == f"{__name__}.add"
    assert task.queue == "default"
    assert task.retries == 0
    fn, args, kwargs = q.serializer.load_call(task.payload)
    assert fn(*args, **kwargs) == 3


async def test_enqueue_call_stores_every_option(q: AsyncOmniQ) -> None:
    h = await q.enqueue_call(
        add,
        args=(1,),
        kwargs={"b": 2},
        retries=3,
        retry_on=[KeyError],
        timeout=12,
        priority=5,
        queue="gpu",
        result_ttl=600,
        at_most_once=True,
        kind="process",
        name="adder",
    )
    task = (await q.get(h.id)).task
    assert task.retries == 3
    assert task.max_attempts == 4
    assert task.retry_on == ("KeyError",)
    assert task.timeout == 12.0
    assert task.priority == 5
    assert task.queue == "gpu"
    assert task.result_ttl == 600.0
    assert task.at_most_once is True
    assert task.kind == "process"
    assert task.name == "adder"
    assert task.schedule is None
    assert task.expires_at is None


async def test_delay_sets_eta(q: AsyncOmniQ) -> None:
    h = await q.enqueue_call(add, args=(1,), delay=timedelta(minutes=5))
    task = (await q.get(h.id)).task
    assert abs((task.eta - task.created_at) - timedelta(minutes=5)) < timedelta(milliseconds=1)
    assert await claim(q) == []  # not ready yet


async def test_eta_is_stored_in_utc(q: AsyncOmniQ) -> None:
    eta = datetime(2030, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    task = (await q.get((await q.enqueue_call(add, args=(1,), eta=eta)).id)).task
    assert task.eta == eta
    assert task.eta.utcoffset() == timedelta(0)


async def test_ttl_sets_expires_at(q: AsyncOmniQ) -> None:
    task = (await q.get((await q.enqueue_call(add, args=(1,), ttl=90)).id)).task
    assert task.expires_at is not None
    assert abs((task.expires_at - task.created_at) - timedelta(seconds=90)) < timedelta(milliseconds=1)


async def test_settings_give_defaults(tmp_path: Path) -> None:
    async with AsyncOmniQ(db_url="memory://", default_queue="batch", default_retries=2, task_ttl=30, result_ttl=5) as q:
        task = (await q.get((await q.enqueue(add, 1)).id)).task
    assert (task.queue, task.retries, task.result_ttl) == ("batch", 2, 5.0)
    assert task.expires_at is not None


async def test_explicit_none_opts_out_of_the_ttl_settings_and_leaving_them_out_takes_them() -> None:
    """Issue 13: with TASK_TTL / RESULT_TTL set, ``ttl=None`` / ``result_ttl=None`` mean no limit."""
    async with AsyncOmniQ(db_url="memory://", task_ttl=30, result_ttl=5) as q:
        defaulted = (await q.get((await q.enqueue(add, 1)).id)).task
        unlimited = (await q.get((await q.enqueue_call(add, args=(1,), ttl=None, result_ttl=None)).id)).task
        asked = (await q.get((await q.enqueue_call(add, args=(1,), ttl=omniq_nb.DEFAULT)).id)).task
        group = await q.enqueue_many(add, [(1,), (2,)], ttl=None, result_ttl=None)
        mapped = [(await q.get(task_id)).task for task_id in group.ids]
    assert defaulted.expires_at == defaulted.created_at + timedelta(seconds=30)
    assert defaulted.result_ttl == 5.0
    assert (unlimited.expires_at, unlimited.result_ttl) == (None, None)
    assert asked.expires_at == asked.created_at + timedelta(seconds=30)
    assert [(t.expires_at, t.result_ttl) for t in mapped] == [(None, None), (None, None)]


async def test_ttl_zero_says_that_none_means_no_expiry(q: AsyncOmniQ) -> None:
    with pytest.raises(ValueError, match="ttl=None means no limit"):
        await q.enqueue_call(add, args=(1,), ttl=0)


@pytest.mark.parametrize(
    ("options", "schedule"),
    [
        ({"cron": "*/5 * * * *"}, Schedule(cron="*/5 * * * *")),
        ({"interval": 60}, Schedule(interval=timedelta(seconds=60))),
        ({"interval": timedelta(hours=1)}, Schedule(interval=timedelta(hours=1))),
    ],
)
async def test_cron_and_interval_set_a_schedule(q: AsyncOmniQ, options: dict[str, Any], schedule: Schedule) -> None:
    task = (await q.get((await q.enqueue_call(add, args=(1,), **options)).id)).task
    assert task.schedule == schedule
    assert task.series == task.id
    assert task.eta > task.created_at  # the first run waits for the first slot


async def test_bad_options_fail_at_enqueue(q: AsyncOmniQ) -> None:
    with pytest.raises(TypeError, match="retrys"):
        await q.enqueue_call(add, retrys=1)
    with pytest.raises(ValueError, match="eta"):
        await q.enqueue_call(add, eta=datetime.now(UTC), delay=1)
    with pytest.raises(TypeError, match="callable"):
        await q.enqueue(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"cron='0 0 31 2 \*' matches no time"):
        await q.enqueue_call(add, cron="0 0 31 2 *")
    assert await q.list() == []


async def test_unpicklable_argument_fails_at_enqueue(q: AsyncOmniQ) -> None:
    with pytest.raises(SerializationError, match="argument 1") as info:
        await q.enqueue(add, 1, threading.Lock())
    assert "lock" in str(info.value)
    with pytest.raises(SerializationError, match="'b'"):
        await q.enqueue_call(add, args=(1,), kwargs={"b": threading.Lock()})
    assert await q.list() == []


# -- groups -------------------------------------------------------------------------------------


async def test_enqueue_many_returns_a_group_in_input_order(q: AsyncOmniQ) -> None:
    group = await q.enqueue_many(operator.mul, [(i, 10) for i in range(5)], priority=1)
    assert isinstance(group, GroupHandle)
    assert len(group) == 5
    assert group.ids == [h.id for h in group]
    assert group[0] is group.handles[0]
    assert not group.done()
    assert group.counts[TaskStatus.PENDING] == 5
    for handle, i in zip(group, range(5), strict=True):
        fn, args, _ = q.serializer.load_call(handle.task.payload)
        assert args == (i, 10)
        assert handle.task.priority == 1

    tasks = await claim(q, limit=10)
    assert len(tasks) == 5
    for task in reversed(tasks):  # finish out of order
        fn, args, kwargs = q.serializer.load_call(task.payload)
        await succeed(q, task, fn(*args, **kwargs))
    assert await group.result(timeout=5) == [0, 10, 20, 30, 40]
    assert await group == [0, 10, 20, 30, 40]


async def test_group_result_with_failures(q: AsyncOmniQ) -> None:
    group = await q.enqueue_many(add, [(1,), (2,), (3,)])
    first, second, third = await claim(q, limit=3)
    await succeed(q, first, "one")
    await fail(q, second, boom_error())
    await succeed(q, third, "three")
    values = await group.result(timeout=5, return_exceptions=True)
    assert values[0] == "one"
    assert isinstance(values[1], TaskFailed)
    assert values[1].error.message == "bad input 7"
    assert values[2] == "three"
    with pytest.raises(TaskFailed, match="bad input 7"):
        await group.result(timeout=5)


async def test_enqueue_many_rejects_non_tuples(q: AsyncOmniQ) -> None:
    with pytest.raises(TypeError, match=r"calls\[1\]"):
        await q.enqueue_many(add, [(1,), 2])  # type: ignore[list-item]
    assert await q.list() == []
    empty = await q.enqueue_many(add, [])
    assert len(empty) == 0
    assert await empty.result(timeout=1) == []


# -- get / list ---------------------------------------------------------------------------------


async def test_get_unknown_id_raises(q: AsyncOmniQ) -> None:
    with pytest.raises(TaskNotFound, match="nope"):
        await q.get("nope")
    with pytest.raises(KeyError):
        await q.get("nope")
    with pytest.raises(TaskNotFound):
        await q.result("nope", timeout=1)
    with pytest.raises(TaskNotFound):
        await q.cancel("nope")
    with pytest.raises(TaskNotFound):
        await q.retry("nope")


async def test_list_filters_by_status_queue_and_limit(q: AsyncOmniQ) -> None:
    a = await q.enqueue(add, 1)
    b = await q.enqueue_call(add, args=(2,), queue="other")
    c = await q.enqueue(add, 3)
    [running] = await claim(q)
    assert running.id == a.id
    assert [t.id for t in await q.list()] == [c.id, b.id, a.id]  # newest first
    assert [t.id for t in await q.list(status="pending")] == [c.id, b.id]
    assert [t.id for t in await q.list(status=TaskStatus.RUNNING)] == [a.id]
    assert [t.id for t in await q.list(status=["running", TaskStatus.PENDING], queue="default")] == [c.id, a.id]
    assert [t.id for t in await q.list(queue="other")] == [b.id]
    assert [t.id for t in await q.list(limit=2)] == [c.id, b.id]
    assert await q.list(status="succeeded") == []


@pytest.mark.parametrize("status", ["done", ["pending", "finished"]])
async def test_list_rejects_an_unknown_status(q: AsyncOmniQ, status: Any) -> None:
    with pytest.raises(ValueError, match="status") as info:
        await q.list(status=status)
    assert "succeeded" in str(info.value)  # lists the valid ones


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
async def test_list_rejects_a_bad_limit(q: AsyncOmniQ, limit: Any) -> None:
    with pytest.raises(ValueError, match="limit"):
        await q.list(limit=limit)


# -- cancel / retry / purge ---------------------------------------------------------------------


async def test_cancel_pending_task_updates_the_handle(q: AsyncOmniQ, wait_until: Wait) -> None:
    h = await q.enqueue(add, 1)
    assert await h.cancel() is True
    assert (await q.get(h.id)).status == "cancelled"
    await wait_until(lambda: h.status == "cancelled", timeout=5)
    assert h.done()
    assert await claim(q) == []
    with pytest.raises(TaskCancelled):
        await h.result(timeout=5)


async def test_handle_follows_a_task_through_its_life(q: AsyncOmniQ, wait_until: Wait) -> None:
    h = await q.enqueue(add, 1)
    [task] = await claim(q)
    announce(q, [task])
    await wait_until(lambda: h.status == "running", timeout=5)
    assert h.attempt == 1
    await succeed(q, task, 2)
    await wait_until(h.done, timeout=5)
    assert h.status == "succeeded"


async def test_cancel_finished_task_returns_false(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    [task] = await claim(q)
    await succeed(q, task, 1)
    assert await q.cancel(h.id) is False
    assert (await q.get(h.id)).status == "succeeded"


async def test_cancel_running_task(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    await claim(q)
    assert await q.cancel(h.id) is True
    with pytest.raises(TaskCancelled, match="cancelled"):
        await q.result(h.id, timeout=5)


async def test_retry_failed_task_allows_one_more_attempt(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    [task] = await claim(q)
    await fail(q, task, boom_error())
    with pytest.raises(TaskFailed):
        await h.result(timeout=5)
    again = await h.retry()
    assert isinstance(again, TaskHandle)
    assert again.id == h.id
    assert again.status == "pending"
    assert again.task.max_attempts > again.task.attempt
    [second] = await claim(q)
    assert (second.id, second.attempt) == (h.id, 2)
    await succeed(q, second, "ok")
    assert await again.result(timeout=5) == "ok"
    assert await h.result(timeout=5) == "ok"


async def test_retry_cancelled_task(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    await q.cancel(h.id)
    assert (await q.retry(h.id)).status == "pending"
    assert len(await claim(q)) == 1


async def test_retry_of_succeeded_pending_or_running_task_raises(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    with pytest.raises(InvalidTransition):
        await q.retry(h.id)
    [task] = await claim(q)
    with pytest.raises(InvalidTransition, match="running"):
        await q.retry(h.id)
    await succeed(q, task, 1)
    with pytest.raises(InvalidTransition, match="succeeded"):
        await h.retry()
    assert (await q.get(h.id)).status == "succeeded"


async def test_purge(q: AsyncOmniQ) -> None:
    done = await q.enqueue(add, 1)
    pending = await q.enqueue(add, 2)
    [task] = await claim(q)
    await succeed(q, task, 1)
    assert await q.purge() == 0  # finished just now: within RESULT_TTL (7 days)
    assert await q.purge(older_than=3600) == 0  # too recent
    assert await q.purge(older_than=0, status="failed") == 0  # other status
    assert await q.purge(older_than=0) == 1
    with pytest.raises(TaskNotFound):
        await q.get(done.id)
    assert await q.events(task_id=done.id) == []
    assert [t.id for t in await q.list()] == [pending.id]
    assert await q.purge(everything=True) == 1
    assert await q.list() == []


async def test_purge_rejects_bad_arguments(q: AsyncOmniQ) -> None:
    with pytest.raises(ValueError, match="older_than"):
        await q.purge(older_than=-1)
    with pytest.raises(ValueError, match="status"):
        await q.purge(older_than=1, status="gone")


# -- events -------------------------------------------------------------------------------------


async def test_events_since_cursor(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    other = await q.enqueue(add, 2)
    [task] = await claim(q)
    await succeed(q, task, 1)
    events = await q.events(task_id=h.id)
    assert [e.kind for e in events] == [EventKind.ENQUEUED, EventKind.STARTED, EventKind.SUCCEEDED]
    assert [e.status for e in events] == ["pending", "running", "succeeded"]
    assert [e.attempt for e in events] == [0, 1, 1]
    everything = await q.events()
    assert [e.seq for e in everything] == sorted(e.seq for e in everything)
    assert {e.task_id for e in everything} == {h.id, other.id}
    later = await q.events(since=events[0].seq)
    assert events[0] not in later
    assert events[1] in later
    assert await q.events(since=everything[-1].seq) == []
    assert len(await q.events(limit=2)) == 2


async def test_on_event_listener_receives_the_events_of_a_task(q: AsyncOmniQ, wait_until: Wait) -> None:
    seen: list[TaskEvent] = []
    unsubscribe = q.on_event(seen.append)
    h = await q.enqueue(add, 1)
    [task] = await claim(q)
    await succeed(q, task, 1)

    def kinds() -> list[EventKind]:
        return [e.kind for e in seen if e.task_id == h.id]

    await wait_until(lambda: EventKind.SUCCEEDED in kinds(), timeout=5)
    assert kinds() == [EventKind.ENQUEUED, EventKind.STARTED, EventKind.SUCCEEDED]
    unsubscribe()
    count = len(seen)
    later: list[TaskEvent] = []
    q.on_event(later.append)
    other = await q.enqueue(add, 2)
    await q.cancel(other.id)
    await wait_until(lambda: any(e.kind is EventKind.CANCELLED for e in later), timeout=5)
    assert len(seen) == count  # the unsubscribed listener heard nothing more


async def test_on_event_listener_after_activity_hears_later_events(q: AsyncOmniQ, wait_until: Wait) -> None:
    h = await q.enqueue(add, 1)
    seen: list[TaskEvent] = []

    async def listener(event: TaskEvent) -> None:  # coroutine listeners are awaited too
        seen.append(event)

    q.on_event(listener)
    await anyio.lowlevel.checkpoint()  # the hub's first poll sets its cursor; events from here on are heard
    await q.list()
    [task] = await claim(q)
    announce(q, [task])
    await wait_until(lambda: any(e.kind is EventKind.STARTED for e in seen), timeout=5)
    await succeed(q, task, 1)
    await wait_until(lambda: any(e.kind is EventKind.SUCCEEDED for e in seen), timeout=5)
    assert all(e.task_id == h.id for e in seen)


async def test_failing_listener_does_not_stop_others(q: AsyncOmniQ, wait_until: Wait) -> None:
    seen: list[TaskEvent] = []

    def broken(event: TaskEvent) -> None:
        raise RuntimeError("listener bug")

    q.on_event(broken)
    q.on_event(seen.append)
    h = await q.enqueue(add, 1)
    [task] = await claim(q)
    await succeed(q, task, 1)
    await wait_until(lambda: any(e.task_id == h.id and e.kind is EventKind.SUCCEEDED for e in seen), timeout=5)


# -- results ------------------------------------------------------------------------------------


async def test_result_of_succeeded_task(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1, 2)
    [task] = await claim(q)
    fn, args, kwargs = q.serializer.load_call(task.payload)
    await succeed(q, task, {"sum": fn(*args, **kwargs), "when": datetime(2024, 1, 1, tzinfo=UTC)})
    expected = {"sum": 3, "when": datetime(2024, 1, 1, tzinfo=UTC)}
    assert await h.result(timeout=5) == expected
    assert await h == expected
    assert await q.result(h.id) == expected
    assert (await q.get(h.id)).done()


async def test_result_none(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    [task] = await claim(q)
    await succeed(q, task, None)
    assert await h.result(timeout=5) is None


async def test_failed_task_raises_task_failed_with_remote_error(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    [task] = await claim(q)
    await fail(q, task, boom_error())
    with pytest.raises(TaskFailed) as info:
        await h.result(timeout=5)
    exc = info.value
    assert type(exc) is TaskFailed
    assert exc.error.type == "ValueError"
    assert exc.error.message == "bad input 7"
    assert 'File "remote.py", line 3' in exc.error.traceback
    assert exc.error.attempt == 1
    text = str(exc)
    assert h.id in text
    assert "ValueError: bad input 7" in text
    assert 'File "remote.py", line 3, in job' in text
    handle = await q.get(h.id)
    assert handle.error == boom_error()
    with pytest.raises(TaskFailed):
        await handle


async def test_stored_timeout_raises_task_timeout(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    [task] = await claim(q)
    await fail(q, task, TaskError(type="omniq_nb.errors.TaskTimeout", message="timed out after 5 s", attempt=1))
    with pytest.raises(TaskTimeout, match="timed out") as info:
        await h.result(timeout=5)
    assert isinstance(info.value, TaskFailed)


async def test_stored_worker_lost_raises_worker_lost(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    [task] = await claim(q)
    await fail(q, task, TaskError(type="omniq_nb.errors.WorkerLost", message="worker lost", attempt=1))
    with pytest.raises(WorkerLost, match="lost"):
        await h.result(timeout=5)


async def test_cancelled_task_raises_task_cancelled(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    await q.cancel(h.id)
    with pytest.raises(TaskCancelled, match="cancelled") as info:
        await h.result(timeout=5)
    assert isinstance(info.value, TaskFailed)


async def test_result_timeout_raises_builtin_timeout_error(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    with pytest.raises(TimeoutError, match=h.id) as info:
        await h.result(timeout=0.2)
    assert type(info.value) is TimeoutError
    with pytest.raises(TimeoutError):
        await q.results([h.id], timeout=0.2)
    group = GroupHandle(q, [h])
    with pytest.raises(TimeoutError):
        await group.result(timeout=0.2)
    assert h.status == "pending"


async def test_result_waits_for_a_settle_in_the_same_process(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    values: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def wait() -> None:
            values.append(await h.result(timeout=5))

        tg.start_soon(wait)
        [task] = await claim(q)
        await succeed(q, task, "late")
    assert values == ["late"]


async def test_result_written_by_another_store_object_is_seen(sqlite_url: str) -> None:
    async with AsyncOmniQ(db_url=sqlite_url) as q, open_storage(sqlite_url) as other:
        h = await q.enqueue(add, 1)
        values: list[Any] = []
        async with anyio.create_task_group() as tg:

            async def wait() -> None:
                values.append(await h.result(timeout=5))

            tg.start_soon(wait)
            [task] = await other.claim(queues=["default"], limit=1, lease=30, worker="elsewhere")
            accepted = await other.settle(
                [
                    TaskResult(
                        task_id=task.id,
                        lease_token=task.lease_token or "",
                        status=TaskStatus.SUCCEEDED,
                        result=q.serializer.dumps([1, 2]),
                    )
                ]
            )
            assert len(accepted) == 1  # not published: only polling can see it
        assert values == [[1, 2]]


async def test_handle_sees_another_store_objects_writes(sqlite_url: str, wait_until: Wait) -> None:
    async with AsyncOmniQ(db_url=sqlite_url) as q, AsyncOmniQ(db_url=sqlite_url) as other:
        h = await q.enqueue(add, 1)
        await anyio.lowlevel.checkpoint()  # the hub's first poll sets its cursor (queued before the next read)
        await q.list()
        await other.cancel(h.id)  # another object: no local publish, only polling sees it
        await wait_until(lambda: h.status == "cancelled", timeout=5)


# -- store URLs ---------------------------------------------------------------------------------


async def test_malformed_sqlite_url_raises_storage_error() -> None:
    with pytest.raises(StorageError, match=r"jobs\.db") as info:
        async with AsyncOmniQ(db_url="sqlite://jobs.db"):
            pass
    assert "sqlite:///" in str(info.value)  # shows the right form


async def test_unwritable_path_raises_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = blocker / "sub" / "jobs.db"
    with pytest.raises(StorageError) as info:
        async with AsyncOmniQ(db_url=f"sqlite:///{target}"):
            pass
    assert str(target) in str(info.value)


async def test_default_store_is_sqlite_under_cwd(tmp_path: Path) -> None:
    async with AsyncOmniQ() as q:
        h = await q.enqueue(add, 1)
    assert (tmp_path / ".omniq" / "omniq.db").is_file()
    assert (tmp_path / ".omniq" / "omniq.db").stat().st_mode & 0o077 == 0  # owner-only
    async with AsyncOmniQ() as q:
        assert (await q.get(h.id)).status == "pending"  # it persisted


async def test_relative_sqlite_url_is_relative_to_cwd(tmp_path: Path) -> None:
    async with AsyncOmniQ(db_url="sqlite:///data/jobs.db") as q:
        await q.enqueue(add, 1)
    assert (tmp_path / "data" / "jobs.db").is_file()


async def test_unknown_scheme_raises_storage_error() -> None:
    with pytest.raises(StorageError, match="unknown store URL"):
        AsyncOmniQ(db_url="ftp://me:pw@host/x")
    with pytest.raises(StorageError) as info:
        AsyncOmniQ(db_url="ftp://me:hunter2@host/x")
    assert "hunter2" not in str(info.value)


async def test_loop_property_requires_open() -> None:
    q = AsyncOmniQ(db_url="memory://")
    with pytest.raises(RuntimeError, match="not open"):
        _ = q.loop
    async with q:
        assert q.loop is not None
