"""SQL text of the SQLite store that several of its roles share: insert builders, filters, affinity.

Statements use SQLite's ``?`` placeholders and its limit of 32,766 values per statement,
which sets the chunk sizes. The status lists and qualified columns every SQL backend shares
live in ``sql_text``.

Example:
    >>> filters([TaskStatus.FAILED], "mail")
    ('WHERE status IN (?) AND queue = ?', ['failed', 'mail'])

"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from omniq_nb.models import Task, TaskStatus
from omniq_nb.storage.rows import NEW_COLUMNS, chunks, dependency_rows, new_task_row
from omniq_nb.storage.sql_text import listing_filter

__all__ = [
    "AFFINITY_SQL",
    "BATCH_ROWS",
    "CHUNK_ROWS",
    "IDS_PER_STATEMENT",
    "INSERT_ROWS",
    "KEEP_NEWEST_SEQ",
    "batch_statement",
    "duplicate_ids_refused",
    "filters",
    "insert_statement",
    "insert_statements",
    "link_statements",
]

CHUNK_ROWS = 400
"""Rows per multi-row statement of a transition: 400 x 12 values stays under SQLite's 32,766."""
INSERT_ROWS = 500
"""Rows per INSERT of new tasks: 500 x 23 values stays under SQLite's 32,766."""
BATCH_ROWS = 5000
"""Rows per INSERT of ``insert_many`` (two values each), and of dependency index rows (two each)."""
IDS_PER_STATEMENT = 900
"""Task ids per ``IN (...)`` list."""
# Kernel affinity: a task without an owner, of this kernel, or of a kernel with no live pool.
# The subquery is uncorrelated: SQLite runs it once per claim over the (tiny) workers table.
AFFINITY_SQL = """
    AND (owner IS NULL OR owner = ? OR owner NOT IN (
        SELECT kernel FROM workers WHERE kernel IS NOT NULL AND heartbeat + ttl > ?))"""
"""The claim's kernel-affinity condition; binds the claiming kernel, then the clock."""
# After a purge, put back a marker row (empty task id, never returned) holding the newest
# seq, so SQLite's max(rowid) + 1 never hands out a seq a cursor has already passed.
KEEP_NEWEST_SEQ = """
    INSERT INTO events (seq, task_id, kind, at, status, attempt)
    SELECT ?1, '', 'enqueued', 0, 'pending', 0
    WHERE ?1 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM events WHERE seq >= ?1)"""
"""Keep the newest event ``seq`` (bound as ``?1``) in a marker row after a purge."""

_ROW_MARKS = "(" + ", ".join("?" * (NEW_COLUMNS.count(",") + 1)) + ")"
_NEW_NAMES = [name.strip() for name in NEW_COLUMNS.split(",")]
_PAYLOAD_AT, _SERIES_AT = _NEW_NAMES.index("payload"), _NEW_NAMES.index("series")


def insert_statement(tasks: Sequence[Task]) -> tuple[str, list[Any]]:
    """Return one multi-row INSERT for ``tasks`` (far cheaper than executemany with triggers)."""
    marks = ", ".join(itertools.repeat(_ROW_MARKS, len(tasks)))
    params = list(itertools.chain.from_iterable(map(new_task_row, tasks)))
    return f"INSERT INTO tasks ({NEW_COLUMNS}) VALUES {marks}", params


def insert_statements(tasks: Sequence[Task]) -> list[tuple[str, list[Any]]]:
    """Return the INSERTs of ``tasks`` (``INSERT_ROWS`` a statement), then those of their dependency index rows."""
    inserts = [insert_statement(batch) for batch in chunks(tasks, INSERT_ROWS)]
    return inserts + link_statements(dependency_rows(tasks))


def link_statements(links: Sequence[tuple[str, str]]) -> list[tuple[str, list[Any]]]:
    """Return the INSERTs of dependency index rows ``(task id, id it depends on)``; a repeated pair is kept once."""
    sql = "INSERT OR IGNORE INTO task_deps (task_id, depends_on) VALUES "
    return [
        (sql + ", ".join(itertools.repeat("(?, ?)", len(batch))), list(itertools.chain.from_iterable(batch)))
        for batch in chunks(links, BATCH_ROWS)
    ]


def batch_statement(shared: tuple[Any, ...], entries: Sequence[tuple[str, bytes]]) -> tuple[str, list[Any]]:
    """Return one INSERT of ``entries`` (id, payload) that share every other value of ``shared``."""
    periodic = shared[_SERIES_AT] is not None
    values = ", ".join(itertools.repeat("(?, ?)", len(entries)))
    columns = [
        "v.id" if at == 0 else "v.payload" if at == _PAYLOAD_AT else "v.id" if at == _SERIES_AT and periodic else "?"
        for at in range(len(shared))
    ]
    constants = [value for at, value in enumerate(shared) if columns[at] == "?"]
    sql = (
        f"WITH v(id, payload) AS (VALUES {values}) INSERT INTO tasks ({NEW_COLUMNS}) SELECT {', '.join(columns)} FROM v"
    )
    return sql, [*itertools.chain.from_iterable(entries), *constants]


def status_match(values: Sequence[str]) -> tuple[str, list[Any]]:
    """Return the condition that ``status`` is one of ``values``, and its parameters."""
    return f"status IN ({', '.join('?' * len(values))})", list(values)


def filters(statuses: Sequence[TaskStatus], queue: str | None) -> tuple[str, list[Any]]:
    """Return the ``WHERE`` clause (or '') and its parameters for a listing by status and queue."""
    return listing_filter(statuses, queue, queue_mark="?", status_match=status_match)


@contextlib.contextmanager
def duplicate_ids_refused() -> Iterator[None]:
    """Turn SQLite's unique-constraint error on insert into the ``ValueError`` every store raises.

    Raises:
        ValueError: a task with one of the ids already exists; nothing was inserted.

    """
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise ValueError(f"a task with one of these ids already exists; nothing was inserted ({exc})") from exc
