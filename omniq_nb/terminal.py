"""Text for people, shared by the ``omniq-nb`` command and the ``%omniq`` magics.

Tables of tasks and worker pools, one task in full, a store's health report, a task's kept
output as plain text, and the ``purge`` flags both command lines take. Pure: no I/O, no queue.

Example:
    >>> print(format_workers([]))
    no live worker pools in this store (start one with omniq-nb worker or %omniq workers start)

"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from omniq_nb.estimates import TaskStats, estimate_parts
from omniq_nb.models import OutputChunk, StoreHealth, Task, TaskStatus, WorkerInfo
from omniq_nb.schedule import duration

_LIST_COLUMNS = "{id:32}  {status:9}  {attempt:>7}  {queue:12}  {created:19}  {name}"
_WORKER_COLUMNS = "{id:8}  {kind:7}  {busy:>5}  {queues:16}  {where:24}  {started:19}  {seen:>5}  {serves}"


def add_purge_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``purge`` (``--older-than``, ``--status``, ``--all``, ``--cache``); ``%omniq purge`` too.

    Args:
        parser: the ``purge`` command's parser.
    """
    parser.add_argument("--older-than", type=duration, metavar="AGE", help="finished over AGE ago: 90, 15m, 12h, 7d")
    parser.add_argument(
        "--status", action="append", choices=[s.value for s in TaskStatus if s.is_terminal], help="with --older-than"
    )
    parser.add_argument("--all", action="store_true", help="delete every task, running ones too")
    parser.add_argument(
        "--cache", action="store_true", help="forget every cached result (tasks stay); alone, nothing is deleted"
    )


def format_tasks(tasks: Sequence[Task]) -> str:
    """Return tasks as a text table: id, status, attempts, queue, created, name.

    Args:
        tasks: the snapshots to show.
    """
    lines = [
        _LIST_COLUMNS.format(id="ID", status="STATUS", attempt="ATTEMPT", queue="QUEUE", created="CREATED", name="NAME")
    ]
    for task in tasks:
        lines.append(
            _LIST_COLUMNS.format(
                id=task.id,
                status=task.status.value,
                attempt=f"{task.attempt}/{task.max_attempts}",
                queue=task.queue,
                created=_when(task.created_at),
                name=task.name,
            )
        )
    return "\n".join(lines)


def format_workers(pools: Sequence[WorkerInfo], *, mine: str | None = None) -> str:
    """Return worker pools as a text table, or say there is none.

    Columns: id, kind, busy slots, queues, host:pid, start, seconds since the last heartbeat,
    and what it serves (its kernel's notebook or session, or every task). A pool asked to stop
    is marked ``stopping``; the pool ``mine`` (an id) is marked ``*``.

    Args:
        pools: the live pools, as ``workers()`` returns them.
        mine: the id of the pool to mark as this process's own.
    """
    if not pools:
        return "no live worker pools in this store (start one with omniq-nb worker or %omniq workers start)"
    now = datetime.now(timezone.utc)
    header = {"busy": "BUSY", "queues": "QUEUES", "where": "HOST:PID", "started": "STARTED", "seen": "SEEN"}
    lines = [_WORKER_COLUMNS.format(id="ID", kind="KIND", serves="SERVES", **header)]
    for pool in pools:
        seen = pool.seen(now)
        marks = [" *" if pool.id == mine else "", " (stopping)" if pool.stop_requested else ""]
        lines.append(
            _WORKER_COLUMNS.format(
                id=pool.id,
                kind=pool.kind,
                busy=f"{pool.running}/{pool.concurrency}",
                queues=",".join(pool.queues),
                where=f"{pool.host}:{pool.pid}",
                started=_when(pool.started_at),
                seen="" if seen is None else f"{seen:.0f}s",
                serves=pool.serves + "".join(marks),
            )
        )
    return "\n".join(lines)


_WAITS_FOR_GEVENT = " (waits for a gevent worker: omniq-nb worker --kind gevent)"


def waiting_text(task: Task) -> str:
    """Return what a waiting task waits for: ``waiting for 2 tasks (01a2f3c4, 01a2f3d5)``.

    Example:
        >>> from datetime import datetime, timezone
        >>> at = datetime(2026, 1, 1, tzinfo=timezone.utc)
        >>> waiting_text(Task(id="b", name="fit", eta=at, created_at=at, depends_on=("01a2f3c4aaaa",)))
        'waiting for 1 task (01a2f3c4)'
    """
    shown = ", ".join(task_id[:8] for task_id in task.depends_on[:3]) + (", ..." if len(task.depends_on) > 3 else "")
    count = len(task.depends_on)
    return f"waiting for {count} task{'' if count == 1 else 's'} ({shown})"


