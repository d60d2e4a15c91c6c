"""The PostgreSQL store's ``WorkerRegistry`` role: the ``workers`` table of live pools, on the server's clock."""

from __future__ import annotations

import builtins

from omniq_nb.models import WorkerInfo
from omniq_nb.storage.postgres_base import PostgresConnection
from omniq_nb.storage.postgres_schema import NOW_SQL
from omniq_nb.storage.rows import WORKER_COLUMNS, row_worker, worker_row

__all__ = ["PostgresRegistry"]

_HEARTBEAT = f"""
    WITH gone AS (DELETE FROM workers WHERE heartbeat + ttl <= {NOW_SQL} AND id <> %s::text)
    INSERT INTO workers ({WORKER_COLUMNS})
    VALUES ({", ".join(["%s"] * 9)}, coalesce(%s::float8, {NOW_SQL}), {NOW_SQL}, %s, %s, false)
    ON CONFLICT (id) DO UPDATE SET heartbeat = excluded.heartbeat, ttl = excluded.ttl, running = excluded.running,
        started_at = CASE WHEN workers.heartbeat + workers.ttl <= {NOW_SQL} THEN excluded.started_at
            ELSE workers.started_at END,
        stop_requested = workers.stop_requested AND workers.heartbeat + workers.ttl > {NOW_SQL}
    RETURNING stop_requested"""
# Dead rows of other pools go in the same statement; the pool's own row, if it was dead, starts afresh.


class PostgresRegistry(PostgresConnection):
    """Heartbeats, the list of live pools, stop requests; a row is live while ``heartbeat + ttl`` is ahead."""

    async def heartbeat(self, worker: WorkerInfo) -> bool:
        """Insert or refresh the pool's registry row and drop dead rows (one statement); return whether to stop."""
        started = worker.started_at.timestamp() if worker.started_at is not None else None
        row = worker_row(worker, started=0.0, now=0.0)  # both replaced by the server's clock where unknown
        rows = await self._fetch(_HEARTBEAT, (worker.id, *row[:9], started, *row[11:]))
        return bool(rows[0][0])

    async def workers(self) -> builtins.list[WorkerInfo]:
        """Return the live pools of the registry, oldest first."""
        rows = await self._fetch(
            f"SELECT {WORKER_COLUMNS} FROM workers WHERE heartbeat + ttl > {NOW_SQL} ORDER BY started_at, id"
        )
        return [row_worker(row) for row in rows]

    async def request_stop(self, worker_id: str) -> bool:
        """Flag a live pool's row; the pool drains and stops at its next heartbeat."""
        rows = await self._fetch(
            f"UPDATE workers SET stop_requested = true WHERE id = %s AND heartbeat + ttl > {NOW_SQL} RETURNING id",
            (worker_id,),
        )
        return bool(rows)

    async def unregister(self, worker_id: str) -> None:
        """Remove the pool's registry row."""
        await self._fetch("DELETE FROM workers WHERE id = %s", (worker_id,))
