"""What happens after an attempt: succeed, retry with backoff, fail, reschedule a periodic task.

Pure decisions over ``models`` (no store access, ``now`` passed in; only a series that cannot
go on is logged), shared by every worker pool and by the rescue of tasks whose worker died.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec

from omniq_nb.errors import ConfigError, WorkerLost, type_name
from omniq_nb.models import Task, TaskError, TaskResult, TaskStatus, new_task_id
from omniq_nb.schedule import backoff, next_run
from omniq_nb.tracebacks import format_task_traceback

logger = logging.getLogger(__name__)


ERROR_TEXT_AT_MOST = 65_536
"""Characters of a failed attempt's message, and of its traceback, that are stored (a longer one: its start and end)."""


def describe_exception(exc: BaseException, attempt: int) -> tuple[TaskError, tuple[str, ...]]:
    """Return the stored error for ``exc`` and the names of its classes (for ``retry_on``).

    The traceback shows the user's frames; library frames are collapsed (``tracebacks``).

    Args:
        exc: the exception the task raised.
        attempt: the attempt it ended.
    """
    try:
        message = str(exc)
    except Exception:  # its args recurse too deeply, or its __str__ is broken: still fail the task
        message = "<exception str() failed>"  # what the traceback module shows then
    error = TaskError(
        type=type_name(type(exc)),
        message=clipped(message),
        traceback=clipped(format_task_traceback(exc)),
        attempt=attempt,
    )
    return error, tuple(type_name(kind) for kind in type(exc).__mro__)


def clipped(text: str, at_most: int = ERROR_TEXT_AT_MOST) -> str:
    """Return ``text``, or its start and its end when longer than ``at_most`` characters.

    An exception's message can be megabytes (a repr of a whole array); the stored error need not.

    Example:
        >>> print(clipped("abcdefghij", at_most=4))
        ab
        … [6 characters cut] …
        ij

    """
    if len(text) <= at_most:
        return text
    half = at_most // 2
    return f"{text[:half]}\n… [{len(text) - 2 * half:,} characters cut] …\n{text[-half:]}"


def succeeded(task: Task, result: bytes) -> TaskResult:
    """Return the outcome of an attempt that returned ``result`` (a serialized blob)."""
    return TaskResult(
        task_id=task.id,
        lease_token=task.lease_token or "",
        status=TaskStatus.SUCCEEDED,
        result=result,
        result_ttl=task.result_ttl,
    )


def after_failure(
    task: Task,
    error: TaskError,
    raised: Sequence[str],
    *,
    now: datetime,
    backoff_base: float,
    retryable: bool = True,
    rescue: bool = False,
) -> TaskResult:
    """Return the outcome of a failed attempt: back to pending after a backoff, or failed.

    The task is retried when attempts remain, ``retryable`` holds, and ``retry_on`` is empty
    or names one of the exception's classes.

    Args:
        task: the task as claimed.
        error: the stored error.
        raised: the names of the exception's classes (``describe_exception``).
        now: the store's clock.
        backoff_base: seconds before the first retry.
        retryable: False for failures a retry cannot fix (a bad signature).
        rescue: the outcome is written by a rescuer after the lease ran out.
    """
    wanted = not task.retry_on or any(name in task.retry_on for name in raised)
    if retryable and wanted and task.attempt < task.max_attempts:
        delay = backoff(task.attempt, base=backoff_base)
        return TaskResult(
            task_id=task.id,
            lease_token=task.lease_token or "",
            status=TaskStatus.PENDING,
            error=error,
            eta=now + timedelta(seconds=delay),
            rescue=rescue,
        )
    return TaskResult(
        task_id=task.id, lease_token=task.lease_token or "", status=TaskStatus.FAILED, error=error, rescue=rescue
    )


def after_lost_lease(task: Task, *, now: datetime, backoff_base: float) -> TaskResult:
    """Return the rescue of a running task whose lease ran out (its worker died or hung).

    The lost attempt counts. ``at_most_once`` tasks are failed rather than run again.
    """
    error = TaskError(
        type=type_name(WorkerLost),
        message=f"worker lost: the lease of {task.worker or 'its worker'} ran out during attempt {task.attempt}",
        attempt=task.attempt,
    )
    names = (type_name(WorkerLost),)
    return after_failure(
        task, error, names, now=now, backoff_base=backoff_base, retryable=not task.at_most_once, rescue=True
    )


def after_interrupt(task: Task, *, now: datetime) -> TaskResult:
    """Return the outcome of an ``at_most_once`` attempt that a graceful stop interrupted: failed.

    Other tasks are handed back instead; these must never run a second time.
    """
    error = TaskError(
        type=type_name(WorkerLost),
        message=f"worker lost: {task.worker or 'its worker'} stopped during attempt {task.attempt}; "
        "an at_most_once task is not run again",
        attempt=task.attempt,
    )
    return TaskResult(task_id=task.id, lease_token=task.lease_token or "", status=TaskStatus.FAILED, error=error)


def successor(task: Task, *, now: datetime) -> Task | None:
    """Return the next run of a periodic task after this one finished, or ``None`` if not periodic.

    Runs missed while nothing ran collapse into one (see ``schedule.next_run``). A cron
    schedule that matches no later time (a stored ``0 0 31 2 *``, a year gone by) ends its
    series with a warning rather than stopping the worker that asks.
    """
    if task.schedule is None:
        return None
    try:
        eta = next_run(task.schedule, previous=task.eta, now=now)
    except ConfigError as exc:  # a stored cron that can no longer match: the series ends here
        logger.warning("task %s: no next run, its series ends: %s", task.id, exc)
        return None
    ttl = None if task.expires_at is None else task.expires_at - task.eta
    return msgspec.structs.replace(
        task,
        id=new_task_id(),
        status=TaskStatus.PENDING,
        attempt=0,
        eta=eta,
        created_at=now,
        started_at=None,
        finished_at=None,
        expires_at=None if ttl is None else eta + ttl,
        series=task.series or task.id,
        lease_token=None,
        lease_until=None,
        worker=None,
        progress=0.0,
        progress_done=0.0,
        progress_total=None,
        progress_message=None,
        result=None,
        error=None,
    )
