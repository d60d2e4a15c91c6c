"""SQL text that every SQL backend shares: status lists from ``lifecycle``'s sets, qualified columns.

Nothing here depends on a dialect's placeholders or limits (those stay in each backend's
own statements module), so SQLite and PostgreSQL agree on which statuses each rule covers.

Example:
    >>> status_list(lifecycle.UNFINISHED)
    "('waiting', 'pending', 'running')"

"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from omniq_nb.models import TaskStatus
from omniq_nb.storage import lifecycle
from omniq_nb.storage.rows import COLUMNS, EVENT_COLUMNS

__all__ = [
    "FINISHED_SQL",
    "REQUEUEABLE_SQL",
    "TASKS_COLUMNS",
    "TASK_INDEXES",
    "UNFINISHED_SQL",
    "StatusMatch",
    "events_statement",
    "listing_filter",
    "move_assignments",
    "purge_filter",
    "status_list",
]

TASKS_COLUMNS = ", ".join(f"tasks.{name.strip()}" for name in COLUMNS.split(","))
"""``COLUMNS`` qualified by the table, for statements that join ``tasks`` with values."""


def status_list(statuses: Collection[TaskStatus]) -> str:
    """Return ``statuses`` as a SQL list literal, in the lifecycle's order."""
    return "(" + ", ".join(f"'{status.value}'" for status in TaskStatus if status in statuses) + ")"


FINISHED_SQL = status_list(lifecycle.FINISHED)
"""``lifecycle.FINISHED`` as a SQL list."""
UNFINISHED_SQL = status_list(lifecycle.UNFINISHED)
"""``lifecycle.UNFINISHED`` as a SQL list."""
REQUEUEABLE_SQL = status_list(lifecycle.REQUEUEABLE)
"""``lifecycle.REQUEUEABLE`` as a SQL list."""

TASK_INDEXES = """CREATE INDEX tasks_claim ON tasks (queue, priority DESC, eta, seq) WHERE status = 'pending';
    CREATE INDEX tasks_lease ON tasks (lease_until) WHERE status = 'running';
    CREATE INDEX tasks_expiry ON tasks (expires_at) WHERE status = 'pending' AND expires_at IS NOT NULL;
    CREATE INDEX tasks_purge ON tasks (purge_at) WHERE purge_at IS NOT NULL;
    CREATE INDEX tasks_status ON tasks (status, seq);
    CREATE INDEX tasks_series ON tasks (series) WHERE series IS NOT NULL;"""
"""The indexes of the tasks table: the claim path, lease rescue, expiry, purge, listing by status, series."""


def move_assignments(now: str) -> str:
    """Return the ``SET`` list of a dependency move read from ``v(target, error)``, finishing at ``now``.

    The task takes the move's status and error; a finished target sets ``finished_at`` and
    ``purge_at`` as a settled outcome does, any other clears them (the eta is kept).
    """
    finished = f"v.target IN {FINISHED_SQL}"
    return (
        f"status = v.target, error = v.error, finished_at = CASE WHEN {finished} THEN {now} END, "
        f"purge_at = CASE WHEN {finished} THEN {now} + tasks.result_ttl END"
    )


def events_statement(
    mark: str, *, task_id: str | None, since: int, limit: int, of_tasks_only: str = ""
) -> tuple[str, tuple[Any, ...]]:
    """Return the query for events after ``since`` (of one task, or of all), oldest first, and its parameters.

    Args:
        mark: the dialect's placeholder (``?`` or ``%s``).
        task_id: one task's events, or ``None`` for every task's.
        since: the ``seq`` to read after.
        limit: the most rows to read.
        of_tasks_only: a condition added when reading every task's events (SQLite keeps a
            marker row that is no task's event).
    """
    params: tuple[Any, ...] = (since, limit)
    where = f"seq > {mark}{of_tasks_only}"
    if task_id is not None:
        params, where = (task_id, *params), f"task_id = {mark} AND seq > {mark}"
    return f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} ORDER BY seq LIMIT {mark}", params


StatusMatch = Callable[[Sequence[str]], tuple[str, list[Any]]]
"""A dialect's condition that ``status`` is one of some values, and its parameters."""

_FINISHED = [status.value for status in TaskStatus if status in lifecycle.FINISHED]


def listing_filter(
    statuses: Sequence[TaskStatus], queue: str | None, *, queue_mark: str, status_match: StatusMatch
) -> tuple[str, list[Any]]:
    """Return the ``WHERE`` clause (or '') and its parameters for a listing by status and queue."""
    clauses: list[str] = []
    params: list[Any] = []
    if statuses:
        clause, values = status_match([TaskStatus(s).value for s in statuses])
        clauses.append(clause)
        params += values
    if queue is not None:
        clauses.append(f"queue = {queue_mark}")
        params.append(queue)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


def purge_filter(
    *,
    clock: tuple[str, Sequence[Any]],
    finished_before: datetime | None,
    statuses: Sequence[TaskStatus],
    mark: str,
    status_match: StatusMatch,
) -> tuple[str, list[Any]]:
    """Return the ``WHERE`` clause and parameters picking the finished tasks a purge deletes.

    Args:
        clock: the SQL for "now" and its parameters (the server's clock, or one passed in).
        finished_before: also tasks finished before this, in ``statuses`` (default: every
            finished status).
        statuses: see ``finished_before``.
        mark: the dialect's placeholder.
        status_match: the dialect's "status is one of" condition.
    """
    now, params = clock[0], [*clock[1]]
    where = f"WHERE status IN {FINISHED_SQL} AND (purge_at <= {now}"
    if finished_before is not None:
        clause, picked = status_match([s.value for s in statuses] or _FINISHED)
        where += f" OR (finished_at < {mark} AND {clause})"
        params += [finished_before.timestamp(), *picked]
    return where + ")", params
