"""What only the NATS store does for dependencies: old entries, the mirror's index of dependents, wake-ups."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone

import msgspec
import pytest
from nats_server import NATS_URL, nats_prefix

from omniq_nb.models import DependencyMove, Task, TaskStatus
from omniq_nb.storage.nats import NATSStorage
from omniq_nb.storage.nats_codec import next_order, task_key

pytestmark = [pytest.mark.anyio, pytest.mark.nats]

MakeTask = Callable[..., Task]


@pytest.fixture
def url() -> Iterator[str]:
    with nats_prefix() as name:
        yield f"{NATS_URL}?prefix={name}"


@pytest.fixture
async def store(url: str) -> AsyncIterator[NATSStorage]:
    async with NATSStorage(url) as opened:
        yield opened


def waiting(make_task: MakeTask, *on: Task) -> Task:
    return make_task(status=TaskStatus.WAITING, depends_on=tuple(t.id for t in on))


async def test_an_entry_written_before_dependencies_existed_loads_with_the_defaults(
    store: NATSStorage, make_task: MakeTask
) -> None:
    task = make_task()
    fields = msgspec.to_builtins(task, builtin_types=(bytes, datetime))
    del fields["depends_on"], fields["run_on"]
    entry = msgspec.msgpack.encode([next_order(), fields])
    await store._store.create(task_key(task.id), entry)

    loaded = await store.get(task.id)
    assert loaded is not None and (loaded.depends_on, loaded.run_on) == ((), "success")
    assert [t.id for t in await store.list()] == [task.id]
    assert [t.id for t in await store.claim(queues=["default"], limit=5, lease=30, worker="w")] == [task.id]


async def test_another_store_object_finds_dependents_through_its_own_index(
    store: NATSStorage, url: str, make_task: MakeTask
) -> None:
    first, second = make_task(), make_task()
    on_first, on_both = waiting(make_task, first), waiting(make_task, first, second)
    await store.insert([first, second, on_first])
    async with NATSStorage(url) as other:  # its index is built from the bucket's entries
        await store.insert([on_both])  # and kept up from the bucket's changes
        assert [t.id for t in await other.dependents([first.id])] == [on_first.id, on_both.id]
        assert [t.id for t in await other.dependents([second.id])] == [on_both.id]

        await store.cancel(on_both.id)
        soon = datetime.now(timezone.utc) + timedelta(seconds=60)
        assert await store.purge(finished_before=soon, statuses=[TaskStatus.CANCELLED]) == 1
        assert [t.id for t in await other.dependents([first.id])] == [on_first.id]
        assert await other.dependents([second.id]) == []
        await store.purge(everything=True)
        assert await other.dependents([first.id]) == []
        assert other._dependents == {} and store._dependents == {}


async def test_a_waiting_task_is_not_claimable_until_it_is_moved_and_the_move_wakes_workers(
    store: NATSStorage, url: str, make_task: MakeTask
) -> None:
    first = make_task(queue="other")
    second = waiting(make_task, first)
    async with NATSStorage(url) as worker:
        await store.insert([first, second])
        assert await worker.claim(queues=["default"], limit=5, lease=30, worker="w") == []
        await worker.wait_for_tasks(0.01)
        started = time.monotonic()

        async def move_later() -> None:
            await asyncio.sleep(0.2)
            ready = DependencyMove(task_id=second.id, source=TaskStatus.WAITING, target=TaskStatus.PENDING)
            assert len(await store.move_dependents([ready])) == 1

        await asyncio.gather(worker.wait_for_tasks(30), move_later())
        assert time.monotonic() - started < 5
        claimed = await worker.claim(queues=["default"], limit=5, lease=30, worker="w")
        assert [(t.id, t.depends_on) for t in claimed] == [(second.id, (first.id,))]
