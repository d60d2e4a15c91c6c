"""A queue whose results and events live in stores of their own (``result_url``, ``events_url``).

The contract suite runs unchanged on a split store (the ``split`` backend); these tests check
what only a split store does: where each thing is written, in which order, and that a
worker that lost its lease can never make its result the one that is read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from postgres_server import POSTGRES_URL, postgres_schema
from redis_server import REDIS_URL, redis_prefix
from store_spec import SPLIT_SPEC, open_spec

from omniq_nb.config import Settings
from omniq_nb.models import EventKind, Task, TaskResult, TaskStatus
from omniq_nb.storage import open_stores
from omniq_nb.storage.split import SplitStorage
from omniq_nb.storage.split_base import RESULT_MISSING, kept_token

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres-queue", marks=pytest.mark.postgres),
        pytest.param("postgres-outcomes", marks=pytest.mark.postgres),
        pytest.param("redis-outcomes", marks=pytest.mark.redis),
    ]
)
def split_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Four arrangements: all SQLite; queue in PostgreSQL with results and events in one SQLite
    file; queue in SQLite with results and events in two PostgreSQL schemas, or under one Redis prefix."""
    if request.param == "sqlite":
        yield SPLIT_SPEC.format(tmp=tmp_path)
    elif request.param == "redis-outcomes":
        with redis_prefix() as prefix:
            side = f"{REDIS_URL}?prefix={prefix}"
            yield f"sqlite:///{tmp_path / 'queue.db'} result_url={side} events_url={side}"
    elif request.param == "postgres-queue":
        with postgres_schema() as schema:
            side = f"sqlite:///{tmp_path / 'outcomes.db'}"
            yield f"{POSTGRES_URL}?schema={schema} result_url={side} events_url={side}"
    else:
        with postgres_schema() as results, postgres_schema() as events:
            yield (
                f"sqlite:///{tmp_path / 'queue.db'} result_url={POSTGRES_URL}?schema={results} "
                f"events_url={POSTGRES_URL}?schema={events}"
            )


@pytest.fixture
async def split(split_spec: str) -> AsyncIterator[SplitStorage]:
    store = open_spec(split_spec)
    assert isinstance(store, SplitStorage)
    async with store:
        yield store


async def claim(store: SplitStorage) -> Task:
    [task] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
    return task


def succeeded(task: Task, result: bytes) -> TaskResult:
    assert task.lease_token is not None
    return TaskResult(
        task_id=task.id,
        lease_token=task.lease_token,
        status=TaskStatus.SUCCEEDED,
        result=result,
        result_ttl=task.result_ttl,  # as the pool's outcome does
    )


async def test_the_result_is_in_the_result_store_and_the_queue_row_holds_its_mark(
    split: SplitStorage, make_task: MakeTask
) -> None:
    task = make_task()
    await split.insert([task])
    running = await claim(split)

    [accepted] = await split.settle([succeeded(running, b"value")])

    assert accepted.result == b"value"  # what the pool hands its own waiters
    read = await split.get(task.id)
    assert read is not None and read.result == b"value"
    row = await split.queue.get(task.id)
    assert row is not None and kept_token(row.result) == running.lease_token
    assert split.results is not None
    assert await split.results.kept_results([(task.id, running.lease_token or "")]) != {}


async def test_events_are_in_the_events_store_and_none_in_the_queue_store(
    split: SplitStorage, make_task: MakeTask
) -> None:
    task = make_task()
    await split.insert([task])
    running = await claim(split)
    assert await split.progress(task_id=task.id, lease_token=running.lease_token or "", done=1, total=2, message="m")
    await split.settle([succeeded(running, b"value")])

    history = [(e.kind, e.status, e.attempt) for e in await split.events(task_id=task.id)]
    assert history == [
        (EventKind.ENQUEUED, TaskStatus.PENDING, 0),
        (EventKind.STARTED, TaskStatus.RUNNING, 1),
        (EventKind.PROGRESS, TaskStatus.RUNNING, 1),
        (EventKind.SUCCEEDED, TaskStatus.SUCCEEDED, 1),
    ]
    assert await split.queue.events() == []
    assert await split.last_event_seq() == (await split.events())[-1].seq


async def lost_then_rerun(
    split: SplitStorage, task: Task, eventually: Callable[..., Awaitable[Any]]
) -> tuple[Task, Task]:
    """Return the claim of a worker whose lease ran out and was rescued, and the claim that reruns the task."""
    await split.insert([task])
    [lost] = await split.claim(queues=["default"], limit=1, lease=0.05, worker="lost")
    await eventually(lambda: split.expired_leases(limit=10), what="the lost worker's lease to run out")
    rescue = TaskResult(task_id=task.id, lease_token=lost.lease_token or "", status=TaskStatus.PENDING, rescue=True)
    assert await split.settle([rescue])
    return lost, await claim(split)


async def test_a_worker_that_lost_its_lease_never_makes_its_result_the_one_read(
    split: SplitStorage, make_task: MakeTask, eventually: Callable[..., Awaitable[Any]]
) -> None:
    task = make_task()
    lost, rightful = await lost_then_rerun(split, task, eventually)

    assert await split.settle([succeeded(rightful, b"rightful")])
    assert await split.settle([succeeded(lost, b"stale")]) == []  # refused, though its bytes were kept

    done = await split.get(task.id)
    assert done is not None and (done.status, done.result) == (TaskStatus.SUCCEEDED, b"rightful")


