"""Child processes of process pools: one that exits fails only its attempt; a dead idle one is replaced.

While runs are quick, a child holds a second call in line behind the running one: a call in
line runs in another child if its own dies or is stopped first; one cancelled in line is
skipped; an at-most-once task never waits in line, nor does a thread task.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import polling
import pytest
import worker_tasks as wt
from pool_helpers import stored
from processes import Processes

import omniq_nb as omniq
from omniq_nb import AsyncOmniQ, AsyncWorkerPool, EventKind, TaskStatus, TaskTimeout, WorkerLost
from omniq_nb.context import TaskContext
from omniq_nb.serialization import BlobSerializer
from omniq_nb.worker.calls import Call
from omniq_nb.worker.child import ChildProcess

pytestmark = pytest.mark.anyio

RESULT_WAIT = 30.0  # seconds a test waits for a result at most (generous: a loaded 2-core machine)


async def test_a_child_that_exits_fails_only_that_attempt(q: AsyncOmniQ, tmp_path: Path) -> None:
    async with AsyncWorkerPool(q, concurrency=1, kind="process", lease=5):
        lost = await q.enqueue(wt.exit_hard, str(tmp_path / "exited"))
        after = await q.enqueue(wt.add, 5, 6)
        with pytest.raises(WorkerLost) as info:
            await lost.result(timeout=RESULT_WAIT)
        assert await after.result(timeout=RESULT_WAIT) == 11
        again = await q.enqueue_call(wt.exit_on_first_attempt, retries=1)
        assert await again.result(timeout=RESULT_WAIT) == 2
    assert "lost" in info.value.error.message
    assert info.value.error.attempt == 1
    task = await stored(q, lost.id)
    assert task.status is TaskStatus.FAILED
    assert task.attempt == 1
    assert (await stored(q, again.id)).attempt == 2


async def test_a_dead_idle_child_process_is_replaced(
    tmp_path: Path, wait_until: Callable[..., Awaitable[None]]
) -> None:
    async with (
        omniq.AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'q.db'}", poll_interval=0.05) as q,
        omniq.AsyncWorkerPool(q, concurrency=1, kind="process", lease=5) as pool,
    ):
        child = await (await q.enqueue(wt.pid)).result(timeout=30)
        os.kill(child, signal.SIGKILL)  # dies while idle, between tasks
        children = pool._executors.processes.children
        await wait_until(lambda: not any(c.alive for c in children), timeout=15)  # gone, not dying
        fresh = await (await q.enqueue(wt.pid)).result(timeout=30)
        assert fresh != child


Wait = Callable[..., Awaitable[None]]


async def in_line_behind(pool: AsyncWorkerPool, wait_until: Wait) -> ChildProcess:
    """Return the one child once it holds both calls (the first runs, the second waits in line)."""
    children = pool._executors.processes.children
    await wait_until(lambda: any(child.load == 2 for child in children), timeout=RESULT_WAIT)
    [child] = children
    return child


@contextlib.asynccontextmanager
async def quick_pool(q: AsyncOmniQ) -> AsyncIterator[AsyncWorkerPool]:
    """Yield a one-process pool that ran enough quick calls to see its runs as quick (the first started the child)."""
    async with AsyncWorkerPool(q, concurrency=1, kind="process", lease=5) as pool:
        assert await (await q.enqueue_many(wt.add, [(i, 1) for i in range(40)])).result(timeout=RESULT_WAIT)
        yield pool


async def test_a_call_in_line_behind_a_child_that_exits_runs_in_another(
    q: AsyncOmniQ, tmp_path: Path, wait_until: Wait
) -> None:
    gate = tmp_path / "gate"
    async with quick_pool(q) as pool:
        lost = await q.enqueue(wt.exit_at_gate, str(gate))
        queued = await q.enqueue(wt.pid)
        child = await in_line_behind(pool, wait_until)
        gate.touch()
        with pytest.raises(WorkerLost):
            await lost.result(timeout=RESULT_WAIT)
        assert await queued.result(timeout=RESULT_WAIT) != child._process.pid
    task = await stored(q, queued.id)
    assert (task.status, task.attempt) == (TaskStatus.SUCCEEDED, 1)  # it never began in the child that exited


async def test_a_call_in_line_behind_one_that_times_out_runs_in_another(
    q: AsyncOmniQ, tmp_path: Path, wait_until: Wait
) -> None:
    async with quick_pool(q) as pool:
        slow = await q.enqueue_call(wt.wait_for_gate_only, args=(str(tmp_path / "never"),), timeout=3)
        queued = await q.enqueue(wt.pid)
        child = await in_line_behind(pool, wait_until)
        with pytest.raises(TaskTimeout):
            await slow.result(timeout=RESULT_WAIT)
        assert await queued.result(timeout=RESULT_WAIT) != child._process.pid
        assert not child.alive


async def test_a_call_cancelled_in_line_is_skipped_and_the_child_runs_on(
    q: AsyncOmniQ, tmp_path: Path, wait_until: Wait
) -> None:
    gate, began = tmp_path / "gate", tmp_path / "began"
    async with quick_pool(q) as pool:
        running = await q.enqueue(wt.wait_for_gate_only, str(gate))
        cancelled = await q.enqueue(wt.sleep_in_process, str(began), 60)
        child = await in_line_behind(pool, wait_until)
        assert await cancelled.cancel()
        assert child.alive and child.load == 2  # the first call runs on; the cancelled one waits for its answer
        gate.touch()
        assert await running.result(timeout=RESULT_WAIT) == "gate"
        await wait_until(lambda: child.load == 0, timeout=RESULT_WAIT)  # the child answered "skipped"
        assert await (await q.enqueue(wt.pid)).result(timeout=RESULT_WAIT) == child._process.pid
    assert not began.exists()
    assert (await stored(q, cancelled.id)).status is TaskStatus.CANCELLED
    assert (await stored(q, running.id)).status is TaskStatus.SUCCEEDED


async def handed_back(q: AsyncOmniQ, task_id: str) -> bool:
    """Return whether the pool gave the claimed task back to the queue unstarted."""
    return any(event.kind is EventKind.RELEASED for event in await q.storage.events(task_id=task_id))


async def test_an_at_most_once_task_never_waits_in_line(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    """Were this process to die, a call waiting in line would be failed without having run."""
    gate = tmp_path / "gate"
    async with quick_pool(q) as pool:
        running = await q.enqueue(wt.wait_for_gate_only, str(gate))
        await wait_until(lambda: running.status is TaskStatus.RUNNING, timeout=RESULT_WAIT)
        once = await q.enqueue_call(wt.pid, at_most_once=True)
        await wait_until(lambda: handed_back(q, once.id), timeout=RESULT_WAIT)
        [child] = pool._executors.processes.children
        assert child.load == 1
        gate.touch()
        assert await running.result(timeout=RESULT_WAIT) == "gate"
        assert await once.result(timeout=RESULT_WAIT) == child._process.pid
    assert (await stored(q, once.id)).attempt == 1


def children_of(pid: int) -> list[int]:
    """Return the ids of the processes ``pid`` started (Linux)."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def test_a_child_killed_under_load_fails_at_most_the_call_it_ran(
    q: AsyncOmniQ, db_url: str, workers: Processes, wait_until: Wait
) -> None:
    """kill -9 of one child of an ``omniq-nb worker --kind process`` while its children hold calls in line.

    Every task but the one that child was running (if any) still succeeds, on its first attempt.
    """
    group = await q.enqueue_many(wt.pause, [(0.002,)] * 600)
    worker = workers.worker(db_url, concurrency=2, kind="process")
    await wait_until(lambda: sum(h.done() for h in group) >= 100, timeout=RESULT_WAIT)
    children = children_of(worker.pid)
    assert len(children) == 2, children
    os.kill(children[0], signal.SIGKILL)
    await wait_until(lambda: all(h.done() for h in group), timeout=120)
    failed = [h for h in group if h.status is TaskStatus.FAILED]
    assert len(failed) <= 1, [h.task.error for h in failed]
    assert all(h.task.error is not None and h.task.error.type.endswith("WorkerLost") for h in failed)
    succeeded = [h for h in group if h.status is TaskStatus.SUCCEEDED]
    assert len(succeeded) + len(failed) == 600
    assert all(h.task.attempt == 1 for h in succeeded)
    assert worker.alive(), worker.text()


