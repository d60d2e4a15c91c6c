"""Calls queued in a child process behind the one it runs: each ends as if it had had the child to itself.

``ProcessExecutor`` with one child gets several calls at once (as a process pool sends them
ahead while runs are quick): they run in order; a child killed, cancelled or timed out fails
only the call it ran, and the calls queued behind it run in a new child; a queued call's
timeout counts from its own start; output and progress go to the call that made them. A
process pool sends calls ahead only while runs are quick, and never ``at_most_once`` ones.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import worker_tasks as wt

from omniq_nb import AsyncOmniQ, AsyncWorkerPool
from omniq_nb.context import Progress, TaskContext
from omniq_nb.errors import TaskTimeout, WorkerLost, type_name
from omniq_nb.serialization import BlobSerializer
from omniq_nb.worker.calls import Call, Outcome, Slot
from omniq_nb.worker.executors import ProcessExecutor

pytestmark = pytest.mark.anyio

WAIT = 30.0  # seconds any step waits at most (a loaded 2-core machine)
_serializer = BlobSerializer()
Wait = Callable[..., Awaitable[None]]


def call(n: int, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Call:
    payload = _serializer.dump_call(fn, args, {})
    return Call(task_id=f"t{n}", attempt=1, queue="default", run_id=f"r{n}", payload=payload, timeout=timeout)


class Seen:
    """What one call's context received: progress reports and writes."""

    def __init__(self, n: int) -> None:
        self.progress: list[Progress] = []
        self.output: list[tuple[str, Any]] = []
        self.context = TaskContext(f"t{n}", 1, "default", f"r{n}", self.progress.append, self._out)

    def _out(self, kind: str, payload: Any) -> None:
        self.output.append((kind, payload))


def start(executor: ProcessExecutor, calls: list[Call]) -> tuple[list[asyncio.Task[Outcome]], list[Seen]]:
    """Start every call at once, in order (they queue in the executor's one child)."""
    seen = [Seen(i) for i in range(len(calls))]
    runs = [
        asyncio.ensure_future(executor.run(c, s.context, Slot(lambda: None))) for c, s in zip(calls, seen, strict=True)
    ]
    return runs, seen


def value(outcome: Outcome) -> Any:
    assert outcome.error is None, outcome.error
    assert outcome.result is not None
    return _serializer.loads(outcome.result)


async def test_a_killed_child_fails_only_the_call_it_ran(tmp_path: Path, wait_until: Wait) -> None:
    executor = ProcessExecutor(None, 1)
    marker = tmp_path / "running"
    try:
        runs, _ = start(executor, [call(0, wt.sleep_in_process, str(marker)), call(1, wt.add, 1, 2), call(2, wt.pid)])
        await wait_until(marker.exists, timeout=WAIT)  # it runs
        child = executor.children[0]._process.pid
        assert executor.children[0].load == 3  # all three were sent to the one child
        os.kill(child, signal.SIGKILL)
        lost, added, fresh = await asyncio.wait_for(asyncio.gather(*runs), WAIT)
    finally:
        executor.close()
    assert lost.raised == (type_name(WorkerLost),)
    assert value(added) == 3  # queued behind it: run again in a new child, not failed
    assert value(fresh) not in (child, os.getpid())


async def test_a_cancelled_queued_call_is_skipped_and_the_running_one_goes_on(tmp_path: Path, wait_until: Wait) -> None:
    executor = ProcessExecutor(None, 1)
    gate, skipped = tmp_path / "gate", tmp_path / "skipped"
    try:
        runs, _ = start(
            executor,
            [call(0, wt.gated, str(tmp_path), "first", str(gate)), call(1, wt.touch, str(skipped)), call(2, wt.pid)],
        )
        await wait_until(lambda: (tmp_path / "first.start").exists(), timeout=WAIT)
        child = executor.children[0]
        runs[1].cancel()
        gate.touch()
        first, pid = await asyncio.wait_for(asyncio.gather(runs[0], runs[2]), WAIT)
    finally:
        executor.close()
    assert value(first) == "first"
    assert not skipped.exists()  # never ran
    assert value(pid) == child._process.pid  # the same child ran the call after the skipped one: it was not ended


