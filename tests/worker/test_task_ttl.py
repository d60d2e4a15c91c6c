"""``ttl`` expires a task nobody claimed; ``result_ttl`` lets purge remove finished ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import worker_tasks as wt
from pool_helpers import kinds_of_events, stored

from omniq_nb import AsyncOmniQ, AsyncWorkerPool, EventKind, TaskExpired, TaskStatus

pytestmark = pytest.mark.anyio

Wait = Callable[..., Any]
RESULT_WAIT = 30.0  # seconds a test waits for a result at most (generous: a loaded 2-core machine)


async def test_ttl_expires_a_task_nobody_claimed(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    marker = tmp_path / "ran"
    h = await q.enqueue_call(wt.touch, args=(str(marker),), ttl=0.2, queue="unserved")
    task = await stored(q, h.id)
    assert task.expires_at is not None

    async def past_deadline() -> bool:
        return await q.storage.now() > task.expires_at  # type: ignore[operator]

    await wait_until(past_deadline, timeout=RESULT_WAIT)
    async with AsyncWorkerPool(q, concurrency=1, kind="thread", queues=["default"], lease=2):

        async def expired() -> bool:
            return (await stored(q, h.id)).status is TaskStatus.EXPIRED

        await wait_until(expired, timeout=RESULT_WAIT)
    with pytest.raises(TaskExpired):
        await h.result(timeout=RESULT_WAIT)
    assert EventKind.EXPIRED in await kinds_of_events(q, h.id)
    assert (await stored(q, h.id)).attempt == 0
    async with AsyncWorkerPool(q, concurrency=1, kind="thread", queues=["unserved"], lease=2):
        control = await q.enqueue_call(wt.add, args=(1, 1), queue="unserved")
        assert await control.result(timeout=RESULT_WAIT) == 2
    assert not marker.exists(), "an expired task ran"


async def test_result_ttl_lets_purge_remove_finished_tasks(q: AsyncOmniQ, wait_until: Wait) -> None:
    short = await q.enqueue_call(wt.add, args=(1, 2), result_ttl=0.2)
    kept = await q.enqueue(wt.add, 3, 4)
    async with AsyncWorkerPool(q, concurrency=2, kind="thread", lease=5):
        assert await short.result(timeout=RESULT_WAIT) == 3
        assert await kept.result(timeout=RESULT_WAIT) == 7

    async def purged() -> bool:
        await q.purge()
        return await q.storage.get(short.id) is None

    await wait_until(purged, timeout=RESULT_WAIT)
    assert (await stored(q, kept.id)).status is TaskStatus.SUCCEEDED
