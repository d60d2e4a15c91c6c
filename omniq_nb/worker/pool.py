"""``AsyncWorkerPool``: claim ready tasks, run them, store their outcomes.

It runs as tasks on the loop where ``start()`` is awaited: a claim loop (at most ``concurrency``
runs at once), the ``OutcomeWriter``'s loops and ``Maintenance``; a ``LeaseKeeper`` thread
renews leases. Delivery is at-least-once: a task may run again after its worker died, unless
``at_most_once``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from omniq_nb import graph
from omniq_nb.config import WORKER_KINDS, parse_setting
from omniq_nb.context import OutputSink
from omniq_nb.errors import ConfigError, StorageError, StoreLost
from omniq_nb.jobs import cancel_and_wait
from omniq_nb.models import Task, TaskStatus, WorkerInfo
from omniq_nb.policy import after_interrupt
from omniq_nb.worker.arguments import positive_int, queue_names
from omniq_nb.worker.capture import route_streams, unroute_streams
from omniq_nb.worker.executors import Executors
from omniq_nb.worker.greenlets import check_gevent_allowed
from omniq_nb.worker.host import PoolHost
from omniq_nb.worker.kept import OutputKeeper
from omniq_nb.worker.lease import LeaseKeeper
from omniq_nb.worker.link import StoreLink
from omniq_nb.worker.maintenance import Maintenance
from omniq_nb.worker.outcomes import OutcomeWriter
from omniq_nb.worker.runs import HAND_BACK_AFTER, Runs
from omniq_nb.worker.signals import serve_until_signal

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0  # seconds ``stop()`` waits for running tasks by default
_MAINTENANCE_INTERVAL = 1.0  # seconds between rescues of lost leases and TTL expiry
_LOOPS_END_WAIT = 10.0  # seconds a stopping pool waits for its background loops once cancelled
_MAX_RENEW_INTERVAL = 2.0  # renew at least this often, so a cancel from elsewhere is seen soon
_CLAIM_GATHER = 0.001  # seconds a busy pool waits for more free slots before claiming
_REGISTRY_LEASES = 3  # a pool silent for this many lease periods counts as dead in the registry
_GEVENT_ONLY = ("gevent",)  # kinds only a gevent pool claims: no other can run them as they ask


class AsyncWorkerPool:
    """Run the tasks of a queue: async functions on this loop, sync ones on threads or processes.

    Args:
        queue: the queue whose store to serve: an ``AsyncOmniQ`` (or any ``PoolHost``).
        concurrency: runs at once (default ``MAX_WORKERS``).
        kind: where sync functions run unless a task names its own ``kind``: ``"thread"``
            (default ``DEFAULT_WORKER``), ``"process"`` (child processes, for CPU-bound work) or
            ``"async"`` (on the loop itself: quick functions only), or ``"gevent"`` (greenlets,
            for I/O-bound functions; only in ``omniq-nb worker --kind gevent``, which patches its
            process at start). Coroutine functions always run on the loop. Every kind shares the
            ``concurrency`` slots. Only a gevent pool claims tasks of ``kind="gevent"``.
        queues: the queues to serve (default ``[DEFAULT_QUEUE]``).
        lease: seconds a claim holds a task between renewals, at least 1 (default ``LEASE_SECONDS``).
        name: the worker's name, stored on the tasks it claims.
        kernel: the kernel session the pool runs in (in a notebook), recorded in the registry:
            tasks owned by that kernel are left to this pool while it is alive.
        shared: take every task of its queues. Default: yes for a standalone pool, no for one
            with a ``kernel``, which then takes its kernel's tasks and those that belong to no
            live kernel (no owner, or an owner with no live pool in the registry). A standalone
            pool with ``shared=False`` takes only the latter (``--only-unowned``).
        output: given each claimed task, returns where its output (prints, displays) goes, or
            ``None`` to leave it on this process's streams (the notebook routes it to the cell
            that launched the task).

    Raises:
        ConfigError: a bad ``kind``, ``concurrency``, ``queues`` or ``lease`` (also a ``ValueError``);
            ``kind="gevent"`` in a process that was not patched by gevent at its start (a
            notebook kernel, a script): the message names the command to run instead.

    Example:
        >>> import asyncio, omniq_nb as omniq
        >>> async def main() -> int:
        ...     async with omniq.AsyncOmniQ(db_url="memory://") as q, AsyncWorkerPool(q, concurrency=2):
        ...         h = await q.enqueue(sum, [1, 2])
        ...         return await h.result(timeout=10)
        >>> asyncio.run(main())
        3
    """

    def __init__(
        self,
        queue: PoolHost,
        *,
        concurrency: int | None = None,
        kind: str | None = None,
        queues: Sequence[str] | None = None,
        lease: float | None = None,
        name: str | None = None,
        kernel: str | None = None,
        shared: bool | None = None,
        output: Callable[[Task], OutputSink | None] | None = None,
    ) -> None:
        settings = queue.settings
        self._host = queue
        self.concurrency = positive_int(settings.max_workers if concurrency is None else concurrency, "concurrency")
        self.kind = kind or settings.default_worker
        if self.kind not in WORKER_KINDS:
            raise ConfigError(f"kind={self.kind!r} must be one of {', '.join(WORKER_KINDS)}")
        if self.kind == "gevent":
            check_gevent_allowed()
        self.queues = [settings.default_queue] if queues is None else queue_names(queues)
        self.lease: float = settings.lease_seconds if lease is None else parse_setting("lease_seconds", lease, "lease=")
        self.id = secrets.token_hex(4)
        """The pool's id in the store's registry: 8 hex digits (``%omniq workers stop ID``)."""
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{self.id}"
        self.kernel = kernel
        self.shared = kernel is None if shared is None else shared
        self.stop_requested = False
        """Whether the pool stopped because someone asked it to through the registry."""
        self.failure: StoreLost | None = None
        """Why the pool stopped on its own (its store went away), or ``None``."""
        self._executors = Executors(queue.serializer, settings.secret, self.concurrency)
        self._link = StoreLink(self.name, queue.storage.url, long_outage=self.lease / 2)
        self._writer = OutcomeWriter(
            queue,
            self.name,
            lambda: len(self._runs.by_task),
            lambda task_id: self._runs.lease_of(task_id),
            lambda task_id, token: self._keeper.release(task_id, token) if self._keeper is not None else None,
            self._link,
        )
        self._kept = OutputKeeper(queue)
        self._runs = Runs(self.concurrency, self.kind, self._executors, self._writer, output, queue.storage, self._kept)
        self._maintenance = Maintenance(
            queue,
            interval=min(_MAINTENANCE_INTERVAL, self.lease / 2),
            link=self._link,
            held=lambda: self._keeper.held() if self._keeper is not None else {},
            grace=self.lease,
        )
        self._keeper: LeaseKeeper | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._keeping: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._ended = asyncio.Event()
        self._stopper: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def running(self) -> bool:
        """Return True between ``start()`` and ``stop()``."""
        return bool(self._loops) and not self._stopping

    @property
    def busy(self) -> int:
        """Return how many runs occupy a slot now (a timed-out thread holds its slot until it ends)."""
        return self._runs.busy

    async def __aenter__(self) -> AsyncWorkerPool:
        """Start the pool."""
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the pool gracefully."""
        await self.stop()

    async def start(self) -> None:
        """Start serving; returns at once (the pool runs as tasks on the current loop).

        Raises:
            RuntimeError: the pool was already started.
        """
        if self._loops:
            raise RuntimeError(f"worker pool {self.name} is already started")
        loop = asyncio.get_running_loop()
        renew_every = min(self.lease / 3, _MAX_RENEW_INTERVAL)
        info = self.info()
        storage = self._host.storage
        await storage.heartbeat(info)  # listed from the start
        self._keeper = LeaseKeeper(
            storage.clone(), self.lease, renew_every, loop, self._leases_lost, info, self._asked_to_stop, self._link
        )
        self._runs.keeper = self._keeper
        self._keeper.start()
        route_streams()  # what tasks print is kept (and still shown where it went before)
        self._keeping = loop.create_task(self._kept.run(), name="omniq-pool-output")
        self._unsubscribe = self._host.on_local_write(self._on_local_write)
        for body, label in (
            (self._claim_loop, "claim"),
            (self._writer.write_loop, "flush"),
            (self._writer.progress_loop, "progress"),
            (self._maintenance.run, "upkeep"),
        ):
            self._loops.append(loop.create_task(body(), name=f"omniq-pool-{label}"))
        logger.info("worker %s started: %d %s slots on queues %s", self.name, self.concurrency, self.kind, self.queues)

    def info(self) -> WorkerInfo:
        """Return the pool's registry entry as it heartbeats it (``running``: runs holding a lease)."""
        return WorkerInfo(
            id=self.id,
            name=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            kind=self.kind,
            concurrency=self.concurrency,
            queues=tuple(self.queues),
            kernel=self.kernel,
            notebook=os.environ.get("JPY_SESSION_NAME") if self.kernel is not None else None,
            ttl=self.lease * _REGISTRY_LEASES,
            running=len(self._runs.by_task),
        )

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop gracefully, handing interrupted work back to the queue without using an attempt.

        Nothing more is claimed; running tasks get up to ``timeout`` seconds to finish; the
        rest are interrupted (a thread only flagged) and released.

        Args:
            timeout: seconds to wait for running tasks.
        """
        if not self._loops or self._stopping:
            return
        self._stopping = True
        self._wake.set()  # the claim loop ends at its next check; a claim in flight is handed back
        self._runs.wake_all()
        await asyncio.gather(self._loops[0], return_exceptions=True)
        await self._hand_back_unstarted(self._runs.overdue(0.0))  # before their leases can lapse
        interrupted, never_again = await self._runs.interrupt(timeout, self.name)
        self._kept.drain()  # the output of every run is stored, that of interrupted ones too
        if self._keeping is not None:
            await asyncio.gather(self._keeping, return_exceptions=True)
        self._writer.drain()  # the writer stores what is recorded (and what it is writing), then ends
        await asyncio.gather(self._loops[1], return_exceptions=True)
        try:
            await self._hand_back(interrupted, never_again)
        except StorageError as exc:  # their leases run out and they are rescued: nothing is lost
            logger.error("worker %s could not hand its running tasks back: %s", self.name, exc)
        await self._shutdown()

    async def run(self) -> None:
        """Start the pool and serve until SIGINT or SIGTERM, until it stops, or until cancelled; then stop gracefully.

        The signals are caught only in the main thread (see ``serve_until_signal``).

        Raises:
            StoreLost: the pool stopped on its own because its store went away.
        """
        await serve_until_signal(self)

    async def wait(self) -> None:
        """Return once the pool has stopped, by ``stop()`` or on its own.

        Raises:
            StoreLost: it stopped on its own because its store went away (see ``failure``).
        """
        await self._ended.wait()
        if self.failure is not None:
            raise self.failure

    async def _hand_back(self, interrupted: dict[str, str], never_again: list[Task]) -> None:
        storage = self._host.storage
        if never_again:  # at_most_once: an interrupted run is failed, never handed back to run again
            now = await storage.now()
            failed = await storage.settle([after_interrupt(task, now=now) for task in never_again])
            self._host.publish([*failed, *await graph.followed(graph.settle_dependents(storage, failed), "them")])
        if interrupted:
            released = await storage.release(leases=interrupted)
            logger.info("worker %s handed %d running task(s) back", self.name, len(released))
            self._host.publish(released)

    async def _shutdown(self) -> None:
        if not await cancel_and_wait(self._loops[2:], within=_LOOPS_END_WAIT):
            logger.warning(
                "worker %s: a background loop did not end within %s s; stopping without it", self.name, _LOOPS_END_WAIT
            )
        await asyncio.gather(*(job for job in self._loops[2:] if job.done()), return_exceptions=True)
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._keeper is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._keeper.stop)
        self._executors.close()
        unroute_streams()
        logger.info("worker %s stopped", self.name)
        self._ended.set()

    def _on_local_write(self, tasks: Sequence[Task]) -> None:
        """Wake the claim loop for pending rows (claimed or finished ones make none ready); stop cancelled runs."""
        ready = False
        for task in tasks:
            if task.status is TaskStatus.PENDING:
                ready = True
            elif task.status is TaskStatus.CANCELLED and self._runs.holds(task.id):
                self._runs.abandon(task.id, "cancelled")
        if ready:
            self._wake.set()

    def _leases_lost(self, leases: dict[str, str]) -> None:
        for task_id, token in leases.items():
            if self._runs.lease_of(task_id) == token:  # not a later run of the same task
                logger.warning("task %s: lease lost (cancelled or rescued elsewhere); stopping it", task_id)
                self._runs.abandon(task_id, "lease lost")

    def _asked_to_stop(self) -> None:
        """Drain and stop: a stop was requested through the store's registry."""
        if self._stopping:
            return
        logger.info("worker %s was asked to stop through the registry; draining", self.name)
        self.stop_requested = True
        self._stop_soon()

    def _stop_soon(self) -> None:
        """Begin ``stop()`` as a task of its own (the caller may be one of the loops it waits for)."""
        self._stopper = asyncio.get_running_loop().create_task(self.stop(), name="omniq-pool-stop")

    async def _claim_loop(self) -> None:
        runs = self._runs
        while not self._stopping:
            await self._hand_back_unstarted(runs.overdue(HAND_BACK_AFTER))
            room = runs.room()
            if room <= 0:  # wait for a slot, or until tasks waiting for one are overdue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(runs.slot_freed(), HAND_BACK_AFTER if runs.waiting else None)
                continue
            if not runs.waiting and room < self.concurrency // 2:
                room = await runs.gather_free(_CLAIM_GATHER)
            self._wake.clear()
            tasks = await self._claim(room)
            if tasks is None:
                return
            if not self.running:  # stop() began during this claim: hand its tasks straight back
                await self._hand_back_unstarted(tasks)
                return
            unstarted = runs.take(tasks)
            if tasks:
                self._host.publish(tasks)
                await self._hand_back_unstarted(unstarted)
                if len(tasks) == room:  # more may be ready: claim again once a thread got its call
                    await asyncio.sleep(0)
                    continue
            await self._idle()  # fewer than asked: none is left, so wait for news

    async def _hand_back_unstarted(self, tasks: list[Task]) -> None:
        """Release claimed tasks that never started (no attempt used); on failure their leases run out."""
        if not tasks:
            return
        try:
            released = await self._host.storage.release(leases={t.id: t.lease_token or "" for t in tasks})
        except StorageError as exc:
            logger.error("worker %s could not hand %d waiting task(s) back: %s", self.name, len(tasks), exc)
            return
        logger.info("worker %s handed %d task(s) that waited for a slot back to the queue", self.name, len(released))
        self._host.publish(released)

    async def _claim(self, limit: int) -> list[Task] | None:
        """Claim up to ``limit`` tasks (none after a failure, which is logged); ``None`` once the store is lost."""
        try:
            with self._link.watch():
                return await self._host.storage.claim(
                    queues=self.queues,
                    limit=limit,
                    lease=self.lease,
                    worker=self.name,
                    unowned_only=not self.shared,
                    owner=self.kernel,
                    skip_kinds=() if self.kind == "gevent" else _GEVENT_ONLY,
                )
        except StoreLost as exc:
            logger.error("worker %s stops: %s", self.name, exc)
            self.failure = exc  # every later write would be lost with the store
            self._stop_soon()
            return None
        except StorageError:  # the link logged it: wait (a stop ends the wait) and try again
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._link.backoff())
            return []
        except Exception:
            logger.exception("worker %s: claiming failed; retrying", self.name)
            return []

    async def _idle(self) -> None:
        """Wait for a local enqueue, another process's hint, or the poll interval."""
        interval = self._host.settings.poll_interval
        if self._runs.waiting:  # wake in time to hand them back if they are overdue
            interval = min(interval, HAND_BACK_AFTER)
        storage = self._host.storage
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
        if storage.supports_notify:
            waits.append(asyncio.ensure_future(storage.wait_for_tasks(interval)))
        try:
            await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