def plain_call(serializer: BlobSerializer, run_id: str, fn: Callable[..., Any], *args: Any) -> tuple[Call, TaskContext]:
    """Return a call of ``fn(*args)`` without a time-out, and its context."""
    payload = serializer.dump_call(fn, args, {})
    call = Call(task_id=run_id, attempt=1, queue="default", run_id=run_id, payload=payload, timeout=None)
    return call, TaskContext(run_id, 1, "default", run_id)


async def test_a_cancel_read_after_the_answer_stops_nothing_else(tmp_path: Path, wait_until: Wait) -> None:
    """The first call ended and the second began while the loop was busy: cancelling the first stops nothing.

    The parent reads what the child answered before it decides: the call running now is the
    second one, which must go on (terminating the child would run it again elsewhere).
    """
    serializer, began = BlobSerializer(), tmp_path / "began"
    child = ChildProcess(None, lambda: None)
    try:
        first = asyncio.ensure_future(child.run(*plain_call(serializer, "a", wt.pid)))
        second = asyncio.ensure_future(child.run(*plain_call(serializer, "b", wt.sleep_in_process, str(began), 60)))
        await wait_until(lambda: child.load == 2, timeout=RESULT_WAIT)
        polling.wait_until_sync(began.exists, timeout=RESULT_WAIT)  # holds the loop: the first answer waits unread
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert child.alive and child.load == 1
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert not child.alive
    finally:
        child.terminate()


