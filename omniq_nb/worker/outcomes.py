"""Batched writes of a pool: the outcomes of many runs in one statement, progress a few times a second."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial

import msgspec

from omniq_nb import graph
from omniq_nb.context import Progress
from omniq_nb.errors import RecordTooLarge, StorageError, type_name
from omniq_nb.models import Task, TaskError, TaskResult, TaskStatus
from omniq_nb.policy import after_failure, succeeded, successor
from omniq_nb.worker.calls import Outcome
from omniq_nb.worker.host import PoolHost
from omniq_nb.worker.link import StoreLink

logger = logging.getLogger(__name__)

_UTC = timezone.utc
_PROGRESS_INTERVAL = 0.2  # seconds between progress writes of one task
_FLUSH_GATHER = 0.001  # seconds a busy pool waits for more outcomes before writing
_STOP_WRITE_TRIES = 3  # tries a stopping pool makes to store the last outcomes
_Entry = tuple[TaskResult, Task | None, float, int]  # an outcome: result, next periodic run, seconds run, attempt
HOLD_AT_MOST = 300.0  # seconds an unstored outcome keeps its lease renewed (a store outage); then it is rescued


class OutcomeWriter:
    """Store what runs report: each outcome as a task result (batched), and their latest progress.

    Args:
        host: the queue whose store is written.
        name: the pool's name, for log messages.
        running: returns how many runs are still going (a writer waits a moment for more
            outcomes while many are), and ``lease_of(task_id)``: the lease token of a running
            task, or ``None`` once it ended.
        lease_of: see ``running``.
        written: called with ``(task_id, lease_token)`` once an outcome was stored (or refused by
            its fence): until then the run's lease is renewed, so that an outcome waiting out a
            store outage is not rescued from under it. An outcome that could not be stored for
            ``HOLD_AT_MOST`` lets its lease go (it is still tried): its task is rescued as lost.
        link: where store failures are reported (logged once per outage), or ``None``: log each.
    """

    def __init__(
        self,
        host: PoolHost,
        name: str,
        running: Callable[[], int],
        lease_of: Callable[[str], str | None],
        written: Callable[[str, str], None],
        link: StoreLink | None = None,
    ) -> None:
        self._host, self._name, self._link = host, name, link
        self._running, self._lease_of, self._written = running, lease_of, written
        self._results: list[_Entry] = []  # two attempts of one task may share a batch
        self._unwritten: dict[tuple[str, str], float] = {}  # (task id, lease token) in _results: when recorded
        self._progress: dict[str, Progress] = {}  # the latest unwritten report of each task
        self._flush = asyncio.Event()
        self._draining = False  # set once every run has ended: ``write_loop`` may then finish
        self._finished: list[Task] = []  # finished tasks whose waiting dependents are still to move on
        self._mover: asyncio.Task[None] | None = None

    def record(self, task: Task, outcome: Outcome, seconds: float) -> None:
        """Queue the result of one run of ``task`` for the next write (with its series' next run, if final)."""
        now = datetime.now(_UTC)
        if outcome.error is None:
            result = succeeded(task, outcome.result or b"")
        else:
            result = after_failure(
                task,
                outcome.error,
                outcome.raised,
                now=now,
                backoff_base=self._host.settings.retry_backoff,
                retryable=outcome.retryable,
            )
        # the next run of a periodic task is inserted once this run is final (a retry refused as too large is)
        self._results.append((result, successor(task, now=now), seconds, task.attempt))
        self._unwritten[result.task_id, result.lease_token] = time.monotonic()
        self._flush.set()

    def holds(self, task_id: str, lease_token: str) -> bool:
        """Return whether an outcome of this lease waits to be stored (``written`` is called once it is)."""
        return (task_id, lease_token) in self._unwritten

    def reporter(self, task_id: str) -> Callable[[Progress], None]:
        """Return the progress callback of one task: callable from any thread (one dict assignment)."""
        return partial(self._progress.__setitem__, task_id)

    def drain(self) -> None:
        """Say that no run is left: ``write_loop`` writes what is recorded, then returns."""
        self._draining = True
        self._flush.set()

    async def write_loop(self) -> None:
        """Write recorded results as they come, until drained (a failed write is logged and retried)."""
        failures = 0
        while True:
            await self._flush.wait()
            if not self._draining and len(self._results) < self._running():
                await asyncio.sleep(_FLUSH_GATHER)  # more will finish soon: write them together
            self._flush.clear()
            try:
                with self._link.watch() if self._link is not None else contextlib.nullcontext():
                    await self._write()
                    await self._host.storage.checkpoint()  # the log grows fastest while outcomes are written
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if self._link is None or not isinstance(exc, StorageError):
                    logger.exception("worker %s: storing outcomes failed (try %d); retrying", self._name, failures)
                if self._draining and failures >= _STOP_WRITE_TRIES:
                    return  # their leases run out and other workers run them again: nothing is lost
                self._let_go(time.monotonic() - HOLD_AT_MOST)
                pause = self._link.backoff() if self._link is not None and self._link.lost else 0.0
                await asyncio.sleep(max(self._host.settings.poll_interval, pause))
                self._flush.set()
            if self._draining and not self._results:
                if self._mover is not None:
                    await self._mover
                return

    async def progress_loop(self) -> None:
        """Write the latest progress of each running task every ``_PROGRESS_INTERVAL``, until cancelled."""
        while True:
            await asyncio.sleep(_PROGRESS_INTERVAL)
            if not self._progress:
                continue
            # Tasks keep writing into the same dict: take each latest report out one by one (a
            # report arriving meanwhile stays for the next round; swapping the dict would lose it).
            updates = {task_id: self._progress.pop(task_id) for task_id in list(self._progress)}
            for task_id, update in updates.items():
                token = self._lease_of(task_id)
                if token is None:
                    continue
                with contextlib.suppress(Exception):
                    await self._host.storage.progress(
                        task_id=task_id, lease_token=token, done=update.done, total=update.total, message=update.message
                    )
            self._host.publish()

    def _let_go(self, recorded_before: float) -> None:
        """Stop renewing the leases of outcomes recorded before then and still not stored (they are still tried)."""
        for key, recorded in list(self._unwritten.items()):
            if recorded < recorded_before:
                del self._unwritten[key]
                self._written(*key)

    async def _write(self) -> None:
        batch, self._results = self._results, []
        if not batch:
            return
        try:
            try:
                self._stored(batch, await self._settle(batch))
            except RecordTooLarge:
                await self._write_apart(batch)
        except BaseException:
            self._results[:0] = batch  # keep what is not stored for the next try: nothing is lost
            raise

    async def _write_apart(self, batch: list[_Entry]) -> None:
        """Store outcomes one at a time, taking each out of ``batch`` once stored (the store refused them together).

        One the store refuses as too large (``RecordTooLarge``) fails its task with that error:
        writing it again would fail the same way, and would hold back every later outcome.
        """
        while batch:
            entry = batch[0]
            try:
                accepted = await self._settle([entry])
            except RecordTooLarge as exc:
                result, following, seconds, attempt = entry
                error = TaskError(type=type_name(RecordTooLarge), message=str(exc), attempt=attempt)
                refused = msgspec.structs.replace(result, status=TaskStatus.FAILED, result=None, error=error, eta=None)
                entry = (refused, following, seconds, attempt)
                accepted = await self._settle([entry])
            self._stored([entry], accepted)
            del batch[0]

    async def _settle(self, batch: list[_Entry]) -> list[Task]:
        successors = {r.task_id: s for r, s, _, _ in batch if s is not None and r.status is not TaskStatus.PENDING}
        return await self._host.storage.settle([r for r, _, _, _ in batch], successors=successors)

    def _stored(self, batch: list[_Entry], accepted: list[Task]) -> None:
        """Account for a stored batch: its leases let go, its tasks published, their dependents to move on."""
        kept = {(t.id, t.attempt) for t in accepted}  # a rescued attempt's late outcome shares its task id
        for result, _, seconds, attempt in batch:
            self._unwritten.pop((result.task_id, result.lease_token), None)
            self._written(result.task_id, result.lease_token)
            if (result.task_id, attempt) in kept:
                logger.info("task %s %s in %.3f s", result.task_id, result.status.value, seconds)
            else:
                logger.warning("task %s: outcome %s discarded, the lease was lost", result.task_id, result.status)
        self._host.publish(accepted)
        self._finished += [task for task in accepted if task.status.is_terminal]
        if self._finished and (self._mover is None or self._mover.done()):
            self._mover = asyncio.get_running_loop().create_task(self._move_dependents(), name="omniq-pool-dependents")

    async def _move_dependents(self) -> None:
        """Move on the tasks waiting for finished ones, off the write path (batches finishing meanwhile go together)."""
        while self._finished:
            finished, self._finished = self._finished, []
            step = graph.settle_dependents(self._host.storage, finished)
            self._host.publish(await graph.followed(step, f"{len(finished)} finished tasks"))
