"""``q.purge``: what it removes and the arguments it refuses."""

from __future__ import annotations

import pytest
from emulated_worker import add, claim, succeed

from omniq_nb import (
    AsyncOmniQ,
    TaskNotFound,
)

pytestmark = pytest.mark.anyio


async def test_purge(q: AsyncOmniQ) -> None:
    done = await q.enqueue(add, 1)
    pending = await q.enqueue(add, 2)
    [task] = await claim(q)
    await succeed(q, task, 1)
    assert await q.purge() == 0  # finished just now: within RESULT_TTL (7 days)
    assert await q.purge(older_than=3600) == 0  # too recent
    assert await q.purge(older_than=0, status="failed") == 0  # other status
    assert await q.purge(older_than=0) == 1
    with pytest.raises(TaskNotFound):
        await q.get(done.id)
    assert await q.events(task_id=done.id) == []
    assert [t.id for t in await q.list()] == [pending.id]
    assert await q.purge(everything=True) == 1
    assert await q.list() == []


async def test_purge_rejects_bad_arguments(q: AsyncOmniQ) -> None:
    with pytest.raises(ValueError, match="older_than"):
        await q.purge(older_than=-1)
    with pytest.raises(ValueError, match="status"):
        await q.purge(older_than=1, status="gone")
