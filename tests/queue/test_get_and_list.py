"""``q.get`` and ``q.list``: unknown ids, filters and argument checks."""

from __future__ import annotations

from typing import Any

import pytest
from emulated_worker import add, claim

from omniq_nb import (
    AsyncOmniQ,
    TaskNotFound,
    TaskStatus,
)

pytestmark = pytest.mark.anyio


async def test_get_unknown_id_raises(q: AsyncOmniQ) -> None:
    with pytest.raises(TaskNotFound, match="nope"):
        await q.get("nope")
    with pytest.raises(KeyError):
        await q.get("nope")
    with pytest.raises(TaskNotFound):
        await q.result("nope", timeout=1)
    with pytest.raises(TaskNotFound):
        await q.cancel("nope")
    with pytest.raises(TaskNotFound):
        await q.retry("nope")


async def test_list_filters_by_status_queue_and_limit(q: AsyncOmniQ) -> None:
    a = await q.enqueue(add, 1)
    b = await q.enqueue_call(add, args=(2,), queue="other")
    c = await q.enqueue(add, 3)
    [running] = await claim(q)
    assert running.id == a.id
    assert [t.id for t in await q.list()] == [c.id, b.id, a.id]  # newest first
    assert [t.id for t in await q.list(status="pending")] == [c.id, b.id]
    assert [t.id for t in await q.list(status=TaskStatus.RUNNING)] == [a.id]
    assert [t.id for t in await q.list(status=["running", TaskStatus.PENDING], queue="default")] == [c.id, a.id]
    assert [t.id for t in await q.list(queue="other")] == [b.id]
    assert [t.id for t in await q.list(limit=2)] == [c.id, b.id]
    assert await q.list(status="succeeded") == []


@pytest.mark.parametrize("status", ["done", ["pending", "finished"]])
async def test_list_rejects_an_unknown_status(q: AsyncOmniQ, status: Any) -> None:
    with pytest.raises(ValueError, match="status") as info:
        await q.list(status=status)
    assert "succeeded" in str(info.value)  # lists the valid ones


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
async def test_list_rejects_a_bad_limit(q: AsyncOmniQ, limit: Any) -> None:
    with pytest.raises(ValueError, match="limit"):
        await q.list(limit=limit)
