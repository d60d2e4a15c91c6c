"""The Redis store's ``WorkerRegistry`` and ``MaintenanceStore`` roles: live pools, election, purge, health.

A pool's entry is the hash ``PREFIX:w:ID`` plus its deadline (heartbeat + ttl, on the
server's clock) in the sorted set ``PREFIX:workers``; entries past their deadline are left
out and removed at the next heartbeat. The maintenance turn is the key ``PREFIX:lead``:
``SET NX PX`` takes it, and its holder extends it with a compare-and-extend script.
Finished tasks are indexed by purge time (``PREFIX:ttl``) and finish time (``PREFIX:done``),
so a purge reads only what goes. The health check also reads the server's persistence
settings (``CONFIG GET``, a read) and warns when a restart would lose acknowledged tasks.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from omniq_nb.errors import StorageError
from omniq_nb.models import StoreHealth, TaskStatus, WorkerInfo
from omniq_nb.storage.health import STALE_IDS_SHOWN, health_report
from omniq_nb.storage.redis_base import RedisConnection
from omniq_nb.storage.redis_codec import decode_worker, pairs_to_dict, text, worker_fields
from omniq_nb.storage.redis_lua_admin import CHECK

__all__ = ["RedisMaintenance", "RedisRegistry", "persistence_warnings"]

_PURGE_BATCH = 2000


def persistence_warnings(settings: dict[str, str]) -> builtins.list[str]:
    """Return what a restart of a server with these ``CONFIG GET`` values would lose (nothing: ``[]``).

    Example:
        >>> persistence_warnings({"appendonly": "yes", "appendfsync": "everysec", "save": ""})
        []
        >>> persistence_warnings({"appendonly": "no", "save": ""})[0][:45]
        'the Redis server keeps nothing on disk (appen'

    """
    if settings.get("appendonly") == "yes":
        if settings.get("appendfsync") == "no":
            return [
                "the Redis server's append-only file is synced by the OS only (appendfsync no): "
                "a machine crash may lose the last ~30 s of acknowledged tasks; use appendfsync everysec"
            ]
        return []
    save = settings.get("save", "").strip()
    if not save:
        return [
            "the Redis server keeps nothing on disk (appendonly no, no save points): a restart loses "
            "every task, result and event of this store; set appendonly yes (appendfsync everysec)"
        ]
    return [
        f"the Redis server only takes snapshots (save {save}, appendonly no): a restart loses what "
        "was written since the last one; set appendonly yes (appendfsync everysec)"
    ]


class RedisRegistry(RedisConnection):
    """Heartbeats, the list of live pools, stop requests; an entry is live while its deadline is ahead."""

    async def heartbeat(self, worker: WorkerInfo) -> bool:
        """Insert or refresh the pool's entry (and drop dead ones); return whether it must stop."""
        started = "" if worker.started_at is None else text(worker.started_at.timestamp())
        stop = await self._script("HEARTBEAT", worker.id, text(float(worker.ttl)), started, *worker_fields(worker))
        return bool(stop)

    async def workers(self) -> builtins.list[WorkerInfo]:
        """Return the live pools, oldest first."""
        found = [decode_worker(pairs_to_dict(reply)) for reply in await self._script("WORKERS")]
        return sorted(found, key=lambda w: (w.started_at or w.heartbeat, w.id))

    async def request_stop(self, worker_id: str) -> bool:
        """Flag a live pool's entry; the pool drains and stops at its next heartbeat."""
        return bool(await self._script("REQUEST_STOP", worker_id))

    async def unregister(self, worker_id: str) -> None:
        """Remove the pool's entry."""
        await self._script("UNREGISTER", worker_id)


class RedisMaintenance(RedisConnection):
    """The maintenance election, purge and the health check (Redis keeps no log here: ``checkpoint`` does nothing)."""

    async def lead_maintenance(self, runner: str, *, term: float) -> bool:
        """Return whether ``runner`` may run rescue, expiry and purge for the next ``term`` seconds.

        At most one runner per store holds the turn at a time: ``SET PREFIX:lead runner NX PX``
        takes a free turn, and the holder extends it by calling again (a compare-and-extend
        script), so once a holder stops calling, another caller takes the turn after ``term``.
        Correctness never depends on it: every rescue is fenced on its lease.
        """
        self._redis  # noqa: B018  (raises when the store is not open)
        async with self._errors():
            held = await self._scripts["LEAD"](keys=[f"{self.prefix}:lead"], args=[runner, max(1, int(term * 1000))])
        return bool(held)

    async def purge(
        self, *, finished_before: datetime | None = None, statuses: Sequence[TaskStatus] = (), everything: bool = False
    ) -> int:
        """Delete finished tasks past their result TTL (or every task), with their events; return how many.

        Tasks past their TTL go in batches of a few thousand, each batch one script.
        """
        before = "" if finished_before is None else text(finished_before.timestamp())
        wanted = [TaskStatus(s).value for s in statuses] or [s.value for s in TaskStatus if s.is_terminal]
        total = 0
        while True:
            gone, more = await self._script("PURGE", "1" if everything else "0", before, _PURGE_BATCH, *wanted)
            total += int(gone)
            if not more:
                return total
            before = ""  # the age cut was applied in full by the first batch

    async def checkpoint(self) -> None:
        """Do nothing: the server bounds its own append-only file (and the event stream is capped)."""

    async def check(self, *, stale_after: float) -> StoreHealth:
        """Count tasks per status and lapsed leases, and warn when the server's persistence loses tasks.

        An open store is checked through its client; an unopened one through a client of its
        own, closed at the end; nothing is created.

        Raises:
            StorageError: the server cannot be reached, or there is no store under the prefix.

        """
        if self._client is not None:
            return await self._health(self._client, stale_after)
        client = self._connect()
        try:
            async with self._errors():
                if not await client.exists(f"{self.prefix}:meta"):
                    raise StorageError(f"there is no omniq store with prefix {self.prefix!r} at {self.url}")
                return await self._health(client, stale_after)
        finally:
            await client.aclose()

    async def _health(self, client: aioredis.Redis, stale_after: float) -> StoreHealth:
        statuses = builtins.list(TaskStatus)
        async with self._errors():
            reply: builtins.list[Any] = await client.register_script(CHECK)(
                args=[*self._head, text(float(stale_after)), STALE_IDS_SHOWN, *(s.value for s in statuses)]
            )
            settings = await self._persistence(client)
        counts = {status: int(n) for status, n in zip(statuses, reply, strict=False)}
        expired, stale, ids = reply[len(statuses) :]
        return health_report(
            self.url,
            counts=counts,
            expired_leases=int(expired),
            stale_ids=[i.decode() for i in ids],
            stale_after=stale_after,
            stale_leases=int(stale),
            warnings=persistence_warnings(settings) if settings is not None else (),
        )

    @staticmethod
    async def _persistence(client: aioredis.Redis) -> dict[str, str] | None:
        """Return the server's persistence settings, or ``None`` where ``CONFIG`` is refused (managed servers)."""
        try:
            found: dict[Any, Any] = {}
            for name in ("appendonly", "appendfsync", "save"):
                found.update(await client.config_get(name))
        except RedisError:
            return None
        return {_str(key): _str(value) for key, value in found.items()}


def _str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
