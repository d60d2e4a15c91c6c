"""Store upkeep: rescue tasks whose lease ran out, expire pending tasks past their TTL, purge, checkpoint.

Every pool runs it in the background; it also runs alone, once or in a loop, on any queue.
"""

from __future__ import annotations

import asyncio
import logging
import time

from omniq_nb.models import TaskStatus
from omniq_nb.policy import after_lost_lease, successor
from omniq_nb.worker.host import PoolHost

logger = logging.getLogger(__name__)

_RESCUE_BATCH = 100  # tasks rescued per step
_INTERVAL = 1.0  # seconds between steps of ``run``
_PURGE_INTERVAL = 60.0  # seconds between purges of results past their result_ttl in ``run``


class Maintenance:
    """Keep a store healthy: what a pool does besides running tasks, usable without a pool.

    Each step: tasks whose worker's lease ran out go back to ``pending`` with backoff (or fail
    with a "worker lost" error, for ``at_most_once`` or out of attempts); pending tasks past
    their ``ttl`` expire, and a periodic one's schedule goes on with its next run; the store's
    write-ahead log is checkpointed; finished tasks past their ``result_ttl`` are purged.

    Args:
        host: the queue (an ``AsyncOmniQ``, or anything with its ``PoolHost`` parts).
        interval: seconds between steps of ``run``.
        purge_interval: seconds between purges in ``run`` (the first one after that long).

    Example:
        >>> import asyncio, omniq_nb as omniq
        >>> async def upkeep() -> None:
        ...     async with omniq.AsyncOmniQ(db_url="memory://") as q:
        ...         await Maintenance(q).run_once()
        >>> asyncio.run(upkeep())
    """

    def __init__(self, host: PoolHost, *, interval: float = _INTERVAL, purge_interval: float = _PURGE_INTERVAL) -> None:
        self._host = host
        self._interval = interval
        self._purge_interval = purge_interval

    async def run_once(self, *, purge: bool = True) -> None:
        """Run one step: rescue, expire, checkpoint, and purge unless ``purge=False``.

        Raises:
            StorageError: the store failed (the remaining parts of the step did not run).
        """
        await self.rescue()
        await self.expire()
        await self._host.storage.checkpoint()
        if purge:
            await self._host.storage.purge()

    async def run(self) -> None:
        """Run a step every ``interval`` until cancelled; a failed step is logged and retried."""
        purged_at = time.monotonic()
        while True:
            due = time.monotonic() - purged_at >= self._purge_interval
            if due:
                purged_at = time.monotonic()
            try:
                await self.run_once(purge=due)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("store upkeep failed; retrying")
            await asyncio.sleep(self._interval)

    async def rescue(self) -> None:
        """Settle up to a batch of tasks whose lease ran out: retried with backoff, or failed as lost."""
        storage = self._host.storage
        lost = await storage.expired_leases(limit=_RESCUE_BATCH)
        if not lost:
            return
        now = await storage.now()
        backoff_base = self._host.settings.retry_backoff
        results = [after_lost_lease(task, now=now, backoff_base=backoff_base) for task in lost]
        following = {
            r.task_id: s
            for r, t in zip(results, lost, strict=True)
            if r.status is not TaskStatus.PENDING and (s := successor(t, now=now)) is not None
        }
        rescued = await storage.settle(results, successors=following)
        for task in rescued:
            logger.warning(
                "task %s attempt %d: its worker's lease ran out; now %s", task.id, task.attempt, task.status.value
            )
        self._host.publish(rescued)

    async def expire(self) -> None:
        """Expire pending tasks past their ``ttl``; a periodic task's schedule goes on with its next run."""
        storage = self._host.storage
        expired = await storage.expire()
        if not expired:
            return
        logger.info("%d pending task(s) expired", len(expired))
        now = await storage.now()
        following = [s for task in expired if (s := successor(task, now=now)) is not None]
        if following:
            await storage.insert(following)
        self._host.publish([*expired, *following])
