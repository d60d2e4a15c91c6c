"""Lease keeping: renew the leases of running tasks and heartbeat the pool's registry row.

It runs on a thread of its own, with its own loop and store connection, so a task or cell that
blocks the pool's loop cannot let the leases lapse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import msgspec

from omniq_nb.errors import StorageError
from omniq_nb.models import WorkerInfo
from omniq_nb.storage import Storage
from omniq_nb.worker.link import StoreLink

logger = logging.getLogger(__name__)


class LeaseKeeper:
    """Renew the pool's leases and heartbeat its registry row, from a thread with its own loop and connection.

    When the registry says someone asked the pool to stop, ``on_stop`` is called once on the
    pool's loop. The row is removed when the keeper stops.

    Args:
        storage: a store of its own (``clone()`` of the pool's), opened and closed on the thread.
        lease: seconds each renewal extends a lease by.
        interval: seconds between renewals (and heartbeats).
        loop: the pool's loop, where ``on_lost`` and ``on_stop`` are called.
        on_lost: called with ``{task_id: lease_token}`` of leases the store no longer holds.
        info: the pool's registry row (``running`` is filled in at each heartbeat).
        on_stop: called once when the registry says someone asked the pool to stop.
        link: where store failures are reported (logged once per outage), or ``None``: log each.
    """

    def __init__(
        self,
        storage: Storage,
        lease: float,
        interval: float,
        loop: asyncio.AbstractEventLoop,
        on_lost: Callable[[dict[str, str]], None],
        info: WorkerInfo,
        on_stop: Callable[[], None],
        link: StoreLink | None = None,
    ) -> None:
        self._storage, self._lease, self._interval, self._link = storage, lease, interval, link
        self._loop, self._on_lost = loop, on_lost
        self._info, self._on_stop, self._stop_asked = info, on_stop, False
        self._leases: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._main, name="omniq-lease-keeper", daemon=True)

    def start(self) -> None:
        """Start the renewal thread."""
        self._thread.start()

    def hold(self, task_id: str, token: str) -> None:
        """Renew this lease until ``release``."""
        with self._lock:
            self._leases[task_id] = token

    def release(self, task_id: str, token: str) -> None:
        """Stop renewing this lease (a newer lease of the same task, from a later claim, stays)."""
        with self._lock:
            if self._leases.get(task_id) == token:
                del self._leases[task_id]

    def held(self) -> dict[str, str]:
        """Return the leases being renewed: ``{task_id: lease_token}`` (none once the thread has ended)."""
        if not self._thread.is_alive():
            return {}
        with self._lock:
            return dict(self._leases)

    def stop(self) -> None:
        """Stop renewing and wait for the thread to close its connection."""
        self._stopped.set()
        self._thread.join()

    def _main(self) -> None:
        try:
            asyncio.run(self._renew_until_stopped())
        except StorageError as exc:  # e.g. the store went away before this thread opened it
            logger.error("the lease keeper of worker %s stopped: %s", self._info.name, exc)

    async def _renew_until_stopped(self) -> None:
        async with self._storage:
            while not self._stopped.wait(self._interval):
                with self._lock:
                    leases = dict(self._leases)
                await self._heartbeat(len(leases))
                if not leases:
                    continue
                try:
                    with self._watch():
                        held = await self._storage.renew(leases=leases, lease=self._lease)
                except Exception as exc:
                    self._log_failure(exc, "renewing %d lease(s) failed; retrying", len(leases))
                    continue
                with self._lock:
                    lost = {i: t for i, t in leases.items() if i not in held and self._leases.get(i) == t}
                if lost:
                    self._call_pool(self._on_lost, lost)
            try:
                await self._storage.unregister(self._info.id)
            except Exception:  # its heartbeat stops: the row counts as dead after its ttl
                logger.exception("removing worker %s from the registry failed", self._info.name)

    async def _heartbeat(self, running: int) -> None:
        try:
            with self._watch():
                asked = await self._storage.heartbeat(msgspec.structs.replace(self._info, running=running))
        except Exception as exc:
            self._log_failure(exc, "the heartbeat of worker %s failed; retrying", self._info.name)
            return
        if asked and not self._stop_asked:
            self._stop_asked = True
            self._call_pool(self._on_stop)

    def _watch(self) -> contextlib.AbstractContextManager[None]:
        return self._link.watch() if self._link is not None else contextlib.nullcontext()

    def _log_failure(self, exc: Exception, message: str, *args: Any) -> None:
        """Log a failed store call, unless the link already reports the store as lost (one line per outage)."""
        if self._link is not None and isinstance(exc, StorageError):
            return
        logger.exception(message, *args)

    def _call_pool(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the pool's loop has closed
            self._loop.call_soon_threadsafe(fn, *args)
