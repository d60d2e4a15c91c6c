"""Background jobs (``asyncio`` tasks): held while they run, and ended when their code may swallow a cancel.

A store client can swallow a cancel: nats-py's ``wait_for`` whose wait had just ended, on
Python 3.11, returns its result and drops the ``CancelledError``. A job that loops around
such a call then runs on, and whoever awaits its end after one ``cancel()`` waits for ever
(a pool's upkeep loop did, on a NATS store, and its pool never stopped).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def keep_running(work: Awaitable[T], jobs: set[asyncio.Future[T]]) -> None:
    """Run ``work`` as a job of the running loop, held in ``jobs`` until it ends.

    The loop keeps only a weak reference to a task: a job nobody holds may be collected
    before it ends.
    """
    job = asyncio.ensure_future(work)
    jobs.add(job)
    job.add_done_callback(jobs.discard)


def end_if_cancelled() -> None:
    """Raise ``CancelledError`` if the running task was cancelled, even if a store call swallowed the cancel.

    On Python 3.11 ``asyncio.wait_for`` returns the result of a wait that had just ended and
    drops the cancel (psycopg_pool's wait for a pooled connection, nats-py's requests); the
    task's ``cancelling()`` count still says it was asked to stop. A job that loops calls this
    once per turn, so that one ``cancel()`` ends it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def retrieve(job: asyncio.Future[Any]) -> None:
    """Mark a finished job's failure as seen (a done callback for a job whose awaiters may all have left)."""
    if not job.cancelled():
        job.exception()


async def cancel_and_wait(
    jobs: Sequence[asyncio.Task[Any]], *, within: float, patience: float = 1.0, every: float = 0.05
) -> bool:
    """Cancel ``jobs``; cancel those still running again every ``every`` seconds until all have ended.

    Args:
        jobs: the jobs.
        within: seconds to wait at most.
        patience: seconds before the first cancel is repeated (a job's own cleanup, such as a
            rollback, may take a moment: a repeated cancel would cut it short).
        every: seconds between later cancels.

    Returns:
        Whether every job ended in time (one that did not is left running).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pause = patience
    while (pending := [job for job in jobs if not job.done()]) and (left := deadline - loop.time()) > 0:
        for job in pending:
            job.cancel()
        await asyncio.wait(pending, timeout=min(pause, left))
        pause = every
    return all(job.done() for job in jobs)