def _waits_for_gevent(task: Task) -> bool:
    """Return True for a pending ``kind="gevent"`` task: only a gevent worker claims it."""
    return task.status is TaskStatus.PENDING and task.kind == "gevent"


def format_task(task: Task, value: Any = None, stats: TaskStats | None = None, dependents: Sequence[str] = ()) -> str:
    """Return one task as text: its fields, its result (``value``) or its error and traceback.

    Args:
        task: the snapshot.
        value: the task's decoded result, when it succeeded.
        stats: its function's past runs: a pending or running task shows its expected
            duration and ETA (``estimate_parts``).
        dependents: the ids of the tasks that depend on it.
    """
    fields = {
        "id": task.id,
        "name": task.name,
        "status": task.status.value + (_WAITS_FOR_GEVENT if _waits_for_gevent(task) else ""),
        "queue": task.queue,
        "attempt": f"{task.attempt} of {task.max_attempts}",
        "priority": task.priority,
        "created": _when(task.created_at),
        "started": _when(task.started_at),
        "finished": _when(task.finished_at),
        "worker": task.worker or "",
        "progress": f"{task.progress:.0%}" + (f" {task.progress_message}" if task.progress_message else ""),
    }
    if task.depends_on:
        fields["needs"] = ", ".join(task.depends_on) + ("" if task.run_on == "success" else f" (run_on={task.run_on})")
    if dependents:
        fields["needed by"] = ", ".join(dependents)
    estimate = estimate_parts(task, stats)
    if estimate:
        fields["estimate"] = " · ".join(estimate)
    lines = _aligned(fields.items())
    if task.has_value:
        lines.append(f"{'result':9} {value!r}")
    if task.error is not None:
        lines.append(f"{'error':9} {task.error.type}: {task.error.message}")
        if task.error.traceback:
            lines.append(task.error.traceback.rstrip())
    return "\n".join(lines)


def format_health(health: StoreHealth) -> str:
    """Return a store's health report as text: one line per fact and per warning, then ``ok`` or one line per problem.

    Args:
        health: what ``check()`` found.
    """
    fields = {
        "store": health.url,
        "integrity": "ok" if health.integrity == "ok" else "FAILED",
        "schema": "none" if health.schema_version is None else f"version {health.schema_version}",
        "wal": "none" if health.wal_bytes is None else f"{health.wal_bytes} bytes",
        "tasks": ", ".join(f"{status.value} {n}" for status, n in health.counts.items()) or "unknown",
        "leases": f"{health.expired_leases} expired, {health.stale_leases} of them over {health.stale_after:g} s ago",
    }
    warnings = _aligned(("warning", warning) for warning in health.warnings)
    problems = _aligned(("problem", problem) for problem in health.problems)
    return "\n".join(_aligned(fields.items()) + warnings + (problems or ["ok"]))


def _aligned(fields: Iterable[tuple[str, Any]]) -> list[str]:
    """Return ``key value`` lines with the values in one column."""
    return [f"{key:9} {text}" for key, text in fields]


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


OUTPUT_DROPPED = "[earlier output was dropped: a task keeps its last OUTPUT_LIMIT bytes and OUTPUT_LINES lines]"
"""The line shown above a task's kept output when its head was dropped."""


def display_parts(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the ``(data, metadata)`` of a kept ``display`` chunk (its text is their JSON).

    Example:
        >>> display_parts('{"data": {"text/plain": "7"}, "metadata": {}}')
        ({'text/plain': '7'}, {})
    """
    try:
        kept = json.loads(text)
        data, metadata = kept.get("data"), kept.get("metadata")
    except (ValueError, AttributeError):
        return {"text/plain": text}, {}
    return (data if isinstance(data, dict) else {}), (metadata if isinstance(metadata, dict) else {})


def plain_output(chunks: Iterable[OutputChunk]) -> list[tuple[str, str]]:
    r"""Return a task's kept output as ``(stream, text)`` to print: a display as its ``text/plain`` on stdout.

    Example:
        >>> plain_output([OutputChunk(seq=1, stream="stderr", text="oops\n"),
        ...               OutputChunk(seq=2, stream="display", text='{"data": {"text/plain": "7"}}')])
        [('stderr', 'oops\n'), ('stdout', '7\n')]
    """
    parts: list[tuple[str, str]] = []
    for chunk in chunks:
        if chunk.stream != "display":
            parts.append((chunk.stream, chunk.text))
            continue
        data, _ = display_parts(chunk.text)
        plain = data.get("text/plain", f"<display of {', '.join(data) or 'nothing'}>")
        plain = "\n".join(plain) if isinstance(plain, list) else str(plain)
        parts.append(("stdout", plain + "\n"))
    return parts
