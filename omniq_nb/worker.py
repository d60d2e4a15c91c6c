"""Worker pools: claim ready tasks, run them, store outcomes; ``AsyncWorkerPool`` and ``WorkerPool``.

The async pool runs as tasks on the loop where ``start()`` is awaited: a claim loop (never
more than ``concurrency`` attempts at once, and as many as are ready), a flusher that writes
the outcomes of many attempts with one statement, a progress writer (at most a few writes a
second per task, however often the task reports), and upkeep (rescue of tasks whose lease
ran out, TTL expiry, result purge). Leases are renewed by a thread of its own with its own
store connection, so a task or cell that blocks the loop cannot let them lapse. Delivery is
at-least-once: a task may run again after its worker died, unless ``at_most_once``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from functools import partial
from types import TracebackType
from typing import Any

import msgspec

from omniq_nb.config import WORKER_KINDS, parse_setting
from omniq_nb.context import OutputSink, Progress, TaskContext
from omniq_nb.core import AsyncOmniQ, Caller, OmniQ
from omniq_nb.errors import ConfigError, StorageError, StoreLost
from omniq_nb.executors import Attempt, Call, ChildProcess, LocalExecutor
from omniq_nb.models import Task, TaskResult, TaskStatus, WorkerInfo
from omniq_nb.policy import after_failure, after_interrupt, after_lost_lease, succeeded, successor
from omniq_nb.storage import Storage
from omniq_nb.threads import TaskThreads

logger = logging.getLogger(__name__)

_UTC = timezone.utc
_PROGRESS_INTERVAL = 0.2  # seconds between progress writes of one task
_UPKEEP_INTERVAL = 1.0  # seconds between rescues of lost leases and TTL expiry
_PURGE_INTERVAL = 60.0  # seconds between purges of results past their result_ttl
_RESCUE_BATCH = 100
_STOP_TIMEOUT = 10.0
_MAX_RENEW_INTERVAL = 2.0  # renew at least this often, so a cancel from elsewhere is seen soon
_CLAIM_GATHER = 0.001  # seconds a busy pool waits for more free slots before claiming
_FLUSH_GATHER = 0.001  # seconds a busy pool waits for more outcomes before writing
_STOP_WRITE_TRIES = 3  # attempts a stopping pool makes to store the last outcomes
_REGISTRY_LEASES = 3  # a pool silent for this many lease periods counts as dead in the registry


class AsyncWorkerPool:
    """Run the tasks of a queue: async functions on this loop, sync ones on threads or processes.

    Args:
        queue: the queue whose store to serve.
        concurrency: attempts run at once (default ``MAX_WORKERS``).
        kind: where sync functions run unless a task names its own ``kind``: ``"thread"``
            (default ``DEFAULT_WORKER``), ``"process"`` (child processes, for CPU-bound work) or
            ``"async"`` (on the loop itself: quick functions only). Coroutine functions always
            run on the loop. Every kind shares the ``concurrency`` slots.
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
        ConfigError: a bad ``kind``, ``concurrency``, ``queues`` or ``lease`` (also a ``ValueError``).

    Example:
        >>> async def main():                                          # doctest: +SKIP
        ...     async with AsyncOmniQ.from_env() as q, AsyncWorkerPool(q, concurrency=4) as pool:
        ...         h = await q.enqueue(sum, [1, 2])
        ...         assert await h == 3
    """

    def __init__(
        self,
        queue: AsyncOmniQ,
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
        self.queue = queue
        self.concurrency = _positive_int(settings.max_workers if concurrency is None else concurrency, "concurrency")
        self.kind = kind or settings.default_worker
        if self.kind not in WORKER_KINDS:
            raise ConfigError(f"kind={self.kind!r} must be one of {', '.join(WORKER_KINDS)}")
        self.queues = [settings.default_queue] if queues is None else _queue_names(queues)
        self.lease: float = settings.lease_seconds if lease is None else parse_setting("lease_seconds", lease, "lease=")
        self.id = secrets.token_hex(4)
        """The pool's id in the store's registry: 8 hex digits (``%omniq workers stop ID``)."""
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{self.id}"
        self.kernel = kernel
        self.shared = kernel is None if shared is None else shared
        self.stop_requested = False
        """Whether the pool stopped because someone asked it to through the registry."""
        self._running: dict[str, _Running] = {}
        self._busy = 0
        self._outcomes: list[tuple[TaskResult, Task | None, float]] = []
        self._progress: dict[str, Progress] = {}  # the latest unwritten report of each task
        self._children: list[ChildProcess] = []
        self._on_threads: LocalExecutor | None = None
        self._threads: TaskThreads[Attempt] | None = None
        self._on_loop = LocalExecutor(queue.serializer, None)
        self._keeper: _LeaseKeeper | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._flush = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._stopping = False
        self._draining = False  # set once every attempt has ended: the flush loop may then finish
        self._ended = asyncio.Event()
        self._stopper: asyncio.Task[None] | None = None
        self.failure: StoreLost | None = None
        """Why the pool stopped on its own (its store went away), or ``None``."""
        self._unsubscribe: Any = None
        self._output = output

    @property
    def running(self) -> bool:
        """Return True between ``start()`` and ``stop()``."""
        return bool(self._loops) and not self._stopping

    @property
    def busy(self) -> int:
        """Return how many attempts occupy a slot now (a timed-out thread holds its slot until it ends)."""
        return self._busy

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
        await self.queue.storage.heartbeat(info)  # listed from the start
        self._keeper = _LeaseKeeper(
            self.queue.storage.clone(), self.lease, renew_every, loop, self._leases_lost, info, self._asked_to_stop
        )
        self._keeper.start()
        self._unsubscribe = self.queue.on_local_write(self._on_local_write)
        for body, label in (
            (self._claim_loop, "claim"),
            (self._flush_loop, "flush"),
            (self._progress_loop, "progress"),
            (self._upkeep_loop, "upkeep"),
        ):
            self._loops.append(loop.create_task(body(), name=f"omniq-pool-{label}"))
        logger.info("worker %s started: %d %s slots on queues %s", self.name, self.concurrency, self.kind, self.queues)

    def info(self) -> WorkerInfo:
        """Return the pool's registry entry as it heartbeats it (``running``: attempts holding a lease)."""
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
            running=len(self._running),
        )

    async def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Stop gracefully, handing interrupted work back to the queue without using an attempt.

        Nothing more is claimed; running attempts get up to ``timeout`` seconds to finish; the
        rest are interrupted (a thread only flagged) and released.

        Args:
            timeout: seconds to wait for running attempts.
        """
        if not self._loops or self._stopping:
            return
        self._stopping = True
        self._wake.set()  # the claim loop ends at its next check; a claim in flight is handed back
        self._slot_free.set()
        await asyncio.gather(self._loops[0], return_exceptions=True)
        running = [r.job for r in self._running.values()]
        if running:
            await asyncio.wait(running, timeout=timeout)
        interrupted = {task_id: r.token for task_id, r in self._running.items() if not r.task.at_most_once}
        never_again = [r.task for r in self._running.values() if r.task.at_most_once]
        for record in list(self._running.values()):
            record.context.cancel()
            record.job.cancel()
        cancelled = [r.job for r in self._running.values()]
        if cancelled:  # bounded: an async task may swallow its cancel and run on
            _, left = await asyncio.wait(cancelled, timeout=timeout)
            if left:
                logger.warning("worker %s: %d task(s) ignored their cancel; handing them back", self.name, len(left))
        self._draining = True
        self._flush.set()  # the flush loop writes what is recorded (and what it is writing), then ends
        await asyncio.gather(self._loops[1], return_exceptions=True)
        try:
            await self._hand_back(interrupted, never_again)
        except StorageError as exc:  # their leases run out and they are rescued: nothing is lost
            logger.error("worker %s could not hand its running tasks back: %s", self.name, exc)
        await self._shutdown()

    async def _hand_back(self, interrupted: dict[str, str], never_again: list[Task]) -> None:
        if never_again:  # at_most_once: an interrupted attempt is failed, never handed back to run again
            now = await self.queue.storage.now()
            outcomes = [after_interrupt(task, now=now) for task in never_again]
            self.queue.publish(await self.queue.storage.settle(outcomes))
        if interrupted:
            released = await self.queue.storage.release(leases=interrupted)
            logger.info("worker %s handed %d running task(s) back", self.name, len(released))
            self.queue.publish(released)

    async def run(self) -> None:
        """Start the pool and serve until cancelled, then stop gracefully.

        Raises:
            StoreLost: the pool stopped on its own because its store went away.
        """
        await self.start()
        try:
            await self.wait()
        finally:
            await asyncio.shield(self.stop())

    async def wait(self) -> None:
        """Return once the pool has stopped, by ``stop()`` or on its own.

        Raises:
            StoreLost: it stopped on its own because its store went away (see ``failure``).
        """
        await self._ended.wait()
        if self.failure is not None:
            raise self.failure

    async def _shutdown(self) -> None:
        for job in self._loops[2:]:
            job.cancel()
        await asyncio.gather(*self._loops[2:], return_exceptions=True)
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._keeper is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._keeper.stop)
        for child in self._children:
            child.close()
        self._children.clear()
        if self._threads is not None:
            self._threads.shutdown()
        logger.info("worker %s stopped", self.name)
        self._ended.set()

    def _on_local_write(self, tasks: Sequence[Task]) -> None:
        self._wake.set()
        for task in tasks:
            if task.status is TaskStatus.CANCELLED and task.id in self._running:
                self._abandon(task.id, "cancelled")

    def _leases_lost(self, leases: dict[str, str]) -> None:
        for task_id, token in leases.items():
            record = self._running.get(task_id)
            if record is not None and record.token == token:  # not a later attempt of the same task
                logger.warning("task %s: lease lost (cancelled or rescued elsewhere); stopping it", task_id)
                self._abandon(task_id, "lease lost")

    def _abandon(self, task_id: str, why: str) -> None:
        record = self._running.pop(task_id, None)
        if record is not None:
            logger.info("task %s attempt %d: %s", task_id, record.task.attempt, why)
            record.context.cancel()
            record.job.cancel()

    async def _claim_loop(self) -> None:
        storage = self.queue.storage
        while not self._stopping:
            free = self.concurrency - self._busy
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            if free < self.concurrency // 2:
                free = await self._more_free_slots()
            self._wake.clear()
            tasks = await self._claim(free)
            if tasks is None:
                return
            if not self.running:  # stop() began during this claim: hand its tasks straight back
                if tasks:
                    self.queue.publish(await storage.release(leases={t.id: t.lease_token or "" for t in tasks}))
                return
            for task in tasks:
                self._launch(task)
            if tasks:
                self.queue.publish(tasks)
                continue
            await self._idle()

    async def _claim(self, limit: int) -> list[Task] | None:
        """Claim up to ``limit`` tasks (none after a failure, which is logged); ``None`` once the store is lost."""
        try:
            return await self.queue.storage.claim(
                queues=self.queues,
                limit=limit,
                lease=self.lease,
                worker=self.name,
                unowned_only=not self.shared,
                owner=self.kernel,
            )
        except StoreLost as exc:
            self._store_lost(exc)
            return None
        except Exception:
            logger.exception("worker %s: claiming failed; retrying", self.name)
            return []

    def _asked_to_stop(self) -> None:
        """Drain and stop: a stop was requested through the store's registry."""
        if self._stopping:
            return
        logger.info("worker %s was asked to stop through the registry; draining", self.name)
        self.stop_requested = True
        self._stop_soon()

    def _store_lost(self, exc: StoreLost) -> None:
        """Stop serving a store that went away: every later write would be lost with it."""
        logger.error("worker %s stops: %s", self.name, exc)
        self.failure = exc
        self._stop_soon()

    def _stop_soon(self) -> None:
        """Begin ``stop()`` as a task of its own (the caller may be one of the loops it waits for)."""
        self._stopper = asyncio.get_running_loop().create_task(self.stop(), name="omniq-pool-stop")

    async def _more_free_slots(self) -> int:
        """Wait up to ``_CLAIM_GATHER`` for half the slots to be free: fewer, larger claims."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CLAIM_GATHER
        while self.concurrency - self._busy < self.concurrency // 2 and (left := deadline - loop.time()) > 0:
            self._slot_free.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_free.wait(), left)
        return self.concurrency - self._busy

    async def _idle(self) -> None:
        """Wait for a local enqueue, another process's hint, or the poll interval."""
        interval = self.queue.settings.poll_interval
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
        if self.queue.storage.supports_notify:
            waits.append(asyncio.ensure_future(self.queue.storage.wait_for_tasks(interval)))
        try:
            await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    def _launch(self, task: Task) -> None:
        self._busy += 1
        sink = self._task_output(task)
        report = partial(self._progress.__setitem__, task.id)  # from any thread: one dict assignment
        context = TaskContext(task.id, task.attempt, task.queue, task.run_id or "", report, sink)
        token = task.lease_token or ""
        assert self._keeper is not None
        self._keeper.hold(task.id, token)
        slot = _Slot(self._free_slot)
        job = asyncio.get_running_loop().create_task(self._execute(task, context, slot), name=f"omniq-task-{task.id}")
        # Cleanup is a done-callback, not a ``finally``: a job cancelled before its first step
        # (a cancel or a lost lease right after the claim) never runs its body.
        job.add_done_callback(partial(self._attempt_ended, task.id, token, context, slot))
        self._running[task.id] = _Running(job, context, token, task)
        logger.info("task %s %s started (attempt %d of %d)", task.id, task.name, task.attempt, task.max_attempts)

    def _task_output(self, task: Task) -> OutputSink | None:
        """Return where the task's output goes (this process's streams if the router fails)."""
        if self._output is None:
            return None
        try:
            return self._output(task)
        except Exception:
            logger.exception("task %s: routing its output failed; it goes to this process's streams", task.id)
            return None

    async def _execute(self, task: Task, context: TaskContext, slot: _Slot) -> None:
        started = time.monotonic()
        call = Call(
            task_id=task.id,
            attempt=task.attempt,
            queue=task.queue,
            run_id=context.run_id,
            payload=task.payload,
            timeout=task.timeout,
        )
        attempt = await self._attempt(call, task.kind or self.kind, context, slot.keep)
        self._record(task, attempt, time.monotonic() - started)

    def _attempt_ended(self, task_id: str, token: str, context: TaskContext, slot: _Slot, _: object) -> None:
        record = self._running.get(task_id)
        if record is not None and record.context is context:
            del self._running[task_id]
        assert self._keeper is not None
        self._keeper.release(task_id, token)  # only this attempt's lease: a newer one stays renewed
        slot.release()

    async def _attempt(
        self, call: Call, kind: str, context: TaskContext, keep_slot: Callable[[], Callable[[], None]]
    ) -> Attempt:
        if kind != "process" or self._runs_on_loop(call):
            return await self._local(kind).run(call, context, keep_slot)
        child = self._idle_child()
        try:
            attempt = await child.run(call, context)
        except BaseException:
            child.terminate()
            raise
        if child.alive:
            self._children.append(child)
        return attempt

    def _idle_child(self) -> ChildProcess:
        """Return a live idle child process, starting one if none is left (dead ones are reaped)."""
        while self._children:
            child = self._children.pop()
            if child.alive:
                return child
            child.terminate()
        return ChildProcess(self.queue.settings.secret)

    def _local(self, kind: str) -> LocalExecutor:
        """Return the executor for attempts run in this process: on threads, or on the loop."""
        if kind != "thread":
            return self._on_loop
        if self._on_threads is None:
            self._threads = TaskThreads(self.concurrency, asyncio.get_running_loop())
            self._on_threads = LocalExecutor(self.queue.serializer, self._threads)
        return self._on_threads

    def _runs_on_loop(self, call: Call) -> bool:
        try:
            return self._on_loop.runs_on_loop(call.payload)
        except Exception:
            return True  # the local executor reports the failure without running anything

    def _record(self, task: Task, attempt: Attempt, seconds: float) -> None:
        now = datetime.now(_UTC)
        if attempt.error is None:
            outcome = succeeded(task, attempt.result or b"")
        else:
            outcome = after_failure(
                task,
                attempt.error,
                attempt.raised,
                now=now,
                backoff_base=self.queue.settings.retry_backoff,
                retryable=attempt.retryable,
            )
        final = outcome.status is not TaskStatus.PENDING
        self._outcomes.append((outcome, successor(task, now=now) if final else None, seconds))
        self._flush.set()

    def _free_slot(self) -> None:
        self._busy -= 1
        self._slot_free.set()

    async def _flush_loop(self) -> None:
        failures = 0
        while True:
            await self._flush.wait()
            if not self._draining and len(self._outcomes) < len(self._running):
                await asyncio.sleep(_FLUSH_GATHER)  # more will finish soon: write them together
            self._flush.clear()
            try:
                await self._write_outcomes()
                await self.queue.storage.checkpoint()  # the log grows fastest while outcomes are written
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                logger.exception("worker %s: storing outcomes failed (try %d); retrying", self.name, failures)
                if self._draining and failures >= _STOP_WRITE_TRIES:
                    return  # their leases run out and other workers run them again: nothing is lost
                await asyncio.sleep(self.queue.settings.poll_interval)
                self._flush.set()
            if self._draining and not self._outcomes:
                return

    async def _write_outcomes(self) -> None:
        batch, self._outcomes = self._outcomes, []
        if not batch:
            return
        try:
            successors = {r.task_id: s for r, s, _ in batch if s is not None}
            accepted = await self.queue.storage.settle([r for r, _, _ in batch], successors=successors)
        except BaseException:
            self._outcomes[:0] = batch  # keep them for the next try: nothing is lost
            raise
        kept = {t.id for t in accepted}
        for outcome, _, seconds in batch:
            if outcome.task_id in kept:
                logger.info("task %s %s in %.3f s", outcome.task_id, outcome.status.value, seconds)
            else:
                logger.warning("task %s: outcome %s discarded, the lease was lost", outcome.task_id, outcome.status)
        self.queue.publish(accepted)

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(_PROGRESS_INTERVAL)
            if not self._progress:
                continue
            # Tasks keep writing into the same dict: take each latest report out one by one (a
            # report arriving meanwhile stays for the next round; swapping the dict would lose it).
            updates = {task_id: self._progress.pop(task_id) for task_id in list(self._progress)}
            for task_id, update in updates.items():
                record = self._running.get(task_id)
                if record is None:
                    continue
                with contextlib.suppress(Exception):
                    await self.queue.storage.progress(
                        task_id=task_id,
                        lease_token=record.token,
                        done=update.done,
                        total=update.total,
                        message=update.message,
                    )
            self.queue.publish()

    async def _upkeep_loop(self) -> None:
        purged_at = time.monotonic()
        while True:
            try:
                await self._rescue()
                expired = await self.queue.storage.expire()
                if expired:
                    logger.info("%d pending task(s) expired", len(expired))
                    now = await self.queue.storage.now()  # an expired run keeps its schedule going
                    following = [s for task in expired if (s := successor(task, now=now)) is not None]
                    if following:
                        await self.queue.storage.insert(following)
                    self.queue.publish([*expired, *following])
                await self.queue.storage.checkpoint()
                if time.monotonic() - purged_at >= _PURGE_INTERVAL:
                    purged_at = time.monotonic()
                    await self.queue.storage.purge()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("worker %s: upkeep failed; retrying", self.name)
            await asyncio.sleep(min(_UPKEEP_INTERVAL, self.lease / 2))

    async def _rescue(self) -> None:
        storage = self.queue.storage
        lost = await storage.expired_leases(limit=_RESCUE_BATCH)
        if not lost:
            return
        now = await storage.now()
        backoff_base = self.queue.settings.retry_backoff
        outcomes = [after_lost_lease(task, now=now, backoff_base=backoff_base) for task in lost]
        following = {
            o.task_id: s
            for o, t in zip(outcomes, lost, strict=True)
            if o.status is not TaskStatus.PENDING and (s := successor(t, now=now)) is not None
        }
        rescued = await storage.settle(outcomes, successors=following)
        for task in rescued:
            logger.warning(
                "task %s attempt %d: its worker's lease ran out; now %s", task.id, task.attempt, task.status.value
            )
        self.queue.publish(rescued)


