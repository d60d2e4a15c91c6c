"""The SQLite store's ``WorkerRegistry`` role: the ``workers`` table of live pools."""

from __future__ import annotations

import builtins
import time

from omniq_nb.models import WorkerInfo
from omniq_nb.storage.rows import WORKER_COLUMNS, row_worker, worker_row
from omniq_nb.storage.sqlite_base import SQLiteConnection

__all__ = ["SQLiteRegistry"]


class SQLiteRegistry(SQLiteConnection):
    """Heartbeats, the list of live pools, stop requests; a row is live while ``heartbeat + ttl`` is ahead."""

    async def heartbeat(self, worker: WorkerInfo) -> bool:
        """Insert or refresh the pool's registry row (and drop dead rows); return whether it must stop."""
        now = time.time()
        started = worker.started_at.timestamp() if worker.started_at is not None else now
        async with self._immediate():
            await self._run("DELETE FROM workers WHERE heartbeat + ttl <= ?", (now,))
            rows = await self._run(
                f"""INSERT INTO workers ({WORKER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)
                ON CONFLICT (id) DO UPDATE SET heartbeat = excluded.heartbeat, ttl = excluded.ttl,
                    running = excluded.running
                RETURNING stop_requested""",
                worker_row(worker, started=started, now=now),
            )
        return bool(rows[0][0])

    async def workers(self) -> builtins.list[WorkerInfo]:
        """Return the live pools of the registry, oldest first."""
        rows = await self._fetch(
            f"SELECT {WORKER_COLUMNS} FROM workers WHERE heartbeat + ttl > ? ORDER BY started_at, id", (time.time(),)
        )
        return [row_worker(row) for row in rows]

    async def request_stop(self, worker_id: str) -> bool:
        """Flag a live pool's row; the pool drains and stops at its next heartbeat."""
        rows = await self._fetch(
            "UPDATE workers SET stop_requested = 1 WHERE id = ? AND heartbeat + ttl > ? RETURNING id",
            (worker_id, time.time()),
        )
        return bool(rows)

    async def unregister(self, worker_id: str) -> None:
        """Remove the pool's registry row."""
        await self._fetch("DELETE FROM workers WHERE id = ?", (worker_id,))
