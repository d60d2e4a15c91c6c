"""Helpers of the queue tests: a worker emulated by writing claims and outcomes to the store directly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omniq_nb import (
    AsyncOmniQ,
    Task,
    TaskError,
    TaskResult,
    TaskStatus,
)
from omniq_nb.blob_format import callable_digest


def announce(q: AsyncOmniQ, tasks: list[Task]) -> None:
    """Tell the queue what the emulated worker wrote, as a pool in this process would."""
    q.publish(tasks)


async def claim(q: AsyncOmniQ, queue: str = "default", limit: int = 1) -> list[Task]:
    return await q.storage.claim(queues=[queue], limit=limit, lease=30, worker="w")


async def loaded(q: AsyncOmniQ, task: Task) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """Return a task's call as a pool loads it: a batch's rows name their function, kept once in the store."""
    digest = callable_digest(task.payload)
    kept = (await q.storage.kept_callables([digest])).get(digest) if digest else None
    return q.serializer.load_call(task.payload, stored=kept)


async def succeed(q: AsyncOmniQ, task: Task, value: Any) -> None:
    result = TaskResult(
        task_id=task.id,
        lease_token=task.lease_token or "",
        status=TaskStatus.SUCCEEDED,
        result=q.serializer.dumps(value),
    )
    accepted = await q.storage.settle([result])
    assert len(accepted) == 1
    announce(q, accepted)


async def fail(q: AsyncOmniQ, task: Task, error: TaskError) -> None:
    result = TaskResult(task_id=task.id, lease_token=task.lease_token or "", status=TaskStatus.FAILED, error=error)
    accepted = await q.storage.settle([result])
    assert len(accepted) == 1
    announce(q, accepted)


def boom_error(attempt: int = 1) -> TaskError:
    return TaskError(
        type="ValueError",
        message="bad input 7",
        traceback='Traceback (most recent call last):\n  File "remote.py", line 3, in job\nValueError: bad input 7\n',
        attempt=attempt,
    )


def add(a: int, b: int = 0) -> int:
    return a + b
