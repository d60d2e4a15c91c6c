"""The queue façade: ``AsyncOmniQ`` (all behaviour, async) and ``OmniQ``, its blocking twin.

The classes live in modules of their own, re-exported here:

| module | job |
|---|---|
| ``omniq_nb.async_queue`` | ``AsyncOmniQ``: enqueue, get, list, cancel, retry, events to handles |
| ``omniq_nb.building`` | task rows from a callable, its options and the settings |
| ``omniq_nb.results`` | waiting for results; the exception a failed task raises |
| ``omniq_nb.admin`` | purge, health check, worker registry, event log (and their blocking twins) |
| ``omniq_nb.sync_queue`` | ``OmniQ``: each method one call through its bridge |
| ``omniq_nb.bridge`` | loop bridges: how code off the queue's loop runs its coroutines |

Example:
    >>> import asyncio, operator
    >>> async def main():
    ...     async with AsyncOmniQ(db_url="memory://") as q:
    ...         h = await q.enqueue(operator.add, 1, 2)
    ...         return h.status
    >>> asyncio.run(main())
    <TaskStatus.PENDING: 'pending'>
    >>> with OmniQ(db_url="memory://") as q:
    ...     q.enqueue(operator.add, 1, 2).status
    <TaskStatus.PENDING: 'pending'>

"""

from __future__ import annotations

from omniq_nb.async_queue import AsyncOmniQ
from omniq_nb.building import new_task, task_name
from omniq_nb.models import new_task_id
from omniq_nb.results import failure
from omniq_nb.sync_queue import OmniQ

__all__ = [
    "AsyncOmniQ",
    "OmniQ",
    "failure",
    "new_task",
    "new_task_id",
    "task_name",
]
