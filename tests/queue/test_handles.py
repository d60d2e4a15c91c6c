"""A ``TaskHandle`` follows its task through its life, also when another store object writes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from emulated_worker import add, announce, claim, loaded, succeed

from omniq_nb import (
    AsyncOmniQ,
)

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
