"""A ``TaskHandle`` follows its task through its life, also when another store object writes it."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from emulated_worker import add, announce, claim, loaded, succeed

from omniq_nb import (
    AsyncOmniQ,
)
from omniq_nb.storage.sqlite import SQLiteStorage

pytestmark = pytest.mark.anyio

Wait = Callable[..., Any]


async def test_handle_follows_a_task_through_its_life(q: AsyncOmniQ, wait_until: Wait) -> None:
    h = await q.enqueue(add, 1)
    [task] = await claim(q)
    announce(q, [task])
    await wait_until(lambda: h.status == "running", timeout=5)
    assert h.attempt == 1
    await succeed(q, task, 2)
    await wait_until(h.done, timeout=5)
    assert h.status == "succeeded"


async def test_handle_sees_another_store_objects_writes(sqlite_url: str, wait_until: Wait) -> None:
    async with AsyncOmniQ(db_url=sqlite_url) as q, AsyncOmniQ(db_url=sqlite_url) as other:
        h = await q.enqueue(add, 1)
        await anyio.lowlevel.checkpoint()  # the hub's first poll sets its cursor (queued before the next read)
        await q.list()
        await other.cancel(h.id)  # another object: no local publish, only polling sees it
        await wait_until(lambda: h.status == "cancelled", timeout=5)


async def test_queues_sharing_one_store_object_see_each_others_writes(sqlite_url: str, wait_until: Wait) -> None:
    """A store passed in may be written through by another queue: its follower reads every event."""
    store = SQLiteStorage(sqlite_url)
    async with AsyncOmniQ(storage=store) as q, AsyncOmniQ(storage=store) as other:
        h = await q.enqueue(add, 1)
        mirror = await other.get(h.id)
        await anyio.lowlevel.checkpoint()  # the hubs' first polls set their cursors
        await other.list()
        [task] = await claim(q)
        announce(q, [task])  # q's own hub hears it at once; other's only through the events
        await succeed(q, task, 2)
        await wait_until(lambda: mirror.status == "succeeded", timeout=5)


async def test_a_handle_keeps_no_payload_bytes_from_enqueue_to_result(q: AsyncOmniQ) -> None:
    big = "x" * 200_000
    h = await q.enqueue(add, big, "y")
    group = await q.enqueue_many(add, [(big, str(n)) for n in range(3)])
    assert h.task.payload == b"" and all(member.task.payload == b"" for member in group)
    stored = await q.storage.get(h.id)
    assert stored is not None and len(stored.payload) > 200_000  # the store has it, for the worker

    for task in await claim(q, limit=10):
        fn, args, kwargs = await loaded(q, task)
        await succeed(q, task, fn(*args, **kwargs))
    assert await h.result(timeout=10) == big + "y"
    assert await group.result(timeout=10) == [big + str(n) for n in range(3)]
    assert h.task.payload == b"" and all(member.task.payload == b"" for member in group)  # rows read again


async def test_a_member_kept_without_its_group_is_still_followed(sqlite_url: str, wait_until: Wait) -> None:
    async with AsyncOmniQ(db_url=sqlite_url) as q, AsyncOmniQ(db_url=sqlite_url) as other:
        group = await q.enqueue_many(add, [(n, n) for n in range(5)])
        kept, dropped = group[3], weakref.ref(group[1])
        del group  # the hub followed the members as one batch, which goes with the group
        await wait_until(lambda: gc.collect() >= 0 and dropped() is None, timeout=5)
        await anyio.lowlevel.checkpoint()  # the hub's first poll sets its cursor
        await q.list()
        await other.cancel(kept.id)  # only the events tell q's hub
        await wait_until(lambda: kept.status == "cancelled", timeout=5)


async def test_handles_listed_out_of_a_dropped_group_are_all_followed(sqlite_url: str, wait_until: Wait) -> None:
    async with AsyncOmniQ(db_url=sqlite_url) as q, AsyncOmniQ(db_url=sqlite_url) as other:
        handles = list(await q.enqueue_many(add, [(n, n) for n in range(50)]))
        gc.collect()
        await anyio.lowlevel.checkpoint()
        await q.list()
        for handle in handles:
            await other.cancel(handle.id)
        await wait_until(lambda: all(h.status == "cancelled" for h in handles), timeout=5)


async def test_a_dropped_group_and_its_handles_are_freed(q: AsyncOmniQ, wait_until: Wait) -> None:
    group = await q.enqueue_many(add, [(n, n) for n in range(5)])
    member = weakref.ref(group[2])
    del group
    await wait_until(lambda: gc.collect() >= 0 and member() is None, timeout=5)


async def test_fresh_members_among_cache_hits_follow_their_own_tasks(sqlite_url: str, wait_until: Wait) -> None:
    async with AsyncOmniQ(db_url=sqlite_url) as q, AsyncOmniQ(db_url=sqlite_url) as other:
        answered = await q.enqueue_many(add, [(1, 1), (3, 3)], cache=True)
        for task in await claim(q, limit=10):
            fn, args, kwargs = await loaded(q, task)
            await succeed(q, task, fn(*args, **kwargs))
        assert await answered.result(timeout=10) == [2, 6]
        group = await q.enqueue_many(add, [(n, n) for n in range(5)], cache=True)
        assert [h.id for h in group][1::2] == answered.ids  # hits, between new tasks
        await anyio.lowlevel.checkpoint()
        await q.list()
        for handle in group[0::2]:
            await other.cancel(handle.id)
        await wait_until(lambda: [h.status for h in group] == ["cancelled", "succeeded"] * 2 + ["cancelled"], timeout=5)


async def test_a_group_its_handles_observe_is_freed_once_dropped(q: AsyncOmniQ, wait_until: Wait) -> None:
    group = await q.enqueue_many(add, [(n, n) for n in range(5)])
    for handle in group:
        handle.observe(lambda _, g=group: g.done())  # as a notebook view does: the handles refer to their group
    gone = weakref.ref(group)
    del group, handle
    await wait_until(lambda: gc.collect() >= 0 and gone() is None, timeout=5)


async def test_reordering_a_groups_list_keeps_its_handles_followed(sqlite_url: str, wait_until: Wait) -> None:
    async with AsyncOmniQ(db_url=sqlite_url) as q, AsyncOmniQ(db_url=sqlite_url) as other:
        group = await q.enqueue_many(add, [(n, n) for n in range(5)])
        group.handles.reverse()
        await anyio.lowlevel.checkpoint()
        await q.list()
        for handle in group:
            await other.cancel(handle.id)
        await wait_until(lambda: all(h.status == "cancelled" for h in group), timeout=5)
