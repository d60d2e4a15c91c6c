"""Cancelling a running task, for every kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import worker_tasks as wt
from pool_helpers import exists, read, stored
from processes import pid_exists

from omniq_nb import AsyncOmniQ, AsyncWorkerPool, TaskCancelled, TaskStatus

pytestmark = pytest.mark.anyio

Wait = Callable[..., Any]
RESULT_WAIT = 30.0  # seconds a test waits for a result at most (generous: a loaded 2-core machine)


async def test_cancel_a_running_async_task(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    marker = tmp_path / "running"
    async with AsyncWorkerPool(q, concurrency=1, kind="async", lease=5):
        h = await q.enqueue(wt.async_wait_forever, str(marker))
        await wait_until(marker.exists, timeout=RESULT_WAIT)
        assert await h.cancel() is True
        with pytest.raises(TaskCancelled):
            await h.result(timeout=RESULT_WAIT)
        await wait_until(lambda: Path(f"{marker}.cancelled").exists(), timeout=RESULT_WAIT)
        assert await (await q.enqueue(wt.add, 2, 2)).result(timeout=RESULT_WAIT) == 4
    assert (await stored(q, h.id)).status is TaskStatus.CANCELLED


async def test_cancel_a_running_thread_task(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    marker = tmp_path / "running"
    async with AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5):
        h = await q.enqueue(wt.wait_until_cancelled, str(marker))
        await wait_until(marker.exists, timeout=RESULT_WAIT)
        assert await h.cancel() is True
        with pytest.raises(TaskCancelled):
            await h.result(timeout=RESULT_WAIT)
        await wait_until(lambda: Path(f"{marker}.flagged").exists(), timeout=RESULT_WAIT)
        assert read(f"{marker}.flagged") == "cancelled"
        assert await (await q.enqueue(wt.add, 2, 2)).result(timeout=RESULT_WAIT) == 4
    task = await stored(q, h.id)
    assert task.status is TaskStatus.CANCELLED
    assert task.result is None  # the thread's late return value is not stored


async def test_cancel_a_running_process_task(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    marker = tmp_path / "running"
    async with AsyncWorkerPool(q, concurrency=1, kind="process", lease=5):
        h = await q.enqueue(wt.sleep_in_process, str(marker))
        await wait_until(marker.exists, timeout=RESULT_WAIT)
        await wait_until(lambda: marker.read_text() != "", timeout=RESULT_WAIT)
        child = int(marker.read_text())
        assert await h.cancel() is True
        with pytest.raises(TaskCancelled):
            await h.result(timeout=RESULT_WAIT)
        await wait_until(lambda: not pid_exists(child), timeout=RESULT_WAIT)
        assert await (await q.enqueue(wt.add, 2, 2)).result(timeout=RESULT_WAIT) == 4
    assert not exists(f"{marker}.finished")
    assert (await stored(q, h.id)).status is TaskStatus.CANCELLED
