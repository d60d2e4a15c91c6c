"""Standalone ``omniq-nb worker`` processes sharing one SQLite file.

Each test starts real worker processes (killed in the fixture's teardown whatever happens),
enqueues from this process through ``OmniQ``, and waits on stored state, files written by
tasks, or log lines, always with a bounded timeout. Task functions come from
``worker_tasks``, which the workers import through ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import worker_tasks as wt
from processes import Child, Processes

from omniq_nb import EventKind, OmniQ, TaskStatus

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
WaitSync = Callable[..., Any]
START_WAIT = 60.0  # seconds for a worker process to start (imports on a loaded machine)
RESULT_WAIT = 60.0


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shared.db'}"


@pytest.fixture
def spawn(tmp_path: Path, url: str, wait_until_sync: WaitSync) -> Iterator[Callable[..., Child]]:
    """Start worker processes on ``url`` and wait until each serves; all are killed at teardown."""
    workers = Processes(tmp_path, wait_until_sync)

    def start(*, concurrency: int = 1, lease: float = 1.0, kind: str = "thread", module: bool = False) -> Child:
        program = [sys.executable, "-m", "omniq_nb"] if module else [str(BIN / "omniq-nb")]
        return workers.worker(
            url, concurrency=concurrency, lease=lease, kind=kind, program=program, start_wait=START_WAIT
        )

    try:
        yield start
    finally:
        workers.close()


@pytest.fixture
def q(url: str) -> Iterator[OmniQ]:
    with OmniQ(db_url=url, poll_interval=0.05) as queue:
        yield queue


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_three_workers_run_ten_thousand_tasks_exactly_once(
    q: OmniQ, spawn: Callable[..., Child], tmp_path: Path
) -> None:
    total, chunk = 10_000, 1_000
    folder = tmp_path / "done"
    folder.mkdir()
    workers = [spawn(concurrency=8, lease=10) for _ in range(3)]
    ids: list[str] = []
    for start in range(0, total, chunk):  # the workers drain while the producer still enqueues
        group = q.enqueue_many(wt.create_once, [(str(folder), n) for n in range(start, start + chunk)])
        ids.extend(group.ids)
    assert len(set(ids)) == total

    assert q.results(ids, timeout=120) == list(range(total))

    assert sorted(int(p.name) for p in folder.iterdir()) == list(range(total))
    tasks = q.list(limit=2 * total)
    assert len(tasks) == total
    assert Counter(t.status for t in tasks) == {TaskStatus.SUCCEEDED: total}
    assert {t.attempt for t in tasks} == {1}, "a task was claimed more than once"
    by_worker = Counter(t.worker for t in tasks)
    assert len(by_worker) == 3, f"not every worker took part: {by_worker}"
    assert all(w.process.poll() is None for w in workers)


def test_sigkill_mid_task_another_worker_finishes_it(
    q: OmniQ, spawn: Callable[..., Child], tmp_path: Path, wait_until_sync: WaitSync
) -> None:
    folder = tmp_path / "runs"
    first = spawn(lease=1)
    h = q.enqueue_call(wt.long_on_first_attempt, args=(str(folder),), retries=2)
    wait_until_sync(lambda: read(folder / "start-1") == str(first.pid), timeout=RESULT_WAIT)
    rescuer = spawn(lease=1)
    assert q.get(h.id).status == "running"

    os.kill(first.pid, signal.SIGKILL)
    first.process.wait(30)

    assert h.result(timeout=RESULT_WAIT) == rescuer.pid
    task = q.get(h.id).task
    assert task.status is TaskStatus.SUCCEEDED
    assert task.attempt == 2
    assert read(folder / "start-2") == str(rescuer.pid)
    assert not (folder / "end-1").exists()
    kinds = [e.kind for e in q.events(task_id=h.id)]
    assert kinds.count(EventKind.STARTED) == 2
    assert kinds[-1] is EventKind.SUCCEEDED


def test_paused_worker_loses_its_lease_and_its_late_result_is_rejected(
    q: OmniQ, spawn: Callable[..., Child], tmp_path: Path, wait_until_sync: WaitSync
) -> None:
    folder = tmp_path / "runs"
    paused = spawn(lease=1)
    h = q.enqueue_call(wt.long_on_first_attempt, args=(str(folder), 3.0), retries=2)
    wait_until_sync(lambda: read(folder / "start-1") == str(paused.pid), timeout=RESULT_WAIT)
    rescuer = spawn(lease=1)

    os.kill(paused.pid, signal.SIGSTOP)
    try:
        assert h.result(timeout=RESULT_WAIT) == rescuer.pid
        rescued = q.get(h.id).task
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    assert rescued.attempt == 2

    # The paused worker resumes: its attempt finishes (end-1) and its outcome must be refused.
    wait_until_sync(lambda: (folder / "end-1").exists(), timeout=RESULT_WAIT)
    refused = re.compile(rf"task {h.id}(: outcome \S+ discarded| attempt 1: lease lost)")
    wait_until_sync(lambda: refused.search(paused.text()), timeout=RESULT_WAIT)
    assert paused.process.poll() is None

    task = q.get(h.id).task
    assert task.status is TaskStatus.SUCCEEDED
    assert task.attempt == 2
    assert task.worker == rescued.worker
    assert q.result(h.id, timeout=RESULT_WAIT) == rescuer.pid
    assert [e.kind for e in q.events(task_id=h.id)].count(EventKind.SUCCEEDED) == 1


def test_a_task_blocking_its_loop_keeps_its_lease(q: OmniQ, spawn: Callable[..., Child], tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    workers = [spawn(lease=1), spawn(lease=1)]
    h = q.enqueue(wt.async_block_loop, str(folder), 3.0)

    ran_in = h.result(timeout=RESULT_WAIT)

    assert ran_in in {w.pid for w in workers}
    assert read(folder / "runs").splitlines() == [str(ran_in)], "the task ran more than once"
    task = q.get(h.id).task
    assert task.status is TaskStatus.SUCCEEDED
    assert task.attempt == 1
    kinds = [e.kind for e in q.events(task_id=h.id)]
    assert kinds.count(EventKind.STARTED) == 1
    assert EventKind.RETRIED not in kinds
    for worker in workers:
        assert "ran out" not in worker.text(), worker.text()


def test_sigterm_stops_the_worker_gracefully_and_it_logged_each_task(q: OmniQ, spawn: Callable[..., Child]) -> None:
    worker = spawn(concurrency=2, lease=5)
    handles = [q.enqueue(wt.add, n, n) for n in range(3)]
    assert [h.result(timeout=RESULT_WAIT) for h in handles] == [0, 2, 4]

    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(30) == 0

    log = worker.text()
    for h in handles:
        assert f"task {h.id} worker_tasks.add started (attempt 1 of 1)" in log, log
        assert re.search(rf"task {h.id} succeeded in [0-9.]+ s", log), log
    assert "Traceback" not in log


def test_sigint_lets_a_running_task_finish_before_exit(
    q: OmniQ, spawn: Callable[..., Child], tmp_path: Path, wait_until_sync: WaitSync
) -> None:
    folder, gate = tmp_path / "runs", tmp_path / "gate"
    worker = spawn(lease=5, module=True)  # python -m omniq_nb worker
    h = q.enqueue(wt.gated, str(folder), "job", str(gate))
    wait_until_sync(lambda: (folder / "job.start").exists(), timeout=RESULT_WAIT)

    worker.process.send_signal(signal.SIGINT)
    wait_until_sync(lambda: "stopping worker" in worker.text(), timeout=RESULT_WAIT)
    gate.touch()
    assert worker.process.wait(30) == 0

    assert h.result(timeout=RESULT_WAIT) == "job"
    task = q.get(h.id).task
    assert task.attempt == 1
    assert f"task {h.id} succeeded in" in worker.text()


def test_a_handed_back_task_keeps_its_attempt_but_runs_under_a_new_run_id(
    q: OmniQ, spawn: Callable[..., Child], tmp_path: Path, wait_until_sync: WaitSync
) -> None:
    """Promise: SIGTERM hands a started task back without using an attempt; ``run_id`` tells the runs apart."""
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    first = spawn(lease=5)
    h = q.enqueue(wt.log_run_then_wait, str(log), str(gate))
    wait_until_sync(lambda: len(read(log).splitlines()) == 1, timeout=RESULT_WAIT)

    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(30) == 0
    handed_back = q.get(h.id).task
    assert (handed_back.status, handed_back.attempt) == ("pending", 0)

    spawn(lease=5)
    wait_until_sync(lambda: len(read(log).splitlines()) == 2, timeout=RESULT_WAIT)
    gate.touch()
    second_run = h.result(timeout=RESULT_WAIT)
    (attempt_1, run_1), (attempt_2, run_2) = (line.split() for line in read(log).splitlines())
    assert attempt_1 == attempt_2 == "1"
    assert run_1 != run_2 == second_run == q.get(h.id).task.run_id
    started = [e.run_id for e in q.events(task_id=h.id) if e.kind == "started"]
    assert started == [run_1, run_2]
