"""The PostgreSQL store's ``WorkerRegistry`` role: the ``workers`` table of live pools, on the server's clock."""

from __future__ import annotations

import builtins

from omniq_nb.models import WorkerInfo
from omniq_nb.storage.postgres_base import PostgresConnection
from omniq_nb.storage.postgres_schema import NOW_SQL
from omniq_nb.storage.rows import WORKER_COLUMNS, row_worker, worker_row

__all__ = ["PostgresRegistry"]

_MARKS = ", ".join(["%s"] * (WORKER_COLUMNS.count(",")))  # every column but stop_requested


class PostgresRegistry(PostgresConnection):
    """Heartbeats, the list of live pools, stop requests; a row is live while ``heartbeat + ttl`` is ahead."""

    async def heartbeat(self, worker: WorkerInfo) -> bool:
        """Insert or refresh the pool's registry row (and drop dead rows); return whether it must stop."""
        async with self._transaction() as conn:
            [(now,)] = await self._run(conn, f"SELECT {NOW_SQL}")
            started = worker.started_at.timestamp() if worker.started_at is not None else now
            await self._run(conn, "DELETE FROM workers WHERE heartbeat + ttl <= %s", (now,))
            rows = await self._run(
                conn,
                f"""INSERT INTO workers ({WORKER_COLUMNS}) VALUES ({_MARKS}, false)
                ON CONFLICT (id) DO UPDATE SET heartbeat = excluded.heartbeat, ttl = excluded.ttl,
                    running = excluded.running
                RETURNING stop_requested""",
                worker_row(worker, started=started, now=now),
            )
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
