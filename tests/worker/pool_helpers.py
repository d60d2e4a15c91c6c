"""Helpers of the in-process pool tests: reads of the stored task, bounded polls, task functions defined here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import worker_tasks as wt

import omniq_nb as omniq
from omniq_nb import AsyncOmniQ, EventKind, Task


async def stored(q: AsyncOmniQ, task_id: str) -> Task:
    task = await q.storage.get(task_id)
    assert task is not None, f"task {task_id} is gone"
    return task


async def kinds_of_events(q: AsyncOmniQ, task_id: str) -> list[EventKind]:
    return [event.kind for event in await q.events(task_id=task_id)]


def read(path: Path | str) -> str:
    return Path(path).read_text()


def exists(path: Path | str) -> bool:
    return Path(path).exists()


def blocking_fn(kind: str) -> Callable[..., Any]:
    """A task that waits for a gate: on the loop for the async kind, else in a thread or child."""
    return wt.async_gated if kind == "async" else wt.gated


async def series_of(q: AsyncOmniQ, series: str) -> list[Task]:
    return [t for t in await q.list(limit=1000) if t.series == series]


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def own_timeout() -> None:
    raise TimeoutError("upstream API timed out")


async def wait_for_status(q: omniq.AsyncOmniQ, task_id: str, status: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while (await q.get(task_id)).status != status:
        assert time.monotonic() < deadline, f"task {task_id} never reached {status}"
        await asyncio.sleep(0.02)
