"""SQL text that every SQL backend shares: status lists from ``lifecycle``'s sets, qualified columns.

Nothing here depends on a dialect's placeholders or limits (those stay in each backend's
own statements module), so SQLite and PostgreSQL agree on which statuses each rule covers.

Example:
    >>> status_list(lifecycle.UNFINISHED)
    "('pending', 'running')"

"""

from __future__ import annotations

from collections.abc import Collection

from omniq_nb.models import TaskStatus
from omniq_nb.storage import lifecycle
from omniq_nb.storage.rows import COLUMNS

__all__ = ["FINISHED_SQL", "REQUEUEABLE_SQL", "TASKS_COLUMNS", "UNFINISHED_SQL", "status_list"]

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
