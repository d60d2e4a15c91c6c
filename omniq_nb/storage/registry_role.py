"""The ``WorkerRegistry`` role of a store: the live worker pools, their heartbeats and stop requests."""

from __future__ import annotations

import builtins
from typing import Protocol

from omniq_nb.models import WorkerInfo

__all__ = ["WorkerRegistry"]


class WorkerRegistry(Protocol):
    """The registry of live worker pools: heartbeats, listing, stop requests."""

    async def heartbeat(self, worker: WorkerInfo) -> bool:
        """Record a live worker pool (insert or refresh its registry row); return whether it must stop.

        The store sets ``heartbeat`` to its own clock and keeps the row's ``started_at`` and
        ``stop_requested``. Rows whose heartbeat is older than their ``ttl`` are removed.
        """
        ...

    async def workers(self) -> builtins.list[WorkerInfo]:
        """Return the live worker pools of the registry, oldest first (dead rows are left out)."""
        ...

    async def request_stop(self, worker_id: str) -> bool:
        """Ask a live pool to drain and stop (at its next heartbeat); return whether it was found."""
        ...

    async def unregister(self, worker_id: str) -> None:
        """Remove a pool's registry row (it stopped gracefully)."""
        ...
