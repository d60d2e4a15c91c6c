from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import pytest

from omniq_nb.models import Task, TaskStatus
from omniq_nb.storage import Storage

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]
At = Callable[[float], datetime]


async def claim_one(store: Storage, *queues: str) -> Task | None:
    claimed = await store.claim(queues=list(queues or ["default"]), limit=1, lease=30, worker="w")
    assert len(claimed) <= 1
    return claimed[0] if claimed else None


async def drain_one_by_one(store: Storage) -> list[str]:
    order = []
    while (task := await claim_one(store)) is not None:
        order.append(task.id)
    return order


async def test_claim_hands_out_each_attempt_once(store: Storage, make_task: MakeTask) -> None:
    task = make_task()
    await store.insert([task])
    [claimed] = await store.claim(queues=["default"], limit=5, lease=30, worker="w")
    assert (claimed.id, claimed.attempt) == (task.id, 1)
    assert await store.claim(queues=["default"], limit=5, lease=30, worker="w") == []


async def test_claim_takes_higher_priority_first(store: Storage, make_task: MakeTask, at: At) -> None:
    low = make_task(priority=0, eta=at(-60))
    high = make_task(priority=5, eta=at(-1))
    middle = make_task(priority=1, eta=at(-30))
    await store.insert([low, high, middle])
    assert await drain_one_by_one(store) == [high.id, middle.id, low.id]


async def test_claim_takes_earlier_eta_first_within_a_priority(store: Storage, make_task: MakeTask, at: At) -> None:
    late, early, earliest = make_task(eta=at(-1)), make_task(eta=at(-20)), make_task(eta=at(-40))
    await store.insert([late])
    await store.insert([early, earliest])
    assert await drain_one_by_one(store) == [earliest.id, early.id, late.id]


async def test_claim_takes_enqueue_order_for_equal_priority_and_eta(
    store: Storage, make_task: MakeTask, at: At
) -> None:
    eta = at(-5)
    tasks = [make_task(eta=eta, name=f"job{n}") for n in range(6)]
    await store.insert(tasks[:3])
    for task in tasks[3:]:
        await store.insert([task])
    assert await drain_one_by_one(store) == [t.id for t in tasks]


async def test_claim_with_a_limit_takes_the_best_ready_tasks(store: Storage, make_task: MakeTask, at: At) -> None:
    tasks = [make_task(priority=n % 3, eta=at(-n)) for n in range(9)]
    await store.insert(tasks)
    claimed = await store.claim(queues=["default"], limit=4, lease=30, worker="w")
    best = sorted(range(9), key=lambda n: (-tasks[n].priority, tasks[n].eta, n))[:4]
    assert {t.id for t in claimed} == {tasks[n].id for n in best}


async def test_claim_honours_the_limit(store: Storage, make_task: MakeTask) -> None:
    await store.insert([make_task() for _ in range(7)])
    assert len(await store.claim(queues=["default"], limit=3, lease=30, worker="w")) == 3
    assert len(await store.claim(queues=["default"], limit=3, lease=30, worker="w")) == 3
    assert len(await store.claim(queues=["default"], limit=3, lease=30, worker="w")) == 1
    assert await store.claim(queues=["default"], limit=3, lease=30, worker="w") == []


async def test_claim_leaves_a_task_whose_eta_is_in_the_future(store: Storage, make_task: MakeTask, at: At) -> None:
    later, ready = make_task(eta=at(3600)), make_task()
    await store.insert([later, ready])
    claimed = await store.claim(queues=["default"], limit=10, lease=30, worker="w")
    assert [t.id for t in claimed] == [ready.id]
    stored = await store.get(later.id)
    assert stored is not None
    assert (stored.status, stored.attempt) == (TaskStatus.PENDING, 0)


async def test_claim_leaves_a_pending_task_past_its_expiry(store: Storage, make_task: MakeTask, at: At) -> None:
    stale = make_task(created_at=at(-20), eta=at(-20), expires_at=at(-10))
    fresh = make_task(expires_at=at(3600))
    await store.insert([stale, fresh])
    claimed = await store.claim(queues=["default"], limit=10, lease=30, worker="w")
    assert [t.id for t in claimed] == [fresh.id]
    stored = await store.get(stale.id)
    assert stored is not None
    assert stored.status is TaskStatus.PENDING


