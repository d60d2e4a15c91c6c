"""Retries with backoff until success, and ``retry_on`` choosing which exceptions retry."""

from __future__ import annotations

from pathlib import Path

import pytest
import worker_tasks as wt
from pool_helpers import kinds_of_events, stored

from omniq_nb import AsyncOmniQ, AsyncWorkerPool, EventKind, TaskFailed, TaskStatus

pytestmark = pytest.mark.anyio

RESULT_WAIT = 30.0  # seconds a test waits for a result at most (generous: a loaded 2-core machine)


async def test_retry_with_backoff_until_success(q: AsyncOmniQ, tmp_path: Path) -> None:
    counter = tmp_path / "calls"
    h = await q.enqueue_call(wt.flaky, args=(str(counter), 2), retries=3)
    async with AsyncWorkerPool(q, concurrency=2, kind="thread", lease=5):
        assert await h.result(timeout=RESULT_WAIT) == 3
    task = await stored(q, h.id)
    assert task.status is TaskStatus.SUCCEEDED
    assert task.attempt == 3
    events = await q.events(task_id=h.id)
    kinds = [e.kind for e in events]
    assert kinds.count(EventKind.STARTED) == 3
    assert kinds.count(EventKind.RETRIED) == 2
    assert kinds.count(EventKind.SUCCEEDED) == 1
    assert EventKind.FAILED not in kinds
    # Each retry waits its backoff after the failure: base 0.05 s doubling, jittered between half
    # and all of it. The failure comes after its attempt started, while the retried event is
    # written when the outcome is (later, on a loaded machine), so measure from the start.
    retried = [e for e in events if e.kind is EventKind.RETRIED]
    started = [e for e in events if e.kind is EventKind.STARTED]
    for n, (retry, before, start) in enumerate(zip(retried, started, started[1:], strict=False), start=1):
        assert (retry.attempt, before.attempt, start.attempt) == (n, n, n + 1)
        assert (start.at - before.at).total_seconds() >= 0.05 * 2 ** (n - 1) / 2 - 0.005


async def test_retry_on_limits_which_exceptions_retry(q: AsyncOmniQ, tmp_path: Path) -> None:
    other = await q.enqueue_call(wt.flaky, args=(str(tmp_path / "a"), 5, "KeyError"), retries=3, retry_on=[ValueError])
    listed = await q.enqueue_call(
        wt.flaky, args=(str(tmp_path / "b"), 1, "ValueError"), retries=3, retry_on=[ValueError]
    )
    base = await q.enqueue_call(wt.flaky, args=(str(tmp_path / "c"), 1, "KeyError"), retries=3, retry_on=[LookupError])
    async with AsyncWorkerPool(q, concurrency=3, kind="thread", lease=5):
        with pytest.raises(TaskFailed) as info:
            await other.result(timeout=RESULT_WAIT)
        assert await listed.result(timeout=RESULT_WAIT) == 2
        assert await base.result(timeout=RESULT_WAIT) == 2  # KeyError is a LookupError
    assert info.value.error.type == "KeyError"
    failed = await stored(q, other.id)
    assert failed.status is TaskStatus.FAILED
    assert failed.attempt == 1
    assert (tmp_path / "a").read_text() == "x"  # ran once
    assert EventKind.RETRIED not in await kinds_of_events(q, other.id)
    assert (await stored(q, listed.id)).attempt == 2
