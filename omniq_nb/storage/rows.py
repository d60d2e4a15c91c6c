"""The Task and WorkerInfo <-> row codec every SQL backend shares, and the chunking of long inputs.

A row holds plain values: text, numbers, bytes; times as float seconds since the epoch
(UTC); ``retry_on``, ``depends_on`` and worker queues as newline-joined text; a ``TaskError``
as JSON. New columns go at the end of each list, in both ``COLUMNS`` and ``NEW_COLUMNS``.
Column lists are comma-separated names, usable in any SQL dialect; placeholders and
statements are each backend's own (``sqlite_statements`` for SQLite).

Example:
    >>> from datetime import datetime, timezone
    >>> now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> task = Task(id="t1", name="job", payload=b"x", eta=now, created_at=now)
    >>> row = new_task_row(task)
    >>> len(row) == len(NEW_COLUMNS.split(","))
    True
    >>> [list(chunk) for chunk in chunks([1, 2, 3], 2)]
    [[1, 2], [3]]

"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec

from omniq_nb.models import EventKind, Schedule, Task, TaskError, TaskEvent, TaskStatus, WorkerInfo

__all__ = [
    "COLUMNS",
    "EVENT_COLUMNS",
    "EVENT_KIND_OF",
    "NEW_COLUMNS",
    "STATUS_OF",
    "WORKER_COLUMNS",
    "chunks",
    "dependency_rows",
    "encode_error",
    "new_task_row",
    "row_event",
    "row_task",
    "row_worker",
    "sort_claimed",
    "worker_row",
]

COLUMNS = (
    "id, name, queue, status, priority, payload, attempt, retries, retry_on, timeout, eta, created_at, "
    "started_at, finished_at, expires_at, result_ttl, interval, cron, series, at_most_once, kind, "
    "lease_token, lease_until, worker, progress, progress_done, progress_total, progress_message, result, error, "
    "origin, run_id, owner, depends_on, run_on, cache_key"
)
"""Every column of a task, in the order ``row_task`` reads them."""
_PRIORITY_AT, _ETA_AT = (COLUMNS.replace(" ", "").split(",").index(name) for name in ("priority", "eta"))
NEW_COLUMNS = (
    "id, name, queue, status, priority, payload, attempt, retries, retry_on, timeout, eta, created_at, "
    "expires_at, result_ttl, interval, cron, series, at_most_once, kind, origin, owner, depends_on, run_on, cache_key"
)
"""The columns of a task that has never run (the rest keep their defaults), in ``new_task_row``'s order."""
EVENT_COLUMNS = "seq, task_id, kind, at, status, attempt, progress, message, run_id"
"""The columns of an event, in the order ``row_event`` reads them."""
WORKER_COLUMNS = (
    "id, name, host, pid, kind, concurrency, queues, kernel, notebook, started_at, heartbeat, ttl, running, "
    "stop_requested"
)
"""The columns of a worker registry row, in the order ``row_worker`` reads them."""

