from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from omniq_nb.models import EventKind, Schedule, Task, TaskStatus, new_task_ids
from omniq_nb.storage import Storage

pytestmark = pytest.mark.anyio


async def test_insert_many_copies_the_template_but_for_id_and_payload(
    store: Storage, make_task: Callable[..., Task]
) -> None:
    template = make_task(priority=7, queue="batch", retries=2, timeout=30.0)
    ids = new_task_ids(1200)  # more than one statement's worth on some backends
    await store.insert_many(template, [(task_id, f"p{n}".encode()) for n, task_id in enumerate(ids)])
    stored = {task.id: task for task in await store.get_many(ids)}
    assert len(stored) == 1200
    for n, task_id in enumerate(ids):
        task = stored[task_id]
        assert task.payload == f"p{n}".encode()
        assert (task.priority, task.queue, task.retries, task.timeout) == (7, "batch", 2, 30.0)
        assert task.status is TaskStatus.PENDING and task.series is None
    events = await store.events(limit=5000)
    assert sum(1 for e in events if e.kind is EventKind.ENQUEUED and e.task_id in stored) == 1200


async def test_insert_many_keeps_input_order_for_claims(store: Storage, make_task: Callable[..., Task]) -> None:
    ids = new_task_ids(50)
    await store.insert_many(make_task(), [(task_id, b"x") for task_id in ids])
    claimed = await store.claim(queues=["default"], limit=50, lease=30, worker="w")
    assert [task.id for task in claimed] == ids


async def test_periodic_tasks_start_their_own_series(store: Storage, make_task: Callable[..., Task]) -> None:
    template = make_task(schedule=Schedule(interval=timedelta(seconds=60)), series="template")
    ids = new_task_ids(3)
    await store.insert_many(template, [(task_id, b"x") for task_id in ids])
    assert {task.id: task.series for task in await store.get_many(ids)} == {task_id: task_id for task_id in ids}


async def test_insert_many_is_all_or_nothing(store: Storage, make_task: Callable[..., Task]) -> None:
    existing = make_task()
    await store.insert([existing])
    fresh = new_task_ids(10)
    with pytest.raises(ValueError, match="already exists"):
        await store.insert_many(make_task(), [*((task_id, b"x") for task_id in fresh), (existing.id, b"dup")])
    assert await store.get_many(fresh) == []


@pytest.mark.parametrize("fail_at", [0, 3, 5001, 10_500])
async def test_lazy_entries_that_raise_insert_nothing(
    store: Storage, make_task: Callable[..., Task], fail_at: int
) -> None:
    """``enqueue_many`` pickles each call as the store reads it: one that cannot be pickled inserts none.

    Past 5,000 and 10,000 the SQLite store has already run statements of the same transaction,
    and one is still running while the next is made (the ``ROLLBACK`` follows it).
    """

    class Unpicklable(Exception):
        pass

    ids = new_task_ids(11_000)

    def entries() -> Iterator[tuple[str, bytes]]:
        for n, task_id in enumerate(ids):
            if n == fail_at:
                raise Unpicklable(f"call {n}")
            yield task_id, b"x"

    with pytest.raises(Unpicklable):
        await store.insert_many(make_task(), entries())
    assert await store.count() == dict.fromkeys(TaskStatus, 0)
    assert await store.events() == []
    await store.insert_many(make_task(), [(task_id, b"x") for task_id in new_task_ids(3)])  # the store goes on
    assert (await store.count())[TaskStatus.PENDING] == 3


async def test_lazy_entries_are_all_inserted(store: Storage, make_task: Callable[..., Task]) -> None:
    ids = new_task_ids(10_001)
    await store.insert_many(make_task(), ((task_id, b"x") for task_id in ids))
    assert (await store.count())[TaskStatus.PENDING] == 10_001


async def test_insert_many_of_nothing_does_nothing(store: Storage, make_task: Callable[..., Task]) -> None:
    await store.insert_many(make_task(), [])
    assert await store.list() == []


def test_batch_ids_are_unique_and_increasing() -> None:
    ids = new_task_ids(5000)
    assert ids == sorted(ids) and len(set(ids)) == 5000
    assert all(len(task_id) == 32 and int(task_id, 16) >= 0 for task_id in ids)
