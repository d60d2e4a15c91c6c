from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest

from omniq_nb.models import EventKind, Schedule, Task, TaskStatus
from omniq_nb.storage import Storage

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]
At = Callable[[float], datetime]


async def test_insert_then_get_returns_every_field(store: Storage, make_task: MakeTask, at: At) -> None:
    task = make_task(
        name="pkg.mod.job",
        queue="reports",
        priority=7,
        payload=b"\x00\x01opaque\xff",
        retries=3,
        retry_on=("ValueError", "KeyError"),
        timeout=12.5,
        eta=at(60),
        expires_at=at(3600),
        result_ttl=86400.0,
        schedule=Schedule(interval=timedelta(minutes=5)),
        at_most_once=True,
        kind="process",
        origin="kernel-1/cell-2",
    )
    task.series = task.id
    await store.insert([task])
    assert await store.get(task.id) == task


async def test_insert_keeps_a_cron_schedule(store: Storage, make_task: MakeTask) -> None:
    task = make_task(schedule=Schedule(cron="*/5 * * * *"))
    task.series = task.id
    await store.insert([task])
    stored = await store.get(task.id)
    assert stored is not None
    assert (stored.schedule, stored.series) == (Schedule(cron="*/5 * * * *"), task.id)


async def test_get_unknown_id_returns_none(store: Storage) -> None:
    assert await store.get("0" * 32) is None


async def test_get_many_returns_only_the_tasks_that_exist(store: Storage, make_task: MakeTask) -> None:
    tasks = [make_task() for _ in range(3)]
    await store.insert(tasks)
    found = await store.get_many([tasks[0].id, "f" * 32, tasks[2].id])
    assert sorted(t.id for t in found) == sorted([tasks[0].id, tasks[2].id])
    assert await store.get_many([]) == []


async def test_list_is_newest_first(store: Storage, make_task: MakeTask) -> None:
    tasks = [make_task(name=f"job{n}") for n in range(4)]
    for task in tasks:
        await store.insert([task])
    assert [t.id for t in await store.list()] == [t.id for t in reversed(tasks)]


async def test_list_keeps_batch_order_newest_first(store: Storage, make_task: MakeTask) -> None:
    tasks = [make_task(name=f"job{n}") for n in range(5)]
    await store.insert(tasks)
    assert [t.id for t in await store.list()] == [t.id for t in reversed(tasks)]


async def test_list_filters_by_status_queue_and_limit(store: Storage, make_task: MakeTask) -> None:
    a1, a2, b1 = make_task(queue="a"), make_task(queue="a"), make_task(queue="b")
    await store.insert([a1, a2, b1])
    [claimed] = await store.claim(queues=["a"], limit=1, lease=30, worker="w")
    assert claimed.id == a1.id

    assert [t.id for t in await store.list(queue="a")] == [a2.id, a1.id]
    assert [t.id for t in await store.list(queue="b")] == [b1.id]
    assert await store.list(queue="nowhere") == []
    assert [t.id for t in await store.list(statuses=[TaskStatus.RUNNING])] == [a1.id]
    assert [t.id for t in await store.list(statuses=[TaskStatus.PENDING])] == [b1.id, a2.id]
    assert [t.id for t in await store.list(statuses=[TaskStatus.PENDING], queue="a")] == [a2.id]
    both = await store.list(statuses=[TaskStatus.PENDING, TaskStatus.RUNNING])
    assert [t.id for t in both] == [b1.id, a2.id, a1.id]
    assert await store.list(statuses=[TaskStatus.SUCCEEDED]) == []
    assert [t.id for t in await store.list(limit=2)] == [b1.id, a2.id]
    assert [t.id for t in await store.list(statuses=[TaskStatus.PENDING], limit=1)] == [b1.id]


async def test_count_gives_every_status(store: Storage, make_task: MakeTask) -> None:
    assert await store.count() == dict.fromkeys(TaskStatus, 0)
    tasks = [make_task() for _ in range(4)]
    await store.insert(tasks)
    await store.claim(queues=["default"], limit=1, lease=30, worker="w")
    await store.cancel(tasks[3].id)

    expected = dict.fromkeys(TaskStatus, 0)
    expected.update({TaskStatus.PENDING: 2, TaskStatus.RUNNING: 1, TaskStatus.CANCELLED: 1})
    assert await store.count() == expected


async def test_count_of_some_ids(store: Storage, make_task: MakeTask) -> None:
    tasks = [make_task() for _ in range(3)]
    await store.insert(tasks)
    await store.cancel(tasks[0].id)
    counts = await store.count(task_ids=[tasks[0].id, tasks[1].id, "e" * 32])
    assert counts[TaskStatus.CANCELLED] == 1
    assert counts[TaskStatus.PENDING] == 1
    assert sum(counts.values()) == 2
    assert set(counts) == set(TaskStatus)


async def test_insert_many_in_one_go(store: Storage, make_task: MakeTask) -> None:
    tasks = [make_task(name=f"map{n}", payload=n.to_bytes(2, "big")) for n in range(1000)]
    await store.insert(tasks)
    assert (await store.count())[TaskStatus.PENDING] == 1000
    stored = {t.id: t for t in await store.get_many([t.id for t in tasks])}
    assert stored == {t.id: t for t in tasks}
    enqueued = [e for e in await store.events(limit=5000) if e.kind is EventKind.ENQUEUED]
    assert [e.task_id for e in enqueued] == [t.id for t in tasks]


async def test_insert_nothing_is_harmless(store: Storage) -> None:
    await store.insert([])
    assert await store.list() == []


@pytest.mark.parametrize("size", [2, 1200])
async def test_insert_with_a_duplicate_id_inserts_none_of_the_batch(
    store: Storage, make_task: MakeTask, size: int
) -> None:
    existing = make_task()
    await store.insert([existing])
    fresh = [make_task() for _ in range(size - 1)]
    clash = make_task(id=existing.id, name="other")
    try:
        await store.insert([*fresh, clash])
    except Exception:
        pass
    else:
        pytest.fail("inserting a task whose id already exists was accepted")
    assert await store.get_many([t.id for t in fresh]) == []
    assert [t.id for t in await store.list(limit=5000)] == [existing.id]
    stored = await store.get(existing.id)
    assert stored is not None
    assert stored.name == existing.name
    assert [e.task_id for e in await store.events(limit=5000)] == [existing.id]


async def test_insert_takes_a_lazy_iterable(store: Storage, make_task: MakeTask) -> None:
    names = [f"lazy{n}" for n in range(1100)]
    await store.insert(make_task(name=name) for name in names)
    assert sorted(t.name for t in await store.list(limit=5000)) == sorted(names)


@pytest.mark.parametrize("fail_at", [3, 1100])
async def test_a_lazy_iterable_that_raises_inserts_nothing(store: Storage, make_task: MakeTask, fail_at: int) -> None:
    class Broken(Exception):
        pass

    def tasks() -> Iterator[Task]:
        for n in range(1200):
            if n == fail_at:
                raise Broken(f"cannot build task {n}")
            yield make_task(name=f"lazy{n}")

    with pytest.raises(Broken):
        await store.insert(tasks())
    assert await store.list() == []
    assert await store.events() == []
    assert await store.count() == dict.fromkeys(TaskStatus, 0)
