"""Promise: ``kill -9`` of a worker at any moment (mid-task, mid-claim, mid-commit) loses no task.

Workers are killed again and again while tasks flow, at random moments or in the middle of a
write statement (frozen with SIGSTOP while ``/proc/locks`` shows it holding SQLite's write
lock), some only after they rescued their predecessors' attempts; a new one is started each
time. Meanwhile one monitor reads the file through a fresh connection per poll and another
runs ``omniq-nb list`` again and again. In the end every task succeeded, a task ran more
than once only for attempts whose worker was killed, no attempt ran twice, no child process
(``--kind process``) started a task after its worker died, and ``PRAGMA integrity_check`` is ok.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

import harness
from harness import DRAIN_WAIT, START_WAIT, Lister, Monitor, Processes

from omniq_nb import OmniQ

BATCH = 100  # tasks added before each worker's life, so every life has work
KILLS = 6
PROBES = 3000  # tries to catch a worker inside a write statement
LEASE = 3.0  # short, so killed attempts are rescued soon; long enough for renewals on a loaded machine


class Killer:
    """Kill workers with ``kill -9``, at a random moment or inside a write statement; remember whom."""

    def __init__(self, db: Path, rng: random.Random, wait_until_sync: Any) -> None:
        self.db, self.rng, self.wait = db, rng, wait_until_sync
        self.workers: set[int] = set()  # workers killed
        self.children: set[int] = set()  # their child processes (--kind process)
        self.mid_write = 0

    def at_random(self, worker: harness.Child) -> None:
        time.sleep(self.rng.uniform(0.0, 0.15))  # picks the kill moment at random: not a wait for a condition
        self._freeze(worker)
        self._kill_frozen(worker)

    def inside_a_write(self, worker: harness.Child) -> None:
        """Freeze the worker at random moments until it holds the write lock, then kill it there."""
        for _ in range(PROBES):
            self._freeze(worker)
            if harness.holds_write_lock(worker.pid, self.db):
                self.mid_write += 1
                break
            worker.signal(signal.SIGCONT)
            time.sleep(self.rng.uniform(0.0, 0.005))  # picks the next moment at random: not a wait for a condition
        else:
            self._freeze(worker)
        self._kill_frozen(worker)

    def holding(self) -> list[str]:
        """Return the ids of running tasks claimed by a killed worker (not rescued yet)."""
        rows = harness.query(self.db, "SELECT id, worker FROM tasks WHERE status = 'running'")
        return [task_id for task_id, name in rows if int(name.split(":")[1]) in self.workers]

    def _freeze(self, worker: harness.Child) -> None:
        worker.signal(signal.SIGSTOP)  # a stopped worker starts no child: the list taken next is complete
        self.wait(lambda: harness.stopped(worker.pid), timeout=30)

    def _kill_frozen(self, worker: harness.Child) -> None:
        children = harness.children_of(worker.pid)
        worker.kill9()
        self.workers.add(worker.pid)
        self.children.update(children)
        self.wait(lambda: all(map(harness.gone, children)), timeout=60)  # no orphan runs on


def test_kill_9_at_random_moments_loses_no_task_and_reruns_only_killed_attempts(
    procs: Processes, db: Path, url: str, tmp_path: Path, wait_until_sync
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    log = tmp_path / "runs.log"
    ids: list[str] = []
    seen_total = [0]

    def consistent(seen: dict[str, int]) -> str | None:
        acknowledged, total = len(ids), sum(seen.values())  # never fewer tasks than acknowledged or seen
        if total < max(acknowledged, seen_total[0]) or set(seen) - {"pending", "running", "succeeded"}:
            return f"the file holds {seen} after {acknowledged} acknowledged, {seen_total[0]} seen"
        seen_total[0] = total
        return None

    killer = Killer(db, rng, wait_until_sync)
    with OmniQ(db_url=url) as q, Monitor(db, consistent) as monitor, Lister(url) as lister:
        for life in range(KILLS):
            worker = procs.worker(url, concurrency=4, lease=LEASE, kind=("thread", "async", "process")[life % 3])
            calls = [(str(log), rng.choice((0.0, 0.01, 0.03))) for _ in range(BATCH)]
            ids.extend(q.enqueue_many(harness.run_once, calls, retries=KILLS + 1).ids)  # a task may meet every kill
            if life % 3 == 2:  # this one lives until its predecessors' attempts were rescued (and re-run)
                wait_until_sync(lambda: not killer.holding(), timeout=START_WAIT)
            wait_until_sync(lambda w=worker: any(r.ran_in({w.pid}) for r in harness.runs(log)), timeout=START_WAIT)
            (killer.inside_a_write if life % 2 else killer.at_random)(worker)
        survivor = procs.worker(url, concurrency=4, lease=LEASE)
        wait_until_sync(lambda: harness.counts(db) == {"succeeded": len(ids)}, timeout=DRAIN_WAIT)
        assert survivor.terminate() == 0
        results = {task_id: q.get(task_id).result(timeout=10) for task_id in ids}
    assert not monitor.problems, f"seed {seed}: {monitor.problems[:5]}"
    assert not lister.problems, f"seed {seed}: {lister.problems[:3]}"
    assert monitor.polls > 0 and lister.runs > 0
    assert killer.mid_write > 0, f"seed {seed}: no worker was caught inside a write statement"
    _check_runs(db, log, results, killer, seed)
    assert harness.healthy(db) == "ok"


def _check_runs(db: Path, log: Path, results: dict[str, Any], killer: Killer, seed: int) -> None:
    """Each task: its stored attempt ran once and gave its result; every other run was in a killed worker."""
    stored = {row[0]: row[1] for row in harness.query(db, "SELECT id, attempt FROM tasks")}
    assert set(stored) == set(results)
    by_task = harness.runs_by_task(log)
    killed = killer.workers | killer.children
    for task_id in results:
        task_runs = by_task[task_id]
        attempts = [run.attempt for run in task_runs]
        assert len(attempts) == len(set(attempts)), f"seed {seed}: an attempt of {task_id} ran twice: {task_runs}"
        final = [run for run in task_runs if run.attempt == stored[task_id]]
        assert len(final) == 1, f"seed {seed}: the stored attempt of {task_id} never ran: {task_runs}"
        assert results[task_id] == [final[0].attempt, final[0].pid], f"seed {seed}: {task_id}"
        earlier = [run for run in task_runs if run.attempt != stored[task_id]]
        assert all(run.ran_in(killed) for run in earlier), f"seed {seed}: {task_id} re-ran without a kill: {task_runs}"
        orphans = [run for run in task_runs if run.pid in killer.children and run.ppid not in killer.workers]
        assert not orphans, f"seed {seed}: a child process started {task_id} after its worker was killed: {orphans}"
    assert max(stored.values()) > 1, f"seed {seed}: no kill interrupted an attempt (the scenario tested nothing)"


def test_a_task_that_kills_its_worker_ends_failed_after_its_attempts(
    procs: Processes, db: Path, url: str, tmp_path: Path, wait_until_sync
) -> None:
    """Promise: a crash loop ends: each death uses an attempt, then the task fails with "worker lost"."""
    log = tmp_path / "runs.log"
    with OmniQ(db_url=url) as q:
        handle = q.enqueue_call(harness.crash, args=(str(log),), retries=2)
        lives = []
        while not q.get(handle.id).done():
            assert len(lives) < 4, "the crash loop did not end after 3 attempts"
            worker = procs.worker(url, concurrency=2, lease=2)
            lives.append(worker)
            wait_until_sync(lambda w=worker: not w.alive() or q.get(handle.id).done(), timeout=START_WAIT)
        task = q.get(handle.id).task
    assert (task.status, task.attempt) == ("failed", 3)
    assert task.error is not None and task.error.type.endswith("WorkerLost") and "lost" in task.error.message
    assert [(r.attempt, r.pid) for r in harness.runs(log)] == [(n, lives[n - 1].pid) for n in (1, 2, 3)]
    assert [w.alive() for w in lives] == [False, False, False, True]
    assert lives[-1].terminate() == 0
    assert harness.healthy(db) == "ok"


def test_an_at_most_once_task_whose_worker_is_killed_fails_and_never_runs_again(
    procs: Processes, db: Path, url: str, tmp_path: Path, wait_until_sync
) -> None:
    """Promise: ``at_most_once``: after kill -9 mid-task the task is failed ("worker lost"), never re-run."""
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    first = procs.worker(url, concurrency=2, lease=2)
    with OmniQ(db_url=url) as q:
        handle = q.enqueue_call(harness.gated, args=(str(log), str(gate)), at_most_once=True, retries=3)
        wait_until_sync(lambda: len(harness.runs(log)) == 1, timeout=START_WAIT)
        first.kill9()
        rescuer = procs.worker(url, concurrency=2, lease=2)
        wait_until_sync(lambda: q.get(handle.id).done(), timeout=60)
        task = q.get(handle.id).task
        gate.touch()
        later = q.enqueue_call(harness.run_once, args=(str(log),))  # the rescuer keeps serving
        assert later.result(timeout=60)[1] == rescuer.pid
    assert (task.status, task.attempt) == ("failed", 1)
    assert task.error is not None and "lost" in task.error.message
    assert [(r.task_id, r.attempt) for r in harness.runs(log)] == [(handle.id, 1), (later.id, 1)]
    assert rescuer.terminate() == 0


def test_a_child_process_never_starts_a_task_after_its_worker_died(
    procs: Processes, db: Path, url: str, tmp_path: Path, wait_until_sync
) -> None:
    """Promise: kill -9 of a process worker while its child starts up: the child never runs the task it was sent."""
    log = tmp_path / "runs.log"
    worker = procs.worker(url, concurrency=1, lease=2, kind="process")
    with OmniQ(db_url=url) as q:
        handle = q.enqueue_call(harness.run_once, args=(str(log),), retries=1)
        wait_until_sync(lambda: harness.children_of(worker.pid), timeout=START_WAIT)
        children = harness.children_of(worker.pid)  # one slot: one child
        worker.kill9()  # the child is still starting its interpreter: its task message is already sent
        wait_until_sync(lambda: all(map(harness.gone, children)), timeout=60)
        started_by_orphans = [run for run in harness.runs(log) if run.pid in children]
        rescuer = procs.worker(url, concurrency=1, lease=2, kind="process")
        assert handle.result(timeout=60)[0] == 2  # the killed attempt counted; the rescuer ran the next
    assert not started_by_orphans, f"a child ran its task after its worker was killed: {started_by_orphans}"
    assert [run.attempt for run in harness.runs(log)] == [2]
    assert rescuer.terminate() == 0