async def test_a_result_gone_from_the_result_store_reads_as_missing_not_as_none(
    split: SplitStorage, make_task: MakeTask
) -> None:
    task = make_task()
    await split.insert([task])
    await split.settle([succeeded(await claim(split), b"value")])
    assert split.results is not None
    await split.results.forget_outcomes(everything=True)

    [listed] = await split.list()
    assert listed.status is TaskStatus.SUCCEEDED and listed.result is None
    assert listed.error is not None and listed.error.type == RESULT_MISSING
    assert "no longer in" in listed.error.message
    assert not listed.has_value


async def test_a_reader_on_another_connection_never_sees_succeeded_without_its_result(
    split_spec: str, split: SplitStorage, make_task: MakeTask
) -> None:
    tasks = [make_task() for _ in range(60)]
    await split.insert(tasks)
    ids = [t.id for t in tasks]
    seen_without: list[str] = []
    async with open_spec(split_spec) as reader:

        async def read_until_all_done() -> None:
            with anyio.fail_after(60):
                while True:
                    rows = await reader.get_many(ids)
                    seen_without.extend(t.id for t in rows if t.status is TaskStatus.SUCCEEDED and not t.result)
                    if all(t.status is TaskStatus.SUCCEEDED for t in rows):
                        return

        async def settle_in_small_batches() -> None:
            while claimed := await split.claim(queues=["default"], limit=3, lease=30, worker="w"):
                await split.settle([succeeded(t, t.id.encode()) for t in claimed])

        async with anyio.create_task_group() as group:
            group.start_soon(read_until_all_done)
            group.start_soon(settle_in_small_batches)
        assert {t.id: t.result for t in await reader.get_many(ids)} == {i: i.encode() for i in ids}
    assert seen_without == []


async def test_purge_takes_a_tasks_kept_result_and_events_with_it(split: SplitStorage, make_task: MakeTask) -> None:
    gone, kept = make_task(result_ttl=0.0), make_task(result_ttl=3600.0)
    await split.insert([gone, kept])
    for _ in range(2):
        await split.settle([succeeded(await claim(split), b"v")])

    assert await split.purge() == 1
    assert await split.get(gone.id) is None
    assert await split.events(task_id=gone.id) == []
    assert split.results is not None
    assert len(await split.results.kept_results([(kept.id, t) for t in await _tokens(split, kept.id)])) == 1
    assert [e.kind for e in await split.events(task_id=kept.id)][-1] is EventKind.SUCCEEDED


async def _tokens(split: SplitStorage, task_id: str) -> list[str]:
    row = await split.queue.get(task_id)
    token = kept_token(row.result if row else None)
    return [token] if token else []


async def test_only_results_apart_keeps_the_events_in_the_queue_store(tmp_path: Path, make_task: MakeTask) -> None:
    spec = f"sqlite:///{tmp_path / 'q.db'} result_url=sqlite:///{tmp_path / 'r.db'}"
    async with open_spec(spec) as store:
        assert isinstance(store, SplitStorage) and store.events_store is None
        task = make_task()
        await store.insert([task])
        assert [e.kind for e in await store.queue.events(task_id=task.id)] == [EventKind.ENQUEUED]
        assert [e.kind for e in await store.events(task_id=task.id)] == [EventKind.ENQUEUED]


def test_the_queues_own_store_is_returned_when_nothing_is_apart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    assert not isinstance(open_stores(Settings(db_url=url)), SplitStorage)
    assert not isinstance(open_stores(Settings(db_url=url, result_url=url, events_url=url)), SplitStorage)
    quiet = open_stores(Settings(db_url=url, events_url="memory://", events=False))
    assert not isinstance(quiet, SplitStorage)  # no events recorded: no events store either


async def test_a_late_attempts_result_in_the_same_write_is_never_handed_to_waiters(
    split: SplitStorage, make_task: MakeTask, eventually: Callable[..., Awaitable[Any]]
) -> None:
    task = make_task()
    lost, rightful = await lost_then_rerun(split, task, eventually)

    # one write holds both outcomes, the late one last (a pool batches its outcomes)
    [accepted] = await split.settle([succeeded(rightful, b"rightful"), succeeded(lost, b"stale")])

    assert (accepted.attempt, accepted.result) == (2, b"rightful")


async def test_an_events_store_that_fails_loses_events_never_the_changes(
    tmp_path: Path, make_task: MakeTask, caplog: pytest.LogCaptureFixture
) -> None:
    events_file = tmp_path / "events.db"
    spec = f"sqlite:///{tmp_path / 'q.db'} events_url=sqlite:///{events_file}"
    async with open_spec(spec) as store:
        assert isinstance(store, SplitStorage)
        events_file.rename(tmp_path / "moved.db")  # its store now refuses every write (StoreLost)
        task = make_task()
        await store.insert([task])
        [running] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
        assert await store.settle([succeeded(running, b"v")])
        done = await store.get(task.id)
        assert done is not None and done.status is TaskStatus.SUCCEEDED
    warnings = [r.getMessage() for r in caplog.records if "events are not recorded" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once per outage, not once per write
