"""SQL text of the ``OutcomeStore`` role that the SQLite and PostgreSQL stores share.

Results kept apart from their queue live in ``kept_results`` (one row per task id and lease
token); events appended from another store's transitions go to the usual ``events`` table.
Every builder takes the dialect's placeholder (``?`` or ``%s``) and returns the statement
with its parameters; rows are written in chunks of ``OUTCOME_ROWS``.

Example:
    >>> sql, params = kept_lookup("?", [("t1", "k1"), ("t2", "k2")])
    >>> sql.split(" WHERE ")[1], params
    ('(task_id, token) IN (VALUES (?, ?), (?, ?))', ['t1', 'k1', 't2', 'k2'])

"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from omniq_nb.models import TaskEvent, TaskResult
from omniq_nb.storage import lifecycle

__all__ = ["OUTCOME_ROWS", "events_insert", "forget_statements", "kept_lookup", "keep_statement"]

OUTCOME_ROWS = 400
"""Rows per statement: 400 x 9 values stays under SQLite's limit of 32,766."""
# The tasks whose newest event carries a purge time that has passed (a requeued task's
# newer events carry none, so its history stays while it lives).
_PURGEABLE_TASKS = """
    SELECT e.task_id FROM events e WHERE e.purge_at <= {mark}
        AND e.seq = (SELECT max(seq) FROM events WHERE task_id = e.task_id)"""


def _values(mark: str, width: int, rows: int) -> str:
    row = "(" + ", ".join([mark] * width) + ")"
    return ", ".join(itertools.repeat(row, rows))


def keep_statement(mark: str, results: Sequence[TaskResult], *, now: float) -> tuple[str, list[Any]]:
    """Return the upsert of these results' bytes under ``(task_id, lease_token)``, kept from ``now``."""
    params: list[Any] = []
    for r in results:
        params += (r.task_id, r.lease_token, r.result, now, lifecycle.kept_until(now, r.result_ttl))
    sql = (
        f"INSERT INTO kept_results (task_id, token, result, kept_at, purge_at) VALUES {_values(mark, 5, len(results))} "
        "ON CONFLICT (task_id, token) DO UPDATE SET result = excluded.result, kept_at = excluded.kept_at, "
        "purge_at = excluded.purge_at"
    )
    return sql, params


def kept_lookup(mark: str, keys: Sequence[tuple[str, str]]) -> tuple[str, list[Any]]:
    """Return the read of the kept results with these ``(task_id, token)`` keys."""
    wanted = _values(mark, 2, len(keys))
    sql = f"SELECT task_id, token, result FROM kept_results WHERE (task_id, token) IN (VALUES {wanted})"
    return sql, list(itertools.chain.from_iterable(keys))


def events_insert(mark: str, events: Sequence[TaskEvent], purge_at: Mapping[str, datetime]) -> tuple[str, list[Any]]:
    """Return the insert of ``events`` in their order (the table gives each its ``seq``).

    A task named in ``purge_at`` gets that purge time on its events of this batch.
    """
    params: list[Any] = []
    for e in events:
        at, kind, status = e.at.timestamp(), e.kind.value, e.status.value
        until = purge_at.get(e.task_id)
        params += (e.task_id, kind, at, status, e.attempt, e.progress, e.message, e.run_id)
        params.append(None if until is None else until.timestamp())
    sql = (
        "INSERT INTO events (task_id, kind, at, status, attempt, progress, message, run_id, purge_at) "
        f"VALUES {_values(mark, 9, len(events))}"
    )
    return sql, params


def forget_statements(
    mark: str, *, now: float, everything: bool
) -> tuple[tuple[str, list[Any]], tuple[str, list[Any]]]:
    """Return the delete of kept results past their time (or of all) and that of events past theirs (or all).

    A task's events go when its newest event carries a purge time that has passed (its
    ``result_ttl`` after it finished, as the queue purges its row).
    """
    if everything:
        return ("DELETE FROM kept_results", []), ("DELETE FROM events", [])
    results = (f"DELETE FROM kept_results WHERE purge_at <= {mark}", [now])
    return results, (f"DELETE FROM events WHERE task_id IN ({_PURGEABLE_TASKS.format(mark=mark)})", [now])
