"""The SQLite store's ``ResultStore`` role: reads of tasks and their outcomes."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime

from omniq_nb.models import Task, TaskStatus
from omniq_nb.storage.rows import COLUMNS, chunks, row_task
from omniq_nb.storage.sqlite_base import SQLiteConnection
from omniq_nb.storage.sqlite_statements import IDS_PER_STATEMENT, filters

__all__ = ["SQLiteResults"]


class SQLiteResults(SQLiteConnection):
    """Reads of tasks: by id, by ids, listings and counts per status."""

    async def get(self, task_id: str) -> Task | None:
        """Return the task with this id, or ``None``."""
        rows = await self._fetch(f"SELECT {COLUMNS} FROM tasks WHERE id = ?", (task_id,))
        return row_task(rows[0]) if rows else None

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Return the tasks with these ids that exist."""
        found: builtins.list[Task] = []
        for chunk in chunks(task_ids, IDS_PER_STATEMENT):
            marks = ", ".join("?" * len(chunk))
            rows = await self._fetch(f"SELECT {COLUMNS} FROM tasks WHERE id IN ({marks})", chunk)
            found.extend(row_task(row) for row in rows)
        return found

    async def list(
        self, *, statuses: Sequence[TaskStatus] = (), queue: str | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Return up to ``limit`` tasks, newest first."""
        where, params = filters(statuses, queue)
        rows = await self._fetch(
            f"SELECT {COLUMNS} FROM tasks {where} ORDER BY seq DESC LIMIT ?",
            (*params, limit),
        )
        return [row_task(row) for row in rows]

    async def cached(self, keys: Sequence[str], *, finished_after: datetime | None = None) -> dict[str, Task]:
        """Return the newest succeeded task of each key that has one (finished at or after ``finished_after``)."""
        since = None if finished_after is None else finished_after.timestamp()
        found: dict[str, Task] = {}
        for chunk in chunks(builtins.list(dict.fromkeys(keys)), IDS_PER_STATEMENT - 1):
            marks = ", ".join("?" * len(chunk))
            rows = await self._fetch(
                f"SELECT {COLUMNS} FROM tasks WHERE cache_key IN ({marks}) AND status = 'succeeded' "
                f"AND (?{len(chunk) + 1} IS NULL OR finished_at >= ?{len(chunk) + 1}) ORDER BY finished_at",
                (*chunk, since),
            )
            for row in rows:  # oldest first: the newest of each key is written last
                task = row_task(row)
                found[task.cache_key or ""] = task
        return found

    async def count(self, *, task_ids: Sequence[str] | None = None) -> dict[TaskStatus, int]:
        """Return the number of tasks per status (of ``task_ids``, or all)."""
        counts = dict.fromkeys(TaskStatus, 0)
        if task_ids is None:
            for status, n in await self._fetch("SELECT status, count(*) FROM tasks GROUP BY status"):
                counts[TaskStatus(status)] = n
            return counts
        for chunk in chunks(task_ids, IDS_PER_STATEMENT):
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT status, count(*) FROM tasks WHERE id IN ({marks}) GROUP BY status"
            for status, n in await self._fetch(sql, chunk):
                counts[TaskStatus(status)] += n
        return counts
