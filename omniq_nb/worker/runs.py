"""The runs a pool has going: each claimed task's job, context, lease and concurrency slot.

Claimed tasks that find no free slot wait here, in claim order, and start as slots free up.
While runs are quick (``pace.py``), the pool claims ahead of its free slots (``room``), so
that one claim feeds several rounds of runs, and a process pool's children hold their next
call in line; a waiting task holds its lease like a running one (the lease
keeper renews it), and once the first of them has waited ``HAND_BACK_AFTER`` for a slot they
all go back to the queue (``overdue``) for any idle worker to take; a stopping pool hands them
back before it waits for its runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial

import msgspec

from omniq_nb.context import OutputSink, TaskContext
from omniq_nb.inputs import task_inputs
from omniq_nb.models import Task
from omniq_nb.storage import Storage
from omniq_nb.worker.callables import StoredCallables
from omniq_nb.worker.calls import Call, Slot, failed, unmet
from omniq_nb.worker.executors import Executor, Executors
from omniq_nb.worker.kept import OutputKeeper
from omniq_nb.worker.lease import LeaseKeeper
from omniq_nb.worker.outcomes import OutcomeWriter
from omniq_nb.worker.pace import Pace

logger = logging.getLogger(__name__)

HAND_BACK_AFTER = 1.0  # seconds claimed tasks may wait for a slot before they go back to the queue


class Run(msgspec.Struct):
    """One claimed task being run: its job on the loop, its context, its lease token and the task."""

    job: asyncio.Task[None]
    context: TaskContext
    token: str
    task: Task


class Runs:
    """Start runs of claimed tasks, track them until they end, and count the slots they hold.

    Args:
        concurrency: the most slots held at once.
        kind: where sync functions run unless a task names its own kind.
        executors: the executors to run calls on.
        writer: records outcomes and progress.
        output: given a claimed task, where its output goes (``None``: this process's streams).
        store: reads a run's dependencies (their results become its arguments) and the kept
            callable its payload names (read once per pool, see ``StoredCallables``).
        kept: keeps each run's output with its task (stored before the run's outcome is recorded).
    """

    def __init__(
        self,
        concurrency: int,
        kind: str,
        executors: Executors,
        writer: OutcomeWriter,
        output: Callable[[Task], OutputSink | None] | None,
        store: Storage,
        kept: OutputKeeper,
    ) -> None:
        self._concurrency, self._kind = concurrency, kind
        self._executors, self._writer, self._output, self._read = executors, writer, output, store.get_many
        self._kept, self._callables = kept, StoredCallables(store.kept_callables)
        self.keeper: LeaseKeeper | None = None
        """Renews the leases of runs; set before the first ``launch``."""
        self.by_task: dict[str, Run] = {}
        """The runs going on, by task id."""
        self.busy = 0
        """Slots held now (a timed-out thread holds its slot until it ends)."""
        self.waiting: dict[str, tuple[Task, float]] = {}
        """Claimed tasks waiting for a slot, by id in claim order, with when they were claimed (monotonic)."""
        self._slot_free = asyncio.Event()
        self._pace = Pace(concurrency, kind, self._in_a_child)

    @property
    def free(self) -> int:
        """Return how many slots are free."""
        return self._pace.slots() - self.busy

    def room(self) -> int:
        """Return how many tasks to claim now (0: wait for a slot).

        Free slots that no waiting task will fill; while runs are quick, also room ahead of
        them, claimed once half of it has been used, so that claims come in large batches.
        """
        ahead, slots = self._pace.ahead(), self._pace.slots()
        held = self.busy + len(self.waiting)
        if not ahead:
            return slots - held
        return slots + ahead - held if held <= slots + ahead // 2 else 0

    def holds(self, task_id: str) -> bool:
        """Return whether the task runs here, or waits here for a slot."""
        return task_id in self.by_task or task_id in self.waiting

    def lease_of(self, task_id: str) -> str | None:
        """Return the lease token of the task's run going on (or of the task waiting for a slot), or ``None``."""
        run = self.by_task.get(task_id)
        if run is not None:
            return run.token
        waiting = self.waiting.get(task_id)
        return None if waiting is None else waiting[0].lease_token or ""

    def take(self, tasks: list[Task]) -> list[Task]:
        """Start runs of claimed tasks in free slots; the others wait, their leases renewed, for slots to free.

        Returns:
            The ``at_most_once`` tasks that found no free slot, to hand back to the queue: if
            this process died while they waited, they would be failed without having run.
        """
        assert self.keeper is not None
        for task in tasks:
            self.keeper.hold(task.id, task.lease_token or "")
        now = time.monotonic()
        self.waiting.update((task.id, (task, now)) for task in tasks)
        self._start_waiting()
        refused = [self._drop(task_id) for task_id, (task, _) in list(self.waiting.items()) if task.at_most_once]
        if not refused:
            return []
        self._pace.slow_down()  # claim no more ahead for now: they would come back at once
        return refused

    def overdue(self, after: float) -> list[Task]:
        """Remove and return the waiting tasks once the first of them has waited ``after`` seconds (0: at once).

        They go back to the queue, and the pool claims no more ahead until runs have shown
        again that they are quick.
        """
        first = next(iter(self.waiting.values()), None)
        if first is None or time.monotonic() - first[1] < after:
            return []
        self._pace.slow_down()
        return [self._drop(task_id) for task_id in list(self.waiting)]

    def launch(self, task: Task) -> None:
        """Start a run of a claimed task as a job on the running loop; it takes a slot until it ends."""
        self.busy += 1
        sink = self._task_output(task)
        context = TaskContext(
            task.id,
            task.attempt,
            task.queue,
            task.run_id or "",
            self._writer.reporter(task.id),
            sink,
            self._kept.sink(task.id),
        )
        token = task.lease_token or ""
        assert self.keeper is not None
        self.keeper.hold(task.id, token)
        slot = Slot(self._free_slot)
        executor = self._executors.choose(task.kind or self._kind, task.payload)
        in_child = executor is self._executors.processes
        self._pace.started(in_child)
        job = asyncio.get_running_loop().create_task(
            self._execute(task, context, slot, executor), name=f"omniq-task-{task.id}"
        )
        # Cleanup is a done-callback, not a ``finally``: a job cancelled before its first step
        # (a cancel or a lost lease right after the claim) never runs its body.
        job.add_done_callback(partial(self._ended, task.id, token, context, slot, in_child))
        self.by_task[task.id] = Run(job, context, token, task)
        logger.info("task %s %s started (attempt %d of %d)", task.id, task.name, task.attempt, task.max_attempts)

    def abandon(self, task_id: str, why: str) -> None:
        """Stop the task's run, or drop it if it waits (cancelled, or its lease lost), storing no outcome."""
        if task_id in self.waiting:
            task = self._drop(task_id)
            logger.info("task %s attempt %d: %s before it started", task_id, task.attempt, why)
        run = self.by_task.pop(task_id, None)
        if run is not None:
            logger.info("task %s attempt %d: %s", task_id, run.task.attempt, why)
            run.context.cancel()
            run.job.cancel()

    async def slot_freed(self) -> None:
        """Wait until a slot is freed (or ``wake_all`` is called)."""
        self._slot_free.clear()
        await self._slot_free.wait()

    async def gather_free(self, window: float) -> int:
        """Wait up to ``window`` seconds for half the slots to be free; return how many are (fewer, larger claims)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window
        while self.free < self._pace.slots() // 2 and (left := deadline - loop.time()) > 0:
            self._slot_free.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_free.wait(), left)
        return self.free

    def wake_all(self) -> None:
        """Wake whoever waits for a free slot (the pool is stopping)."""
        self._slot_free.set()

    async def interrupt(self, timeout: float, name: str) -> tuple[dict[str, str], list[Task]]:
        """Wait up to ``timeout`` for runs to end, then cancel the rest (and wait up to ``timeout`` again).

        Args:
            timeout: seconds to wait each time.
            name: the pool's name, for the log.

        Returns:
            The interrupted runs to hand back (``{task_id: lease_token}``), and the tasks of the
            ``at_most_once`` ones, which must not run again.
        """
        jobs = [r.job for r in self.by_task.values()]
        if jobs:
            await asyncio.wait(jobs, timeout=timeout)
        interrupted = {task_id: r.token for task_id, r in self.by_task.items() if not r.task.at_most_once}
        never_again = [r.task for r in self.by_task.values() if r.task.at_most_once]
        for run in list(self.by_task.values()):
            run.context.cancel()
            run.job.cancel()
        cancelled = [r.job for r in self.by_task.values()]
        if cancelled:  # bounded: an async task may swallow its cancel and run on
            _, left = await asyncio.wait(cancelled, timeout=timeout)
            if left:
                logger.warning("worker %s: %d task(s) ignored their cancel; handing them back", name, len(left))
        return interrupted, never_again

    def _task_output(self, task: Task) -> OutputSink | None:
        """Return where the task's output goes (this process's streams if the router fails)."""
        if self._output is None:
            return None
        try:
            return self._output(task)
        except Exception:
            logger.exception("task %s: routing its output failed; it goes to this process's streams", task.id)
            return None

    async def _execute(self, task: Task, context: TaskContext, slot: Slot, executor: Executor) -> None:
        started = time.monotonic()
        try:
            inputs = task_inputs(task.depends_on, await self._read(task.depends_on)) if task.depends_on else None
            stored = await self._callables.body(task.payload)
        except Exception as exc:  # the store is unreachable: this attempt fails, retryable
            logger.warning("task %s: could not read its function or its dependencies' results: %s", task.id, exc)
            self._writer.record(task, failed(exc, task.attempt), time.monotonic() - started)
            return
        stopped = unmet(task, inputs)
        if stopped is not None:  # retried by hand, or a kept result gone: it must not run
            self._writer.record(task, stopped, time.monotonic() - started)
            return
        call = Call(
            task_id=task.id,
            attempt=task.attempt,
            queue=task.queue,
            run_id=context.run_id,
            payload=task.payload,
            timeout=task.timeout,
            inputs=inputs,
            stored=stored,
        )
        outcome = await executor.run(call, context, slot)
        seconds = time.monotonic() - started
        self._pace.ran(seconds)
        await self._kept.settle(task.id)  # what it wrote is stored before its outcome
        self._writer.record(task, outcome, seconds)

    def _ended(self, task_id: str, token: str, context: TaskContext, slot: Slot, in_child: bool, _: object) -> None:
        self._pace.ended(in_child)
        run = self.by_task.get(task_id)
        if run is not None and run.context is context:
            del self.by_task[task_id]
        assert self.keeper is not None
        if not self._writer.holds(task_id, token):  # else the writer releases it once the outcome is stored
            self.keeper.release(task_id, token)  # only this run's lease: a newer one stays renewed
        slot.release()

    def _free_slot(self) -> None:
        self.busy -= 1
        self._start_waiting()
        self._slot_free.set()

    def _start_waiting(self) -> None:
        while self.waiting:
            task, _ = next(iter(self.waiting.values()))
            if not self._pace.may_start(task, self.busy):
                return
            del self.waiting[task.id]
            self.launch(task)

    def _in_a_child(self, task: Task) -> bool:
        return self._executors.choose(task.kind or self._kind, task.payload) is self._executors.processes

    def _drop(self, task_id: str) -> Task:
        """Take a task out of the waiting ones and stop renewing its lease; return it."""
        task, _ = self.waiting.pop(task_id)
        assert self.keeper is not None
        self.keeper.release(task_id, task.lease_token or "")
        return task