_UTC = timezone.utc
STATUS_OF = {status.value: status for status in TaskStatus}
"""Each stored status text's ``TaskStatus`` (see ``EVENT_KIND_OF``)."""
EVENT_KIND_OF = {kind.value: kind for kind in EventKind}
"""Each stored kind text's ``EventKind``: a dict lookup, where an Enum call costs a microsecond a row."""
_from_stamp = datetime.fromtimestamp
_error_encoder = msgspec.json.Encoder()
_error_decoder = msgspec.json.Decoder(TaskError)


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Yield ``items`` in consecutive lists of at most ``size`` (a statement's parameter limit).

    A lazy ``items`` is read one list at a time, as each is asked for.
    """
    items = iter(items)
    while batch := list(itertools.islice(items, size)):
        yield batch


def encode_error(error: TaskError | None) -> str | None:
    """Return the JSON text stored for a task's error (``None`` without one)."""
    return None if error is None else _error_encoder.encode(error).decode()


def new_task_row(task: Task) -> tuple[Any, ...]:
    """Return the ``NEW_COLUMNS`` values of a task about to be inserted (pending or waiting, never run)."""
    schedule, expires = task.schedule, task.expires_at
    return (
        task.id,
        task.name,
        task.queue,
        task.status.value,
        task.priority,
        task.payload,
        task.attempt,
        task.retries,
        "\n".join(task.retry_on) or None,
        task.timeout,
        task.eta.timestamp(),
        task.created_at.timestamp(),
        None if expires is None else expires.timestamp(),
        task.result_ttl,
        schedule.interval.total_seconds() if schedule and schedule.interval else None,
        schedule.cron if schedule else None,
        task.series,
        task.at_most_once,
        task.kind,
        task.origin,
        task.owner,
        "\n".join(task.depends_on) or None,
        task.run_on,
        task.cache_key,
    )


def dependency_rows(tasks: Iterable[Task]) -> list[tuple[str, str]]:
    """Return the dependency index rows of ``tasks`` (``task_deps``): (task id, id it depends on), one per pair."""
    return [(task.id, dependency) for task in tasks for dependency in task.depends_on]


def row_task(row: Sequence[Any]) -> Task:
    """Build a ``Task`` from a row of ``COLUMNS`` (on every claim and settle: kept lean)."""
    interval, cron = row[16], row[17]
    schedule = None
    if interval is not None or cron is not None:
        schedule = Schedule(interval=timedelta(seconds=interval) if interval is not None else None, cron=cron)
    started, finished, expires, lease_until = row[12], row[13], row[14], row[22]
    return Task(  # positional, in Task's field order
        row[0],  # id
        row[1],  # name
        _from_stamp(row[10], _UTC),  # eta
        _from_stamp(row[11], _UTC),  # created_at
        row[2],  # queue
        STATUS_OF[row[3]],
        row[4],  # priority
        row[5],  # payload
        row[6],  # attempt
        row[7],  # retries
        tuple(row[8].split("\n")) if row[8] else (),  # retry_on
        row[9],  # timeout
        None if started is None else _from_stamp(started, _UTC),
        None if finished is None else _from_stamp(finished, _UTC),
        None if expires is None else _from_stamp(expires, _UTC),
        row[15],  # result_ttl
        schedule,
        row[18],  # series
        bool(row[19]),  # at_most_once
        row[20],  # kind
        row[21],  # lease_token
        None if lease_until is None else _from_stamp(lease_until, _UTC),
        row[23],  # worker
        row[24],  # progress
        row[25],  # progress_done
        row[26],  # progress_total
        row[27],  # progress_message
        row[28],  # result
        _error_decoder.decode(row[29]) if row[29] is not None else None,
        row[30],  # origin
        row[31],  # run_id
        row[32],  # owner
        tuple(row[33].split("\n")) if row[33] else (),  # depends_on
        row[34],  # run_on
        row[35],  # cache_key
    )


def row_event(row: Sequence[Any]) -> TaskEvent:
    """Build a ``TaskEvent`` from a row of ``EVENT_COLUMNS``."""
    seq, task_id, kind, at, status, attempt, progress, message, run_id = row
    return TaskEvent(
        seq=seq,
        task_id=task_id,
        kind=EVENT_KIND_OF[kind],
        at=_from_stamp(at, _UTC),
        status=STATUS_OF[status],
        attempt=attempt,
        progress=progress,
        message=message,
        run_id=run_id,
    )


def worker_row(worker: WorkerInfo, *, started: float, now: float) -> tuple[Any, ...]:
    """Return the ``WORKER_COLUMNS`` values of a heartbeat but ``stop_requested`` (the store keeps that)."""
    return (
        worker.id,
        worker.name,
        worker.host,
        worker.pid,
        worker.kind,
        worker.concurrency,
        "\n".join(worker.queues),
        worker.kernel,
        worker.notebook,
        started,
        now,
        worker.ttl,
        worker.running,
    )


def row_worker(row: Sequence[Any]) -> WorkerInfo:
    """Build a ``WorkerInfo`` from a row of ``WORKER_COLUMNS``."""
    return WorkerInfo(
        id=row[0],
        name=row[1],
        host=row[2],
        pid=row[3],
        kind=row[4],
        concurrency=row[5],
        queues=tuple(row[6].split("\n")),
        kernel=row[7],
        notebook=row[8],
        started_at=_from_stamp(row[9], _UTC),
        heartbeat=_from_stamp(row[10], _UTC),
        ttl=row[11],
        running=row[12],
        stop_requested=bool(row[13]),
    )


def sort_claimed(rows: list[Any]) -> None:
    """Sort rows claimed as ``COLUMNS, seq`` in claim order: priority (highest first), eta, enqueue order."""
    rows.sort(key=lambda row: (-row[_PRIORITY_AT], row[_ETA_AT], row[-1]))
