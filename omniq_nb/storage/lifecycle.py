"""The task-lifecycle rules a store computes, written once for every backend.

Backends that keep tasks as Python objects (memory; later the file store) apply these
functions directly. Backends that decide in SQL build their statements from the same
status sets (``FINISHED``, ``UNFINISHED``, ``REQUEUEABLE``) and call the same Python
helpers where they compute in Python (``progress_fraction``, ``check_outcomes``). The
allowed transitions themselves live in ``omniq_nb.models.TRANSITIONS``.

Example:
    >>> from datetime import datetime, timezone
    >>> now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> progress_fraction(3, 4), progress_fraction(5, None)
    (0.75, 0.0)
    >>> worker_alive(WorkerInfo(id="a1", name="w", host="h", pid=1, kind="async", concurrency=1,
    ...                         queues=("default",), heartbeat=now, ttl=90.0), now)
    True

"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone

import msgspec

from omniq_nb.models import (
    DependencyMove,
    EventKind,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    WorkerInfo,
    check_transition,
    sources,
)

__all__ = [
    "FINISHED",
    "KEPT_RESULT_MARGIN",
    "REQUEUEABLE",
    "UNFINISHED",
    "check_outcomes",
    "claimable",
    "chunk_size",
    "cached_hit",
    "newest_cached",
    "due_to_expire",
    "entered",
    "event_of",
    "holds_lease",
    "move_dependent",
    "moved_event",
    "kept_until",
    "lease_lapsed",
    "outcome_applies",
    "progress_fraction",
    "purgeable",
    "requeued_expiry",
    "trimmed_head",
    "worker_alive",
]

FINISHED = frozenset(status for status in TaskStatus if status.is_terminal)
"""Statuses of a task whose run is over: only these are ever purged."""
UNFINISHED = frozenset({TaskStatus.WAITING, TaskStatus.PENDING, TaskStatus.RUNNING})
"""Statuses that ``cancel`` acts on; a periodic series has at most one task in them."""
REQUEUEABLE = sources(TaskStatus.PENDING) - {TaskStatus.RUNNING, TaskStatus.WAITING}
"""Statuses ``requeue`` puts back to pending (failed, cancelled, expired)."""

_ENTERED = {
    TaskStatus.WAITING: EventKind.RETRIED,
    TaskStatus.PENDING: EventKind.RETRIED,
    TaskStatus.RUNNING: EventKind.STARTED,
    TaskStatus.SUCCEEDED: EventKind.SUCCEEDED,
    TaskStatus.FAILED: EventKind.FAILED,
    TaskStatus.CANCELLED: EventKind.CANCELLED,
    TaskStatus.EXPIRED: EventKind.EXPIRED,
}


KEPT_RESULT_MARGIN = 3600.0
"""Seconds a result kept apart from its queue outlives its own ``result_ttl``: it is counted from
when the result was written, on the writer's clock, while the task's row goes ``result_ttl``
after it finished, on the queue's clock; the margin keeps the result until the row is gone."""


def batch_tasks(template: Task, entries: Iterable[tuple[str, bytes]]) -> Iterator[Task]:
    """Yield the tasks of an ``insert_many`` batch: ``template`` with each entry's id and payload.

    A periodic template gives each task a series of its own, named by the task's id.
    """
    periodic = template.series is not None
    for task_id, payload in entries:
        yield msgspec.structs.replace(template, id=task_id, payload=payload, series=task_id if periodic else None)


def kept_until(now: float, result_ttl: float | None) -> float | None:
    """Return when a result kept apart at ``now`` (seconds since the epoch) may go, or ``None``: never."""
    return None if result_ttl is None else now + result_ttl + KEPT_RESULT_MARGIN


def event_of(
    task: Task, kind: EventKind, *, at: datetime | None = None, message: str | None = None, seq: int = 0
) -> TaskEvent:
    """Return the event ``kind`` of ``task`` as it is now (``at``: now when not given)."""
    return TaskEvent(
        seq=seq,
        task_id=task.id,
        kind=kind,
        at=at or datetime.now(timezone.utc),
        status=task.status,
        attempt=task.attempt,
        progress=task.progress,
        message=message,
        run_id=task.run_id,
    )


def entered(status: TaskStatus) -> EventKind:
    """Return the event recorded when a task enters ``status`` (pending again: ``retried``).

    A graceful hand-back (``released``) and progress are recorded by their own calls.
    """
    return _ENTERED[status]


def progress_fraction(done: float, total: float | None) -> float:
    """Return the progress shown for ``done`` of ``total``: clamped to 0..1, 0 without a total."""
    return min(1.0, max(0.0, done / total)) if total else 0.0


def check_outcomes(results: Sequence[TaskResult]) -> None:
    """Refuse outcomes whose status cannot follow ``running``, before anything is written.

    Raises:
        InvalidTransition: one outcome names such a status.

    """
    for result in results:
        check_transition(TaskStatus.RUNNING, result.status)


def holds_lease(task: Task, token: str) -> bool:
    """Return whether ``token`` is the lease of ``task`` while it runs (the fence of every later write)."""
    return task.status is TaskStatus.RUNNING and task.lease_token == token