async def test_a_thread_task_in_a_process_pool_starts_only_in_a_free_slot(
    q: AsyncOmniQ, tmp_path: Path, wait_until: Wait
) -> None:
    """Only process calls wait in line in a child: the pool's threads run no more than its concurrency."""
    gate = tmp_path / "gate"
    async with quick_pool(q) as pool:
        running = await q.enqueue(wt.wait_for_gate_only, str(gate))
        await wait_until(lambda: running.status is TaskStatus.RUNNING, timeout=RESULT_WAIT)
        threaded = await q.enqueue_call(wt.add, args=(2, 3), kind="thread")
        await wait_until(lambda: pool._runs.holds(threaded.id), timeout=RESULT_WAIT)
        assert threaded.id not in pool._runs.by_task  # claimed, waiting for the slot
        gate.touch()
        assert await running.result(timeout=RESULT_WAIT) == "gate"
        assert await threaded.result(timeout=RESULT_WAIT) == 5


async def test_a_large_call_waits_for_an_idle_child(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    """A call larger than the socket's buffer is never sent to a busy child.

    The send would hold the loop until the child read it, after its running call, whose own
    large answer the held loop could then never read.
    """
    gate, size = tmp_path / "gate", 5 * 1024 * 1024
    async with quick_pool(q) as pool:
        running = await q.enqueue(wt.large_after_gate, str(gate), size)
        await wait_until(lambda: running.status is TaskStatus.RUNNING, timeout=RESULT_WAIT)
        large = await q.enqueue(wt.size_of, b"a" * size)
        await wait_until(lambda: pool._runs.holds(large.id), timeout=RESULT_WAIT)
        [child] = pool._executors.processes.children
        assert child.load == 1
        gate.touch()
        assert len(await running.result(timeout=RESULT_WAIT)) == size
        assert await large.result(timeout=RESULT_WAIT) == size


async def test_a_process_call_runs_beside_no_other_run_beyond_the_concurrency(
    q: AsyncOmniQ, tmp_path: Path, wait_until: Wait
) -> None:
    """A process call starts beyond the concurrency only to wait in line: not while a thread task holds the slot."""
    gate = tmp_path / "gate"
    async with quick_pool(q) as pool:
        threaded = await q.enqueue_call(wt.wait_for_gate_only, args=(str(gate),), kind="thread")
        await wait_until(lambda: threaded.status is TaskStatus.RUNNING, timeout=RESULT_WAIT)
        process = await q.enqueue(wt.pid)
        await wait_until(lambda: pool._runs.holds(process.id), timeout=RESULT_WAIT)
        assert process.id not in pool._runs.by_task  # it waits for the slot (the child is idle: it would run now)
        gate.touch()
        assert await threaded.result(timeout=RESULT_WAIT) == "gate"
        assert await process.result(timeout=RESULT_WAIT) == pool._executors.processes.children[0]._process.pid
