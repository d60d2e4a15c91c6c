"""``q.enqueue_many``: one group handle, in input order, and its result with failures."""

from __future__ import annotations

import operator

import pytest
from emulated_worker import add, boom_error, claim, fail, succeed

from omniq_nb import (
    AsyncOmniQ,
    GroupHandle,
    TaskFailed,
    TaskStatus,
)

pytestmark = pytest.mark.anyio


async def test_enqueue_many_returns_a_group_in_input_order(q: AsyncOmniQ) -> None:
    group = await q.enqueue_many(operator.mul, [(i, 10) for i in range(5)], priority=1)
    assert isinstance(group, GroupHandle)
    assert len(group) == 5
    assert group.ids == [h.id for h in group]
    assert group[0] is group.handles[0]
    assert not group.done()
    assert group.counts[TaskStatus.PENDING] == 5
    for handle, i in zip(group, range(5), strict=True):
        stored = await q.storage.get(handle.id)
        assert stored is not None and handle.task.payload == b""  # a handle keeps no payload; the store does
        fn, args, _ = q.serializer.load_call(stored.payload)
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