class _Running(msgspec.Struct):
    job: asyncio.Task[None]
    context: TaskContext
    token: str
    task: Task


class _Slot:
    """One attempt's concurrency slot: free once the attempt and any thread it started have ended."""

    __slots__ = ("_free", "_holders")

    def __init__(self, free: Callable[[], None]) -> None:
        self._free, self._holders = free, 1

    def keep(self) -> Callable[[], None]:
        """Keep the slot taken after the attempt ends, until the returned function is called."""
        self._holders += 1
        return self.release

    def release(self) -> None:
        """Let go of the slot; the last holder frees it."""
        self._holders -= 1
        if not self._holders:
            self._free()


class _LeaseKeeper:
    """Renew the pool's leases and heartbeat its registry row, from a thread with its own loop and connection.

    When the registry says someone asked the pool to stop, ``on_stop`` is called once on the
    pool's loop. The row is removed when the keeper stops.
    """

    def __init__(
        self,
        storage: Storage,
        lease: float,
        interval: float,
        loop: asyncio.AbstractEventLoop,
        on_lost: Any,
        info: WorkerInfo,
        on_stop: Callable[[], None],
    ) -> None:
        self._storage, self._lease, self._interval = storage, lease, interval
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
                    held = await self._storage.renew(leases=leases, lease=self._lease)
                except Exception:
                    logger.exception("renewing %d lease(s) failed; retrying", len(leases))
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
            asked = await self._storage.heartbeat(msgspec.structs.replace(self._info, running=running))
        except Exception:
            logger.exception("the heartbeat of worker %s failed; retrying", self._info.name)
            return
        if asked and not self._stop_asked:
            self._stop_asked = True
            self._call_pool(self._on_stop)

    def _call_pool(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the pool's loop has closed
            self._loop.call_soon_threadsafe(fn, *args)


class WorkerPool:
    """Blocking twin of ``AsyncWorkerPool``: the pool runs on a private loop thread.

    Args:
        queue: an ``OmniQ`` (its queue's loop hosts the pool).
        **options: as for ``AsyncWorkerPool``.

    Example:
        >>> with OmniQ(db_url="memory://") as q, WorkerPool(q, concurrency=2):   # doctest: +SKIP
        ...     assert q.enqueue(sum, [1, 2]).result(timeout=10) == 3
    """

    def __init__(self, queue: OmniQ, **options: Any) -> None:
        self._portal: Caller = queue.core.bridge  # the pool lives on the queue's loop
        self._pool = self._portal.call(_create_pool, queue.core, options)

    def __enter__(self) -> WorkerPool:
        """Start the pool."""
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the pool gracefully."""
        self.stop()

    @property
    def running(self) -> bool:
        """Return True between ``start()`` and ``stop()``."""
        return self._pool.running

    def start(self) -> None:
        """Blocking version of ``AsyncWorkerPool.start``: returns once the pool runs."""
        self._portal.call(self._pool.start)

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Blocking version of ``AsyncWorkerPool.stop``."""
        self._portal.call(self._pool.stop, timeout)

    def run(self) -> None:
        """Start and block until SIGINT or SIGTERM (or KeyboardInterrupt), then stop gracefully."""
        import signal

        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            stop.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()


async def _create_pool(queue: AsyncOmniQ, options: dict[str, Any]) -> AsyncWorkerPool:
    return AsyncWorkerPool(queue, **options)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r} must be a whole number >= 1")
    return value


def _queue_names(queues: Sequence[str]) -> list[str]:
    if isinstance(queues, str):
        queues = [queues]
    names = [q for q in queues if isinstance(q, str) and q.strip()]
    if not names or len(names) != len(queues):
        raise ConfigError(f"queues={queues!r} must be one or more non-empty queue names")
    return names
