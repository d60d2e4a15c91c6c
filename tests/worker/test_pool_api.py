"""The pool's public surface: the blocking ``WorkerPool`` twin and ``on_event`` listeners."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import worker_tasks as wt

from omniq_nb import AsyncOmniQ, AsyncWorkerPool, EventKind, OmniQ, TaskEvent, WorkerPool

pytestmark = pytest.mark.anyio

Wait = Callable[..., Any]
RESULT_WAIT = 30.0  # seconds a test waits for a result at most (generous: a loaded 2-core machine)


def test_worker_pool_sync_twin_runs_tasks(db_url: str) -> None:
    with OmniQ(db_url=db_url, poll_interval=0.05) as q:
        pool = WorkerPool(q, concurrency=2, kind="thread", lease=5)
        assert not pool.running
        pool.start()
        try:
            assert pool.running
            assert q.enqueue(wt.add, 1, 2).result(timeout=RESULT_WAIT) == 3
        finally:
            pool.stop()
        assert not pool.running
        with WorkerPool(q, concurrency=1, kind="process", lease=5) as other:
            assert other.running
            ran = q.enqueue(wt.where).result(timeout=RESULT_WAIT)
            assert ran["pid"] != os.getpid()
        assert not other.running
        assert q.list(status="succeeded", limit=10)


async def test_on_event_listeners_hear_the_pool(q: AsyncOmniQ, wait_until: Wait) -> None:
    seen: list[TaskEvent] = []
    unsubscribe = q.on_event(seen.append)
    try:
        async with AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5):
            h = await q.enqueue(wt.add, 1, 2)
            assert await h.result(timeout=RESULT_WAIT) == 3

            def heard() -> list[EventKind]:
                return [e.kind for e in seen if e.task_id == h.id]

            await wait_until(lambda: EventKind.SUCCEEDED in heard(), timeout=RESULT_WAIT)
    finally:
        unsubscribe()
    kinds = heard()
    assert EventKind.STARTED in kinds
    assert kinds.index(EventKind.STARTED) < kinds.index(EventKind.SUCCEEDED)