async def test_claim_takes_only_the_asked_queues(store: Storage, make_task: MakeTask) -> None:
    a, b, c = make_task(queue="a"), make_task(queue="b"), make_task(queue="c")
    await store.insert([a, b, c])
    claimed = await store.claim(queues=["a", "c"], limit=10, lease=30, worker="w")
    assert {t.id for t in claimed} == {a.id, c.id}
    assert await store.claim(queues=["default"], limit=10, lease=30, worker="w") == []
    assert [t.id for t in await store.claim(queues=["b"], limit=10, lease=30, worker="w")] == [b.id]


async def test_a_claim_over_several_queues_takes_the_best_tasks_of_all_of_them(
    store: Storage, make_task: MakeTask, at: At
) -> None:
    tasks = [make_task(queue="ab"[n % 2], priority=n % 3, eta=at(-n)) for n in range(12)]
    await store.insert(tasks)
    best = sorted(range(12), key=lambda n: (-tasks[n].priority, tasks[n].eta, n))
    claimed = await store.claim(queues=["a", "b"], limit=5, lease=30, worker="w")
    assert {t.id for t in claimed} == {tasks[n].id for n in best[:5]}
    rest = await store.claim(queues=["b", "a"], limit=20, lease=30, worker="w")
    assert {t.id for t in rest} == {tasks[n].id for n in best[5:]}  # nothing left locked or lost


async def test_claims_keep_their_order_after_many_tasks_were_claimed(store: Storage, make_task: MakeTask) -> None:
    tasks = [make_task(name=f"job{n}") for n in range(300)]
    await store.insert(tasks)
    order = []
    while claimed := await store.claim(queues=["default"], limit=7, lease=30, worker="w"):
        order += [t.id for t in claimed]
    assert order == [t.id for t in tasks]


async def test_claim_sets_running_attempt_lease_and_worker(store: Storage, make_task: MakeTask) -> None:
    task = make_task()
    await store.insert([task])
    before = await store.now()
    [claimed] = await store.claim(queues=["default"], limit=1, lease=30, worker="host:1234:w0")
    after = await store.now()

    assert claimed.status is TaskStatus.RUNNING
    assert claimed.attempt == 1
    assert claimed.worker == "host:1234:w0"
    assert claimed.lease_token
    assert claimed.lease_until is not None
    assert claimed.lease_until > after
    assert before.timestamp() + 29 <= claimed.lease_until.timestamp() <= after.timestamp() + 31
    assert claimed.started_at is not None
    assert claimed.payload == task.payload
    assert await store.get(task.id) == claimed


async def test_each_claim_gets_a_new_lease_token(store: Storage, make_task: MakeTask) -> None:
    tasks = [make_task() for _ in range(20)]
    await store.insert(tasks)
    claimed = await store.claim(queues=["default"], limit=20, lease=30, worker="w")
    assert len({t.lease_token for t in claimed}) == 20
    [first] = await store.release(leases={claimed[0].id: claimed[0].lease_token or ""})
    [again] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
    assert again.id == first.id
    assert again.lease_token not in {t.lease_token for t in claimed}


async def test_concurrent_claims_never_return_a_task_twice(store: Storage, make_task: MakeTask) -> None:
    tasks = [make_task() for _ in range(60)]
    await store.insert(tasks)
    batches = await asyncio.gather(
        *(store.claim(queues=["default"], limit=7, lease=30, worker=f"w{n}") for n in range(12))
    )
    ids = [t.id for batch in batches for t in batch]
    assert len(ids) == len(set(ids))
    assert set(ids) == {t.id for t in tasks}
    assert all(t.attempt == 1 for batch in batches for t in batch)


async def test_two_store_objects_racing_never_share_a_task(store: Storage, twin: Storage, make_task: MakeTask) -> None:
    tasks = [make_task() for _ in range(300)]
    await store.insert(tasks)

    async def drain(backend: Storage, worker: str) -> list[str]:
        taken: list[str] = []
        while batch := await backend.claim(queues=["default"], limit=5, lease=30, worker=worker):
            taken.extend(t.id for t in batch)
        return taken

    results = await asyncio.gather(drain(store, "a1"), drain(twin, "b1"), drain(store, "a2"), drain(twin, "b2"))
    ids = [task_id for taken in results for task_id in taken]
    assert len(ids) == len(set(ids)), "a task was claimed twice"
    assert set(ids) == {t.id for t in tasks}
    final = await twin.get_many([t.id for t in tasks])
    assert {(t.status, t.attempt) for t in final} == {(TaskStatus.RUNNING, 1)}
