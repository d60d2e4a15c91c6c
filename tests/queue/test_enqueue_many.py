"""``q.enqueue_many``: one group handle, in input order, and its result with failures."""

from __future__ import annotations

import gc
import operator
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import pytest
from emulated_worker import add, boom_error, claim, fail, loaded, succeed

from omniq_nb import (
    AsyncOmniQ,
    GroupHandle,
    TaskFailed,
    TaskStatus,
)
from omniq_nb.building import BatchRows, new_task
from omniq_nb.config import Settings
from omniq_nb.models import new_task_ids
from omniq_nb.options import make_options

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
        fn, args, _ = await loaded(q, stored)
        assert args == (i, 10)
        assert handle.task.priority == 1

    tasks = await claim(q, limit=10)
    assert len(tasks) == 5
    for task in reversed(tasks):  # finish out of order
        fn, args, kwargs = await loaded(q, task)
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


async def test_each_handle_shows_its_own_row_as_the_store_has_it(q: AsyncOmniQ) -> None:
    """The handles of a batch share one snapshot until their task changes: what each shows is its own row."""
    periodic = await q.enqueue_many(operator.mul, [(i, 10) for i in range(3)], interval=3600, retries=2)
    for handle in periodic:
        stored = await q.storage.get(handle.id)
        assert stored is not None
        assert handle.task == msgspec.structs.replace(stored, payload=b"")
        assert handle.task is handle.task  # made once
        assert (handle.task.id, handle.task.series) == (handle.id, handle.id)  # each periodic task's own series
        assert (handle.status, handle.attempt, handle.progress, handle.error) == ("pending", 0, 0.0, None)
    group = await q.enqueue_many(operator.mul, [(i, 10) for i in range(3)])
    [first] = await claim(q, limit=1)
    await succeed(q, first, 0)
    assert await group[0].result(timeout=5) == 0
    assert group[0].task.status == "succeeded" and group[1].task.status == "pending"


def triple(n: int) -> int:
    return 3 * n


async def test_a_batch_of_handles_keeps_no_row_of_its_own_per_task(tmp_path: Path) -> None:
    """Memory a submitter keeps per task: 20,000 handles hold well under 600 bytes each (a row each held ~744)."""
    async with AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'q.db'}") as q:
        calls = [(n,) for n in range(20_000)]
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            group = await q.enqueue_many(triple, calls)
            gc.collect()
            kept = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert len(group) == 20_000
        assert kept / 20_000 < 600, f"{kept / 20_000:.0f} bytes kept per task"


def test_batch_rows_make_each_row_from_the_shared_one() -> None:
    template = new_task(operator.mul, b"", make_options(interval=60), Settings(), datetime.now(timezone.utc))
    ids = new_task_ids(3)
    rows = BatchRows(template, ids)
    assert len(rows) == 3
    assert [(row.id, row.series) for row in rows] == [(i, i) for i in ids]
    assert rows[1] == msgspec.structs.replace(template, id=ids[1], series=ids[1])
    assert [row.id for row in rows[1:]] == ids[1:]
    assert rows[-1].id == ids[-1]
    with pytest.raises(IndexError):
        rows[3]
