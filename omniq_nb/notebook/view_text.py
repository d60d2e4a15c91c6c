"""The text the notebook views show: a task's status, times and result preview, and HTML tables.

A task's elapsed time, expected duration and ETA come from ``omniq_nb.estimates``.

Pure: no widgets, no I/O, no loop. HTML fragments escape what they take as plain text; the
plain-text tables of the command line are ``omniq_nb.terminal``'s.

Example:
    >>> from datetime import datetime, timedelta, timezone
    >>> start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> task = Task(id="t1", name="fit", eta=start, created_at=start, status=TaskStatus.RUNNING,
    ...             started_at=start, finished_at=start + timedelta(seconds=2.5), retries=2, attempt=1)
    >>> status_text(task), elapsed(task)
    ('running (attempt 1 of 3)', 2.5)

"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from omniq_nb.estimates import elapsed
from omniq_nb.models import Task, TaskStatus
from omniq_nb.terminal import waiting_text

PREVIEW_CHARS = 500
"""Characters of a result's ``repr`` that a view shows."""

COLORS = {
    TaskStatus.WAITING: "#6f42c1",
    TaskStatus.PENDING: "#6c757d",
    TaskStatus.RUNNING: "#0d6efd",
    TaskStatus.SUCCEEDED: "#198754",
    TaskStatus.FAILED: "#dc3545",
    TaskStatus.CANCELLED: "#6c757d",
    TaskStatus.EXPIRED: "#b58900",
}
"""The color of each status: its badge, its progress bar, its count."""

_UTC = timezone.utc


def badge(task: Task) -> str:
    """Return the task's status (``status_text``) as an HTML badge in the status's color.

    Args:
        task: the snapshot.
    """
    return (
        f'<span style="background:{COLORS[task.status]};color:white;border-radius:8px;padding:1px 8px">'
        f"{html.escape(status_text(task))}</span>"
    )


def status_text(task: Task) -> str:
    """Return the task's status as words, with the attempt when it is retrying or may retry.

    A pending ``kind="gevent"`` task says that it waits for ``omniq-nb worker --kind gevent``;
    a waiting one, for which tasks (``waiting_text``).

    Args:
        task: the snapshot.
    """
    if task.status is TaskStatus.WAITING:
        return waiting_text(task)
    if task.status is TaskStatus.PENDING and task.error is not None:
        return f"retrying (attempt {task.attempt + 1} of {task.max_attempts})"
    if task.status is TaskStatus.PENDING and task.kind == "gevent":  # no kernel's pool ever claims it
        return "pending: waits for a gevent worker (omniq-nb worker --kind gevent)"
    if task.status is TaskStatus.RUNNING and task.max_attempts > 1:
        return f"running (attempt {task.attempt} of {task.max_attempts})"
    return str(task.status)


def group_elapsed(tasks: Sequence[Task]) -> float:
    """Return seconds from the first task's enqueue to the last one's finish (or to now, while one runs).

    Args:
        tasks: the group's snapshots.
    """
    if not tasks:
        return 0.0
    ends = [task.finished_at for task in tasks if task.finished_at is not None]
    end = max(ends) if len(ends) == len(tasks) else datetime.now(_UTC)
    return max(0.0, (end - min(task.created_at for task in tasks)).total_seconds())


def preview(value: Any) -> str:
    """Return ``repr(value)``, cut to ``PREVIEW_CHARS`` characters.

    Args:
        value: a task's result.

    Example:
        >>> len(preview("x" * 1000)), preview([1, 2])
        (500, '[1, 2]')

    """
    text = repr(value)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."


def problem(exc: Exception) -> str:
    """Return an error as red preformatted HTML, shown where a table could not be read.

    Args:
        exc: what went wrong.

    Example:
        >>> problem(OSError("store <gone>"))
        "<pre style='color:#dc3545'>store &lt;gone&gt;</pre>"

    """
    return f"<pre style='color:#dc3545'>{html.escape(str(exc))}</pre>"


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Return an HTML table that scrolls sideways when it is too wide.

    Args:
        head: the column titles, plain text.
        rows: the cells, HTML already.
    """
    header = "".join(f"<th style='text-align:left;padding:0 8px'>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td style='padding:0 8px'>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<div style='overflow-x:auto'><table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table></div>"


def task_table(tasks: Sequence[Task], total: int) -> str:
    """Return tasks as an HTML table, with a line saying how many of ``total`` are not shown.

    Args:
        tasks: the rows to show.
        total: how many tasks there are (``len(tasks)`` or more).
    """
    head = ("id", "name", "status", "progress", "queue", "attempt", "started", "duration", "worker")
    rows = []
    for task in tasks:
        seconds = elapsed(task)
        started = task.started_at.astimezone().strftime("%H:%M:%S") if task.started_at else ""
        cells = (
            f"<code>{task.id}</code>",
            html.escape(task.name),
            badge(task),
            f"{task.progress:.0%}",
            html.escape(task.queue),
            f"{task.attempt}/{task.max_attempts}",
            started,
            "" if seconds is None else f"{seconds:.1f} s",
            html.escape(task.worker or ""),
        )
        rows.append(cells)
    more = f"<div><small>{total - len(tasks)} more not shown</small></div>" if total > len(tasks) else ""
    return f"{table(head, rows)}{more}"
