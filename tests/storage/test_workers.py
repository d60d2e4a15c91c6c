"""The worker registry (heartbeat, list, stop request, unregister) and kernel affinity in claims."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import msgspec
import pytest

from omniq_nb.models import Task, WorkerInfo
from omniq_nb.storage import Storage

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]
Eventually = Callable[..., Awaitable[Any]]


def pool(worker_id: str = "a1b2c3d4", **overrides: Any) -> WorkerInfo:
    fields: dict[str, Any] = {
        "id": worker_id,
        "name": f"host:{os.getpid()}:{worker_id}",
        "host": "host",
        "pid": os.getpid(),
        "kind": "thread",
        "concurrency": 4,
        "queues": ("default", "io"),
        "ttl": 30.0,
    }
    fields.update(overrides)
    return WorkerInfo(**fields)


async def claim_ids(store: Storage, **affinity: Any) -> set[str]:
    return {t.id for t in await store.claim(queues=["default"], limit=100, lease=30, worker="w", **affinity)}


async def test_a_heartbeat_registers_a_pool_with_every_field(store: Storage) -> None:
    before = datetime.now(timezone.utc)
    started = pool(kernel="session-1", notebook="work/a.ipynb", started_at=before, running=2)
    assert await store.heartbeat(started) is False
    [listed] = await store.workers()
    assert msgspec.structs.replace(listed, heartbeat=None) == started
    assert listed.heartbeat is not None and listed.heartbeat >= before


async def test_later_heartbeats_keep_the_start_and_refresh_the_rest(store: Storage) -> None:
    await store.heartbeat(pool(running=0))
    [first] = await store.workers()
    await store.heartbeat(pool(running=3))
    [second] = await store.workers()
    assert second.started_at == first.started_at
    assert second.running == 3
    assert second.heartbeat is not None and first.heartbeat is not None and second.heartbeat >= first.heartbeat


async def test_pools_are_listed_oldest_first(store: Storage) -> None:
    for worker_id in ("bbbbbbbb", "aaaaaaaa", "cccccccc"):
        await store.heartbeat(pool(worker_id, started_at=datetime.now(timezone.utc)))
    assert [w.id for w in await store.workers()] == ["bbbbbbbb", "aaaaaaaa", "cccccccc"]


async def test_a_pool_whose_heartbeat_is_older_than_its_ttl_is_dead(store: Storage, eventually: Eventually) -> None:
    await store.heartbeat(pool("deadbeef", ttl=0.2))
    await store.heartbeat(pool("a11ve000"))

    async def only_the_live_one() -> bool:
        return [w.id for w in await store.workers()] == ["a11ve000"]

    await eventually(only_the_live_one, what="the silent pool to drop out of the registry")
    assert await store.request_stop("deadbeef") is False


async def test_a_stop_request_is_answered_by_the_next_heartbeat(store: Storage) -> None:
    await store.heartbeat(pool())
    assert await store.request_stop("a1b2c3d4") is True
    [listed] = await store.workers()
    assert listed.stop_requested
    assert await store.heartbeat(pool()) is True
    assert await store.heartbeat(pool()) is True  # it stays asked until it is gone


async def test_stopping_an_unknown_pool_finds_nothing(store: Storage) -> None:
    assert await store.request_stop("nosuchid") is False
    assert await store.workers() == []


async def test_unregister_removes_the_pool(store: Storage) -> None:
    await store.heartbeat(pool("aaaaaaaa"))
    await store.heartbeat(pool("bbbbbbbb"))
    await store.unregister("aaaaaaaa")
    await store.unregister("nosuchid")
    assert [w.id for w in await store.workers()] == ["bbbbbbbb"]


async def test_a_twin_sees_the_registry(store: Storage, twin: Storage) -> None:
    await store.heartbeat(pool())
    assert [w.id for w in await twin.workers()] == ["a1b2c3d4"]
    assert await twin.request_stop("a1b2c3d4") is True
    assert await store.heartbeat(pool()) is True


async def test_a_claim_without_affinity_takes_every_task(store: Storage, make_task: MakeTask) -> None:
    await store.heartbeat(pool(kernel="k1"))
    tasks = [make_task(), make_task(owner="k1"), make_task(owner="k2")]
    await store.insert(tasks)
    assert await claim_ids(store) == {t.id for t in tasks}


async def test_a_kernel_claims_its_own_unowned_and_orphaned_tasks(store: Storage, make_task: MakeTask) -> None:
    await store.heartbeat(pool("aaaaaaaa", kernel="k1"))
    await store.heartbeat(pool("bbbbbbbb", kernel="k2"))
    mine, unowned, orphan = make_task(owner="k1"), make_task(), make_task(owner="k-dead")
    theirs = make_task(owner="k2")
    await store.insert([mine, unowned, orphan, theirs])
    assert await claim_ids(store, unowned_only=True, owner="k1") == {mine.id, unowned.id, orphan.id}
    assert await claim_ids(store, unowned_only=True, owner="k1") == set()
    await store.unregister("bbbbbbbb")  # kernel k2's pool stopped: its task is nobody's now
    assert await claim_ids(store, unowned_only=True, owner="k1") == {theirs.id}


async def test_only_unowned_leaves_every_live_kernels_tasks(store: Storage, make_task: MakeTask) -> None:
    await store.heartbeat(pool(kernel="k1"))
    unowned, owned, orphan = make_task(), make_task(owner="k1"), make_task(owner="k-dead")
    await store.insert([unowned, owned, orphan])
    assert await claim_ids(store, unowned_only=True) == {unowned.id, orphan.id}


async def test_a_dead_kernels_tasks_go_to_others_once_its_heartbeat_lapses(
    store: Storage, make_task: MakeTask, eventually: Eventually
) -> None:
    await store.heartbeat(pool(kernel="k2", ttl=0.2))
    theirs = make_task(owner="k2")
    await store.insert([theirs])
    assert await claim_ids(store, unowned_only=True, owner="k1") == set()

    async def claimed() -> set[str]:
        return await claim_ids(store, unowned_only=True, owner="k1")

    assert await eventually(claimed, what="the dead kernel's task to be claimable") == {theirs.id}


async def test_the_owner_is_stored(store: Storage, make_task: MakeTask) -> None:
    task = make_task(owner="session-1")
    await store.insert([task])
    assert await store.get(task.id) == task
    [claimed] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
    assert claimed.owner == "session-1"
