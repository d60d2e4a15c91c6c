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
from omniq_nb.models import new_task_ids
from omniq_nb.waiters import HandleBatch

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
        gc.collect()
        assert dropped() is None
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


async def test_a_dropped_group_and_its_handles_are_freed(q: AsyncOmniQ) -> None:
    group = await q.enqueue_many(add, [(n, n) for n in range(5)])
    member = weakref.ref(group[2])
    del group
    gc.collect()
    assert member() is None


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


def test_a_batch_finds_its_handles_by_id() -> None:
    class Held:
        def __init__(self, task_id: str) -> None:
            self.id = task_id

    handles = [Held(f"{n:04x}") for n in range(0, 100, 3)]
    batch = HandleBatch(handles)  # type: ignore[arg-type]
    assert all(batch.member(h.id) is h for h in handles)
    assert batch.member("0001") is None and batch.member("ffff") is None and batch.member("") is None

    ids = new_task_ids(10)
    whole, some = [Held(i) for i in ids], [Held(i) for i in ids[1::3]]  # some: the rest were cache hits
    assert all(HandleBatch(whole).member(h.id) is h for h in whole)  # type: ignore[arg-type]
    assert all(HandleBatch(some).member(h.id) is h for h in some)  # type: ignore[arg-type]
    assert HandleBatch(some).member(ids[0]) is None and HandleBatch(some).member(ids[2]) is None  # type: ignore[arg-type]