async def test_a_queued_call_times_out_from_its_own_start(tmp_path: Path, wait_until: Wait) -> None:
    executor = ProcessExecutor(None, 1)
    gate = tmp_path / "gate"
    try:
        runs, _ = start(
            executor,
            [
                call(0, wt.gated, str(tmp_path), "first", str(gate)),
                call(1, wt.add, 2, 3, timeout=2.0),  # quick once it starts, however long it queued
                call(2, wt.sleep_in_process, str(tmp_path / "slow"), timeout=0.5),
                call(3, wt.add, 4, 5),
            ],
        )
        await wait_until(lambda: (tmp_path / "first.start").exists(), timeout=WAIT)
        await asyncio.sleep(2.5)  # the second call queues longer than its timeout
        gate.touch()
        first, second, slow, last = await asyncio.wait_for(asyncio.gather(*runs), WAIT)
    finally:
        executor.close()
    assert value(first) == "first"
    assert value(second) == 5
    assert slow.raised == (type_name(TaskTimeout),)
    assert value(last) == 9  # behind the timed-out call: run in a new child


async def test_calls_queued_behind_a_long_call_go_to_a_free_child(tmp_path: Path) -> None:
    executor = ProcessExecutor(None, 2)
    gate = tmp_path / "gate"
    try:
        runs, _ = start(
            executor, [call(0, wt.gated, str(tmp_path), "long", str(gate)), call(1, wt.pid), call(2, wt.pid)]
        )
        await asyncio.sleep(0)  # one turn of the loop: the three runs send their calls
        first, second = executor.children
        assert (first.load, second.load) == (2, 1)  # the third call queued behind the first
        assert value(await asyncio.wait_for(runs[2], WAIT)) == second._process.pid  # taken back, run by the other
        assert not runs[0].done()
        gate.touch()
        assert value(await asyncio.wait_for(runs[0], WAIT)) == "long"
        assert value(await asyncio.wait_for(runs[1], WAIT)) == second._process.pid
        assert executor.children == [first, second]  # nobody was terminated
    finally:
        executor.close()


async def test_output_and_progress_of_queued_calls_go_to_their_own_context(tmp_path: Path) -> None:
    executor = ProcessExecutor(None, 1)
    try:
        runs, seen = start(
            executor, [call(n, wt.chatter, n + 1) for n in range(3)] + [call(3, wt.progress_in_steps, str(tmp_path), 1)]
        )
        (tmp_path / "go1").touch()
        outcomes = await asyncio.wait_for(asyncio.gather(*runs), WAIT)
    finally:
        executor.close()
    assert [value(o) for o in outcomes] == [1, 2, 3, 1]
    for n in range(3):
        printed = "".join(text for kind, text in seen[n].output if kind == "stdout")
        assert printed == "".join(f"line {i}\n" for i in range(n + 1))
    assert seen[3].progress == [Progress(1, 1, "step 1")]


def spy_on_sends(pool: AsyncWorkerPool, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record, for each call the pool's process executor sends, how many its child already had."""
    loads: list[int] = []
    executor = pool._executors.processes
    pick = executor._child

    def recording_pick() -> Any:
        child = pick()
        loads.append(child.load)
        return child

    monkeypatch.setattr(executor, "_child", recording_pick)
    return loads


async def test_a_process_pool_of_quick_runs_sends_calls_ahead_but_not_at_most_once_ones(
    q: AsyncOmniQ, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with AsyncWorkerPool(q, concurrency=1, kind="process", lease=5) as pool:
        loads = spy_on_sends(pool, monkeypatch)
        handles = await q.enqueue_many(wt.add, [(i, 1) for i in range(200)])
        assert await handles.result(timeout=WAIT) == [i + 1 for i in range(200)]
        assert max(loads) > 1  # queued behind the running call in the one child
        loads.clear()
        handles = await q.enqueue_many(wt.add, [(i, 2) for i in range(50)], at_most_once=True)
        assert await handles.result(timeout=WAIT) == [i + 2 for i in range(50)]
        assert loads and max(loads) == 0  # each waited for the child to be idle
    assert {t.attempt for t in await q.list(limit=1000)} == {1}  # each ran once