def outcome_applies(task: Task, result: TaskResult, now: datetime) -> bool:
    """Return whether ``result`` may be written: its lease still holds and, for a rescue, has run out."""
    if not holds_lease(task, result.lease_token):
        return False
    return not (result.rescue and task.lease_until is not None and task.lease_until > now)


def lease_lapsed(task: Task, now: datetime) -> bool:
    """Return whether ``task`` is running on a lease that has run out (its worker may be gone)."""
    return task.status is TaskStatus.RUNNING and task.lease_until is not None and task.lease_until <= now


def claimable(task: Task, queues: Collection[str], now: datetime) -> bool:
    """Return whether ``task`` is ready for a claim on ``queues``: pending, due, not past its TTL."""
    return (
        task.status is TaskStatus.PENDING
        and task.queue in queues
        and task.eta <= now
        and (task.expires_at is None or task.expires_at > now)
    )


def due_to_expire(task: Task, now: datetime) -> bool:
    """Return whether a pending ``task`` has outlived its TTL (``expires_at``)."""
    return task.status is TaskStatus.PENDING and task.expires_at is not None and task.expires_at <= now


def requeued_expiry(task: Task, now: datetime) -> datetime | None:
    """Return the ``expires_at`` of ``task`` requeued at ``now``: its TTL counts again from then."""
    return None if task.expires_at is None else now + (task.expires_at - task.created_at)


def worker_alive(worker: WorkerInfo, now: datetime) -> bool:
    """Return whether a registry entry is live: its heartbeat is younger than its ``ttl``."""
    return worker.heartbeat is not None and worker.heartbeat + timedelta(seconds=worker.ttl) > now


def purgeable(task: Task, now: datetime, *, finished_before: datetime | None, statuses: Collection[TaskStatus]) -> bool:
    """Return whether a finished ``task`` goes in a purge at ``now``.

    Args:
        task: the task, in any status (unfinished tasks never go).
        now: the store's clock.
        finished_before: also take tasks that finished before this time...
        statuses: ...and are in one of these statuses (empty: any finished status).

    """
    finished = task.finished_at
    if finished is None or not task.status.is_terminal:
        return False
    if task.result_ttl is not None and finished + timedelta(seconds=task.result_ttl) <= now:
        return True
    return finished_before is not None and finished < finished_before and task.status in (statuses or FINISHED)


def moved_event(move: DependencyMove) -> EventKind:
    """Return the event a dependency move records: ``ready`` when a waiting task may run now."""
    if move.source is TaskStatus.WAITING and move.target is TaskStatus.PENDING:
        return EventKind.READY
    return entered(move.target)


def move_dependent(task: Task, move: DependencyMove, now: datetime) -> bool:
    """Apply ``move`` to ``task`` (a store's own object) if it is still in ``move.source``; return whether it did.

    A task stopped by a dependency finishes now with the move's error; a task that may run or
    wait again has no error and no finish time (its eta is kept: a delay still counts).
    """
    if task.status is not move.source:
        return False
    check_transition(move.source, move.target)
    task.status, task.error = move.target, move.error
    task.finished_at = now if move.target.is_terminal else None
    return True


def cached_hit(task: Task, key: str, finished_after: datetime | None) -> bool:
    """Return whether ``task`` answers ``ResultStore.cached(key, finished_after=...)``."""
    return (
        task.cache_key == key
        and task.status is TaskStatus.SUCCEEDED
        and (finished_after is None or (task.finished_at is not None and task.finished_at >= finished_after))
    )


def newest_cached(candidates: Iterable[Task | None], key: str, finished_after: datetime | None) -> Task | None:
    """Return the newest (by ``finished_at``) of ``candidates`` that answers ``cached`` for ``key``, or ``None``.

    For stores that find a key's tasks by an index of ids (some may have gone: ``None``).
    """
    hits = [task for task in candidates if task is not None and cached_hit(task, key, finished_after)]
    return max(hits, key=lambda task: task.finished_at or task.created_at, default=None)


def chunk_size(stream: str, text: str) -> tuple[int, int]:
    """Return an output chunk's ``(bytes, lines)`` as output limits count them (a display is one line)."""
    return len(text.encode("utf-8", "surrogatepass")), 1 if stream == "display" else text.count("\n")


def trimmed_head(sizes: Sequence[tuple[int, int]], *, limit_bytes: int, limit_lines: int) -> int:
    """Return how many of a task's oldest output chunks go so the rest fits the limits.

    ``sizes`` are the kept chunks' ``chunk_size``s, oldest first; the newest always stays.

    Example:
        >>> trimmed_head([(600, 1), (600, 1), (10, 1)], limit_bytes=1000, limit_lines=10)
        1
        >>> trimmed_head([(1, 4), (1, 4), (1, 4)], limit_bytes=1000, limit_lines=5)
        2
        >>> trimmed_head([(5000, 1)], limit_bytes=1000, limit_lines=10)
        0

    """
    total_bytes = sum(size for size, _ in sizes)
    total_lines = sum(lines for _, lines in sizes)
    dropped = 0
    while dropped < len(sizes) - 1 and (total_bytes > limit_bytes or total_lines > limit_lines):
        total_bytes -= sizes[dropped][0]
        total_lines -= sizes[dropped][1]
        dropped += 1
    return dropped
