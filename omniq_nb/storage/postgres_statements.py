"""SQL text of the PostgreSQL store that several of its roles share: array inserts, filters, affinity.

Many rows go in one statement as one array per column (``unnest``), so a batch of any size
is a single statement with a fixed number of parameters and no per-row parsing. Every
parameter is cast to its column's type: an all-``NULL`` column would otherwise have none.

Example:
    >>> filters([TaskStatus.FAILED], "mail")
    ('WHERE status = ANY(%s::text[]) AND queue = %s::text', [['failed'], 'mail'])

"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omniq_nb.models import Task, TaskStatus
from omniq_nb.storage.postgres_schema import NOW_SQL
from omniq_nb.storage.rows import NEW_COLUMNS, new_task_row
from omniq_nb.storage.sql_text import listing_filter

__all__ = ["AFFINITY_SQL", "batch_statement", "filters", "insert_statement", "link_statement", "notifying"]

_TYPES = {
    "priority": "integer",
    "attempt": "integer",
    "retries": "integer",
    "payload": "bytea",
    "timeout": "float8",
    "eta": "float8",
    "created_at": "float8",
    "expires_at": "float8",
    "result_ttl": "float8",
    "interval": "float8",
    "at_most_once": "boolean",
}
_NAMES = [name.strip() for name in NEW_COLUMNS.split(",")]
_CASTS = [_TYPES.get(name, "text") for name in _NAMES]
_PAYLOAD_AT, _SERIES_AT = _NAMES.index("payload"), _NAMES.index("series")

# Kernel affinity: a task without an owner, of this kernel, or of a kernel with no live pool.
AFFINITY_SQL = f"""
    AND (owner IS NULL OR owner = %(owner)s::text OR owner NOT IN (
        SELECT kernel FROM workers WHERE kernel IS NOT NULL AND heartbeat + ttl > {NOW_SQL}))"""
"""The claim's kernel-affinity condition; binds ``owner`` (the claiming kernel)."""


def insert_statement(tasks: Sequence[Task]) -> tuple[str, list[Any]]:
    """Return one INSERT of ``tasks``: one array parameter per column."""
    columns = [list(values) for values in zip(*map(new_task_row, tasks), strict=True)]
    arrays = ", ".join(f"%s::{cast}[]" for cast in _CASTS)
    return f"INSERT INTO tasks ({NEW_COLUMNS}) SELECT * FROM unnest({arrays})", columns


def link_statement(links: Sequence[tuple[str, str]]) -> tuple[str, list[Any]]:
    """Return one INSERT of dependency index rows ``(task id, id it depends on)``; a repeated pair is kept once."""
    sql = "INSERT INTO task_deps (task_id, depends_on) SELECT * FROM unnest(%s::text[], %s::text[])"
    sql += " ON CONFLICT DO NOTHING"
    return sql, [[link[0] for link in links], [link[1] for link in links]]


def batch_statement(shared: tuple[Any, ...], entries: Sequence[tuple[str, bytes]]) -> tuple[str, list[Any]]:
    """Return one INSERT of ``entries`` (id, payload) that share every other value of ``shared``."""
    periodic = shared[_SERIES_AT] is not None
    exprs: list[str] = []
    constants: list[Any] = []
    for at, value in enumerate(shared):
        if at == 0 or (at == _SERIES_AT and periodic):
            exprs.append("v.id")
        elif at == _PAYLOAD_AT:
            exprs.append("v.payload")
        else:
            exprs.append(f"%s::{_CASTS[at]}")
            constants.append(value)
    sql = (
        f"INSERT INTO tasks ({NEW_COLUMNS}) SELECT {', '.join(exprs)} "
        "FROM unnest(%s::text[], %s::bytea[]) AS v(id, payload)"
    )
    return sql, [*constants, [entry[0] for entry in entries], [entry[1] for entry in entries]]


def status_match(values: Sequence[str]) -> tuple[str, list[Any]]:
    """Return the condition that ``status`` is one of ``values``, and its parameter (one array)."""
    return "status = ANY(%s::text[])", [list(values)]


def filters(statuses: Sequence[TaskStatus], queue: str | None) -> tuple[str, list[Any]]:
    """Return the ``WHERE`` clause (or '') and its parameters for a listing by status and queue."""
    return listing_filter(statuses, queue, queue_mark="%s::text", status_match=status_match)


def notifying(statement: str, *, returning: str | None = None) -> str:
    """Return ``statement`` (an INSERT or UPDATE) wrapped to also send the wake-up ``NOTIFY``: one statement.

    The hint is sent only when the statement changed a row, and delivered when its
    transaction commits. With ``returning``, the changed rows come out (``RETURNING
    returning``); without, nothing does. The channel is bound last.

    Example:
        >>> notifying("INSERT INTO tasks SELECT * FROM unnest(%s)").startswith("WITH changed AS (INSERT")
        True

    """
    changed = f"WITH changed AS ({statement} RETURNING {returning or 1})"
    hint = "SELECT pg_notify(%s, '') FROM (SELECT 1 FROM changed LIMIT 1) AS one"
    if returning is None:  # the CTE's change happens in full whatever the outer query reads
        return f"{changed} {hint}"
    sent = "(SELECT count(*) FROM hint) AS sent"  # one row, always read (a LEFT JOIN would be planned away)
    return f"{changed}, hint AS ({hint}) SELECT changed.* FROM changed, {sent}"
