"""Store upkeep: rescue tasks whose lease ran out, expire pending tasks past their TTL, purge, checkpoint.

Every pool runs it in the background; it also runs alone, once or in a loop, on any queue.
Only the runner that holds the store's maintenance turn (``lead_maintenance``) rescues,
expires and purges, so a hundred pools on one server do not all scan; the others only
checkpoint. The holder renews its turn at every step; when it dies, another runner takes
the turn once its term has run out, and rescues what the dead one held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping

from omniq_nb import graph
from omniq_nb.errors import StorageError
from omniq_nb.jobs import end_if_cancelled
from omniq_nb.models import TaskStatus
from omniq_nb.policy import after_lost_lease, successor
from omniq_nb.worker.host import PoolHost
from omniq_nb.worker.link import StoreLink

logger = logging.getLogger(__name__)

_RESCUE_BATCH = 100  # tasks rescued per step
_INTERVAL = 1.0  # seconds between steps of ``run``
_PURGE_INTERVAL = 60.0  # seconds between purges of results past their result_ttl in ``run``
_SWEEP_INTERVAL = 10.0  # seconds between sweeps of waiting tasks in ``run`` (the first one after that long)
_TERM_STEPS = 5  # a maintenance turn lasts this many steps: a holder may miss a few renewals
_MIN_TERM = 2.0  # seconds: the shortest turn (a step may take a moment on a loaded server)


class Maintenance:
    """Keep a store healthy: what a pool does besides running tasks, usable without a pool.

    Each step: tasks whose worker's lease ran out go back to ``pending`` with backoff (or fail
    with a "worker lost" error, for ``at_most_once`` or out of attempts); pending tasks past
    their ``ttl`` expire, and a periodic one's schedule goes on with its next run; the tasks
    waiting for those that finished move on, and so do any that a dead process left waiting
    although their dependencies finished (``graph.sweep``); the store's
    write-ahead log is checkpointed; finished tasks past their ``result_ttl`` are purged.

    Args:
        host: the queue (an ``AsyncOmniQ``, or anything with its ``PoolHost`` parts).
        interval: seconds between steps of ``run``.
        purge_interval: seconds between purges in ``run`` (the first one after that long).
        runner: this runner's id in the maintenance election (default: host, pid and a random
            token); unique per runner.
        link: the pool's ``StoreLink``: store failures are reported there (logged once per
            outage) instead of each being logged.
        held: returns the leases this process's pool renews (``{task_id: lease_token}``): they
            are alive, and never rescued here, even when the store saw them run out (an outage
            kept their renewals, or their outcomes, from reaching it).
        grace: seconds after the link's store answers again during which nothing is rescued,
            so that workers cut off by the same outage renew their leases first.

    Example:
        >>> import asyncio, omniq_nb as omniq
        >>> async def upkeep() -> None:
        ...     async with omniq.AsyncOmniQ(db_url="memory://") as q:
        ...         await Maintenance(q).run_once()
        >>> asyncio.run(upkeep())
    """

    def __init__(
        self,
        host: PoolHost,
        *,
        interval: float = _INTERVAL,
        purge_interval: float = _PURGE_INTERVAL,
        runner: str | None = None,
        link: StoreLink | None = None,
        held: Callable[[], Mapping[str, str]] = dict,
        grace: float = 0.0,
    ) -> None:
        self._host, self._link, self._held, self._grace = host, link, held, grace
        self._interval = interval
        self._purge_interval = purge_interval
        self.runner = runner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        """This runner's id in the store's maintenance election."""
        self.term = max(_TERM_STEPS * interval, _MIN_TERM)
        """Seconds each step's claim on the maintenance turn lasts."""
        self.leading = False
        """Whether this runner held the maintenance turn at its last step."""

    async def run_once(self, *, purge: bool = True, sweep: bool = True) -> None:
        """Run one step: checkpoint; and if this runner holds the maintenance turn, rescue, expire, sweep and purge.

        ``purge=False`` leaves the purge out, ``sweep=False`` the sweep of waiting tasks.

        Raises:
            StorageError: the store failed (the remaining parts of the step did not run).
        """
        if await self._lead():
            await self.rescue()
            await self.expire()
            if sweep:
                self._host.publish(await graph.sweep(self._host.storage))
        await self._host.storage.checkpoint()
        if purge and self.leading:
            await self._host.storage.purge()

    async def _lead(self) -> bool:
        """Take or keep the maintenance turn; log when this runner starts or stops leading."""
        leading = await self._host.storage.lead_maintenance(self.runner, term=self.term)
        if leading != self.leading:
            logger.info(
                "upkeep runner %s %s the store's rescue, expiry and purge",
                self.runner,
                "now runs" if leading else "no longer runs",
            )
        self.leading = leading
        return leading

    async def run(self) -> None:
        """Run a step every ``interval`` until cancelled; a failed step is logged and retried."""
        purged_at = swept_at = time.monotonic()
        while True:
            due = time.monotonic() - purged_at >= self._purge_interval
            if due:
                purged_at = time.monotonic()
            sweep = time.monotonic() - swept_at >= _SWEEP_INTERVAL
            if sweep:
                swept_at = time.monotonic()
            try:
                with self._link.watch() if self._link is not None else contextlib.nullcontext():
                    await self.run_once(purge=due, sweep=sweep)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._link is None or not isinstance(exc, StorageError):
                    logger.exception("store upkeep failed; retrying")
            end_if_cancelled()  # a store call may have swallowed our cancel (see omniq_nb.jobs)
            await asyncio.sleep(self._interval)

    async def rescue(self) -> None:
        """Settle up to a batch of tasks whose lease ran out: retried with backoff, or failed as lost.

        Leases this process renews are left alone, and so is everything within ``grace`` of an outage.
        """
        if self._link is not None and self._link.steady_for() < self._grace:
            return
        storage = self._host.storage
        held = self._held()
        lapsed = await storage.expired_leases(limit=_RESCUE_BATCH + len(held))  # held ones must not crowd out the rest
        lost = [task for task in lapsed if held.get(task.id) != task.lease_token]
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
        self._host.publish([*rescued, *await graph.settle_dependents(storage, rescued)])

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
        self._host.publish([*expired, *following, *await graph.settle_dependents(storage, expired)])
