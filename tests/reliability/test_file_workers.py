"""Promises of CLI workers on a file store folder: exactly once, rescue after kill -9, fencing of a paused worker.

- 3 CLI workers drain 2,000 tasks: every task runs exactly once, at attempt 1.
- A worker killed (``SIGKILL``) mid-task: its lease lapses, another worker rescues the task
  and runs it exactly once more.
- A worker killed while it holds the store lock (an exclusive ``flock`` seen in
  ``/proc/locks``): the kernel drops the lock with the process, and the others go on.
- A worker paused (``SIGSTOP``) past its lease is rescued by another; once resumed it can
  write nothing: the rescuer's outcome stands.
- Workers (thread, async, process) killed again and again while tasks flow, at random moments
  or while they hold the store lock: no task is lost, a task ran more than once only for
  attempts whose worker was killed, no attempt ran twice, and ``check()`` is ok at the end.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import harness
import pytest
from harness import DRAIN_WAIT, START_WAIT, Processes

from omniq_nb import OmniQ, TaskStatus
from omniq_nb.models import TaskResult
from omniq_nb.storage import open_storage

pytestmark = [pytest.mark.slow]

PROBES = 3000  # tries to catch a worker holding the store lock


@pytest.fixture
def furl(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'queue'}"


def holds_store_lock(pid: int, folder: Path) -> bool:
    """Return whether process ``pid`` holds the file store's lock now (its flock, read from ``/proc/locks``)."""
    try:
        lock = os.stat(folder / "lock")
    except FileNotFoundError:
        return False
    inode = f"{os.major(lock.st_dev):02x}:{os.minor(lock.st_dev):02x}:{lock.st_ino}"
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        if (fields[1], fields[3], fields[4], fields[5]) == ("FLOCK", "WRITE", str(pid), inode):
            return True
    return False


def test_three_cli_workers_run_two_thousand_tasks_exactly_once(
    procs: Processes, furl: str, tmp_path: Path, wait_until_sync: Any
) -> None:
    log = tmp_path / "runs.log"
    for _ in range(3):
        procs.worker(furl, concurrency=8, lease=10)
    with OmniQ(db_url=furl) as q:
        group = q.enqueue_many(harness.run_once, [(str(log),)] * 2000)
        wait_until_sync(lambda: q.check().counts[TaskStatus.SUCCEEDED] == 2000, timeout=DRAIN_WAIT)
        ids = set(group.ids)
    runs = harness.runs(log)
    per_task = Counter(run.task_id for run in runs)
    assert set(per_task) == ids
    assert [task_id for task_id, n in per_task.items() if n > 1] == []
    assert {run.attempt for run in runs} == {1}
    assert len({run.pid for run in runs}) == 3, "every worker took a share"


def test_a_task_whose_worker_is_killed_mid_task_runs_once_more_after_the_lease(
    procs: Processes, furl: str, tmp_path: Path, wait_until_sync: Any
) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    doomed = procs.worker(furl, concurrency=1, lease=1)
    with OmniQ(db_url=furl) as q:
        handle = q.enqueue_call(harness.gated, args=(str(log), str(gate)), retries=2)
        wait_until_sync(lambda: [r.attempt for r in harness.runs(log)] == [1], timeout=START_WAIT)
        doomed.kill9()
        gate.touch()
        rescuer = procs.worker(furl, concurrency=1, lease=5)
        assert handle.result(timeout=DRAIN_WAIT) == [2, rescuer.pid]
        assert [r.attempt for r in harness.runs(log)] == [1, 2]  # the killed run, then exactly one more
        task = q.get(handle.id).task
        assert (task.status, task.attempt) == (TaskStatus.SUCCEEDED, 2)


def test_a_worker_killed_while_it_holds_the_store_lock_stops_no_one(
    procs: Processes, furl: str, tmp_path: Path, wait_until_sync: Any
) -> None:
    log, folder = tmp_path / "runs.log", tmp_path / "queue"
    rng = random.Random()
    doomed = procs.worker(furl, concurrency=4, lease=2)
    with OmniQ(db_url=furl) as q:
        group = q.enqueue_many(harness.run_once, [(str(log), 0.01)] * 300, retries=3)
        caught = False
        for _ in range(PROBES):
            doomed.signal(signal.SIGSTOP)
            wait_until_sync(lambda: harness.stopped(doomed.pid), timeout=30)
            if holds_store_lock(doomed.pid, folder):
                caught = True
                break
            doomed.signal(signal.SIGCONT)
            time.sleep(rng.uniform(0.0, 0.005))  # picks the next moment at random: not a wait for a condition
        assert caught, "the worker was never caught holding the store lock"
        doomed.kill9()
        procs.worker(furl, concurrency=4, lease=5)
        assert len(group.result(timeout=DRAIN_WAIT)) == 300
    per_task = Counter(run.task_id for run in harness.runs(log))
    assert set(per_task) == set(group.ids)


async def _writes_with(url: str, task_id: str, token: str) -> tuple[list[object], bool, set[str]]:
    async with open_storage(url) as store:
        late = TaskResult(task_id=task_id, lease_token=token, status=TaskStatus.FAILED)
        settled = await store.settle([late])
        progressed = await store.progress(task_id=task_id, lease_token=token, done=1, total=2, message="late")
        renewed = await store.renew(leases={task_id: token}, lease=30)
    return settled, progressed, renewed


