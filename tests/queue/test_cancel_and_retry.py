"""``q.cancel`` and ``q.retry`` (and the handle's) on pending, running and finished tasks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from emulated_worker import add, announce, boom_error, claim, fail, succeed

from omniq_nb import (
    AsyncOmniQ,
    InvalidTransition,
    TaskCancelled,
    TaskFailed,
    TaskHandle,
    TaskStatus,
)

pytestmark = pytest.mark.anyio

Wait = Callable[..., Any]


async def test_cancel_pending_task_updates_the_handle(q: AsyncOmniQ, wait_until: Wait) -> None:
    h = await q.enqueue(add, 1)
    assert await h.cancel() is True
    assert (await q.get(h.id)).status == "cancelled"
    await wait_until(lambda: h.status == "cancelled", timeout=5)
    assert h.done()
    assert await claim(q) == []
    with pytest.raises(TaskCancelled):
        await h.result(timeout=5)


async def test_cancel_finished_task_returns_false(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    [task] = await claim(q)
    await succeed(q, task, 1)
    assert await q.cancel(h.id) is False
    assert (await q.get(h.id)).status == "succeeded"


async def test_cancel_running_task(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    await claim(q)
    assert await q.cancel(h.id) is True
    with pytest.raises(TaskCancelled, match="cancelled"):
        await q.result(h.id, timeout=5)


async def test_retry_failed_task_allows_one_more_attempt(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    [task] = await claim(q)
    await fail(q, task, boom_error())
    with pytest.raises(TaskFailed):
        await h.result(timeout=5)
    again = await h.retry()
    assert isinstance(again, TaskHandle)
    assert again.id == h.id
    assert again.status == "pending"
    assert again.task.max_attempts > again.task.attempt
    [second] = await claim(q)
    assert (second.id, second.attempt) == (h.id, 2)
    await succeed(q, second, "ok")
    assert await again.result(timeout=5) == "ok"
    assert await h.result(timeout=5) == "ok"


async def test_a_claim_right_after_a_retry_is_what_the_handle_keeps(sqlite_url: str, wait_until: Wait) -> None:
    """A retry and this process's claim of the task both come before the follower's next read.

    The claim handed the running row to the handle at once; the retry's older event, read
    after it, must not put the handle back to pending (the claim's own event is not read again).
    """
    async with AsyncOmniQ(db_url=sqlite_url) as q:
        h = await q.enqueue(add, 1)
        [task] = await claim(q)
        await fail(q, task, boom_error())
        failed = await q.storage.last_event_seq()
        await wait_until(lambda: q._hub._cursor >= failed, timeout=10)  # the follower read the failure
        await q.retry(h.id)
        [again] = await claim(q)
        announce(q, [again])
        assert h.status is TaskStatus.RUNNING
        newest = await q.storage.last_event_seq()
        await wait_until(lambda: q._hub._cursor >= newest, timeout=10)
        assert (h.status, h.task.attempt) == (TaskStatus.RUNNING, 2)


async def test_retry_cancelled_task(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    await q.cancel(h.id)
    assert (await q.retry(h.id)).status == "pending"
    assert len(await claim(q)) == 1


async def test_retry_of_succeeded_pending_or_running_task_raises(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    with pytest.raises(InvalidTransition):
        await q.retry(h.id)
    [task] = await claim(q)
    with pytest.raises(InvalidTransition, match="running"):
        await q.retry(h.id)
    await succeed(q, task, 1)
    with pytest.raises(InvalidTransition, match="succeeded"):
        await h.retry()
    assert (await q.get(h.id)).status == "succeeded"
