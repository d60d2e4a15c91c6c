"""The PostgreSQL store's ``ResultStore`` role: reads of tasks and their outcomes."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime

from omniq_nb.models import Task, TaskStatus
from omniq_nb.storage import lifecycle
from omniq_nb.storage.postgres_base import PostgresConnection
from omniq_nb.storage.postgres_statements import filters
from omniq_nb.storage.rows import COLUMNS, row_task

__all__ = ["PostgresResults"]

# The newest success of a key, through the partial index tasks_cache (read backwards).
_CACHED = f"""SELECT newest.* FROM unnest(%s::text[]) AS asked(key) CROSS JOIN LATERAL (
    SELECT {COLUMNS} FROM tasks WHERE cache_key = asked.key AND status = 'succeeded'
    ORDER BY finished_at DESC LIMIT 1) AS newest"""
"""The newest success of each asked key, one index probe per key."""


class PostgresResults(PostgresConnection):
    """Reads of tasks: by id, by ids, a cache key, listings and counts per status."""

    async def get(self, task_id: str) -> Task | None:
        """Return the task with this id, or ``None``."""
        rows = await self._fetch(f"SELECT {COLUMNS} FROM tasks WHERE id = %s::text", (task_id,))
        return row_task(rows[0]) if rows else None

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Return the tasks with these ids that exist."""
        if not task_ids:
            return []
        rows = await self._fetch(f"SELECT {COLUMNS} FROM tasks WHERE id = ANY(%s::text[])", (list(task_ids),))
        return [row_task(row) for row in rows]

    async def cached(self, keys: Sequence[str], *, finished_after: datetime | None = None) -> dict[str, Task]:
        """Return the newest succeeded task of each key that has one, if it finished at or after ``finished_after``.

        The newest of each key is read by the index; ``finished_after`` is then judged on it as
        the memory store does (older successes cannot pass when the newest does not).
        """
        if not keys:
            return {}
        rows = await self._fetch(_CACHED, (builtins.list(dict.fromkeys(keys)),))
        found = (row_task(row) for row in rows)
        return {t.cache_key: t for t in found if t.cache_key and lifecycle.cached_hit(t, t.cache_key, finished_after)}

    async def list(
        self, *, statuses: Sequence[TaskStatus] = (), queue: str | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Return up to ``limit`` tasks, newest first."""
        where, params = filters(statuses, queue)
        rows = await self._fetch(f"SELECT {COLUMNS} FROM tasks {where} ORDER BY seq DESC LIMIT %s", (*params, limit))
        return [row_task(row) for row in rows]

    async def count(self, *, task_ids: Sequence[str] | None = None) -> dict[TaskStatus, int]:
        """Return the number of tasks per status (of ``task_ids``, or all)."""
        counts = dict.fromkeys(TaskStatus, 0)
        if task_ids is None:
            rows = await self._fetch("SELECT status, count(*) FROM tasks GROUP BY status")
        else:
            rows = await self._fetch(
                "SELECT status, count(*) FROM tasks WHERE id = ANY(%s::text[]) GROUP BY status", (list(task_ids),)
            )
        for status, n in rows:
            counts[TaskStatus(status)] = n
        return counts