def test_a_paused_worker_past_its_lease_can_write_nothing(
    procs: Processes, furl: str, tmp_path: Path, wait_until_sync: Any
) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    paused = procs.worker(furl, concurrency=1, lease=2)
    with OmniQ(db_url=furl) as q:
        task_id = q.enqueue_call(harness.gated, args=(str(log), str(gate)), retries=1).id
        wait_until_sync(lambda: [r.attempt for r in harness.runs(log)] == [1], timeout=START_WAIT)
        paused.signal(signal.SIGSTOP)
        old_token = q.get(task_id).task.lease_token
        assert old_token
        rescuer = procs.worker(furl, concurrency=1, lease=30)
        wait_until_sync(lambda: [r.attempt for r in harness.runs(log)] == [1, 2], timeout=60)
        gate.touch()
        wait_until_sync(lambda: q.get(task_id).done(), timeout=60)
        rescued = q.get(task_id).task
        assert (rescued.status, rescued.attempt) == ("succeeded", 2)
        assert q.get(task_id).result(timeout=10) == [2, rescuer.pid]
        assert asyncio.run(_writes_with(furl, task_id, old_token)) == ([], False, set())
        paused.signal(signal.SIGCONT)
        wait_until_sync(lambda: len(harness.runs(Path(f"{log}.end"))) == 2, timeout=60)
        assert paused.terminate() == 0
        after = q.get(task_id).task
        assert (after.status, after.attempt, after.result) == ("succeeded", 2, rescued.result)


KILLS = 4
BATCH = 100


class Killer:
    """Kill workers with ``kill -9``, at a random moment or while they hold the store lock; remember whom."""

    def __init__(self, folder: Path, rng: random.Random, wait: Any) -> None:
        self.folder, self.rng, self.wait = folder, rng, wait
        self.killed: set[int] = set()  # workers and their child processes
        self.holding_lock = 0

    def kill(self, worker: harness.Child, *, inside_the_lock: bool) -> None:
        if not inside_the_lock:
            time.sleep(self.rng.uniform(0.0, 0.15))  # picks the kill moment at random: not a wait for a condition
        for _ in range(PROBES if inside_the_lock else 1):
            worker.signal(signal.SIGSTOP)  # a stopped worker starts no child: the list taken next is complete
            self.wait(lambda: harness.stopped(worker.pid), timeout=30)
            if not inside_the_lock or holds_store_lock(worker.pid, self.folder):
                self.holding_lock += inside_the_lock
                break
            worker.signal(signal.SIGCONT)
            time.sleep(self.rng.uniform(0.0, 0.005))  # picks the next moment at random: not a wait for a condition
        else:
            worker.signal(signal.SIGSTOP)
            self.wait(lambda: harness.stopped(worker.pid), timeout=30)
        children = harness.children_of(worker.pid)
        worker.kill9()
        self.killed.update({worker.pid, *children})
        self.wait(lambda: all(map(harness.gone, children)), timeout=60)


def test_kill_9_at_random_moments_and_inside_the_lock_loses_no_task_and_reruns_only_killed_attempts(
    procs: Processes, furl: str, tmp_path: Path, wait_until_sync: Any
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    log, ids = tmp_path / "runs.log", []
    killer = Killer(tmp_path / "queue", rng, wait_until_sync)
    with OmniQ(db_url=furl) as q:
        for life in range(KILLS):
            worker = procs.worker(furl, concurrency=4, lease=3, kind=("thread", "async", "process")[life % 3])
            calls = [(str(log), rng.choice((0.0, 0.01, 0.03))) for _ in range(BATCH)]
            ids += q.enqueue_many(harness.run_once, calls, retries=KILLS + 1).ids  # a task may meet every kill
            wait_until_sync(lambda w=worker: any(r.ran_in({w.pid}) for r in harness.runs(log)), timeout=START_WAIT)
            killer.kill(worker, inside_the_lock=life % 2 == 1)
        survivor = procs.worker(furl, concurrency=4, lease=3)
        wait_until_sync(lambda: q.check().counts[TaskStatus.SUCCEEDED] == len(ids), timeout=DRAIN_WAIT)
        assert survivor.terminate() == 0
        results = {task_id: q.get(task_id).result(timeout=10) for task_id in ids}
        stored = {task_id: q.get(task_id).attempt for task_id in ids}
        health = q.check()
    assert health.ok, f"seed {seed}: {health.problems}"
    assert killer.holding_lock > 0, f"seed {seed}: no worker was caught holding the store lock"
    by_task = harness.runs_by_task(log)
    for task_id in ids:
        runs = by_task[task_id]
        attempts = [run.attempt for run in runs]
        assert len(attempts) == len(set(attempts)), f"seed {seed}: an attempt of {task_id} ran twice: {runs}"
        [final] = [run for run in runs if run.attempt == stored[task_id]]
        assert results[task_id] == [final.attempt, final.pid], f"seed {seed}: {task_id}"
        earlier = [run for run in runs if run.attempt != stored[task_id]]
        assert all(run.ran_in(killer.killed) for run in earlier), f"seed {seed}: {task_id} re-ran without a kill"
    assert max(stored.values()) > 1, f"seed {seed}: no kill interrupted an attempt (the scenario tested nothing)"
