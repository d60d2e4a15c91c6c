"""Promise: a notebook-style process (queue + pool) and a CLI worker stopped and restarted run every task once.

One process enqueues a stream of tasks and runs an in-process ``WorkerPool`` (as a notebook
does); meanwhile a CLI worker is stopped with SIGTERM (a graceful handback) and restarted
several times. Every task runs exactly once (attempt 1: a handback gives the attempt back)
and is visible everywhere: in that process, in this one, in a fresh connection and in
``omniq-nb list``.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import harness
from harness import DRAIN_WAIT, START_WAIT, Processes

from omniq_nb import OmniQ

RESTARTS = 4


def test_notebook_pool_and_restarted_cli_worker_run_every_task_once(
    procs: Processes, db: Path, url: str, tmp_path: Path, wait_until_sync
) -> None:
    log, out = tmp_path / "runs.log", tmp_path / "out"
    out.mkdir()
    notebook = procs.script("notebook", url, str(log), str(out))
    wait_until_sync(lambda: notebook.says("^serving"), timeout=START_WAIT)
    cli_pids = []
    for _ in range(RESTARTS):
        worker = procs.worker(url, concurrency=4, lease=10)
        cli_pids.append(worker.pid)
        wait_until_sync(lambda w=worker: any(r.pid == w.pid for r in harness.runs(log)), timeout=START_WAIT)
        assert worker.terminate() == 0, worker.text()
        assert "stopped" in worker.text()
    (out / "stop").touch()
    wait_until_sync(lambda: notebook.says("^all succeeded"), timeout=DRAIN_WAIT)
    assert notebook.process.wait(timeout=60) == 0, notebook.text()

    ids = (out / "ids").read_text().split()
    runs = harness.runs(log)
    assert Counter(run.task_id for run in runs) == Counter(ids), "a task ran twice or never"
    assert {run.attempt for run in runs} == {1}, "a graceful stop used an attempt"
    assert {run.pid for run in runs} <= {notebook.pid, *cli_pids}
    assert harness.statuses(db) == dict.fromkeys(ids, "succeeded")
    with OmniQ(db_url=url) as q:
        assert {q.get(i).result(timeout=10)[0] for i in ids} == {1}
    listing = subprocess.run(
        [sys.executable, "-m", "omniq_nb", "--db-url", url, "list", "--limit", str(len(ids))],
        capture_output=True,
        text=True,
        timeout=120,
        env=harness.child_env(),
    )
    assert listing.returncode == 0, listing.stderr
    listed = [line.split() for line in listing.stdout.splitlines()[1:]]
    assert {row[0]: row[1] for row in listed} == dict.fromkeys(ids, "succeeded")
    assert harness.healthy(db) == "ok"


def test_sigterm_mid_task_hands_it_back_without_using_an_attempt(
    procs: Processes, db: Path, url: str, tmp_path: Path, wait_until_sync
) -> None:
    """Promise: SIGTERM in the middle of a long task hands it back unharmed: it runs again as attempt 1."""
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    first = procs.worker(url, concurrency=2, lease=10)
    with OmniQ(db_url=url) as q:
        handle = q.enqueue_call(harness.until_gate_or_cancel, args=(str(log), str(gate)))  # retries=0: one attempt
        wait_until_sync(lambda: len(harness.runs(log)) == 1, timeout=START_WAIT)
        assert first.terminate() == 0, first.text()  # waits for the task, then interrupts and hands it back
        assert "handed 1 running task(s) back" in first.text()
        assert harness.query(db, "SELECT status, attempt, lease_token FROM tasks") == [("pending", 0, None)]
        second = procs.worker(url, concurrency=2, lease=10)
        wait_until_sync(lambda: len(harness.runs(log)) == 2, timeout=START_WAIT)
        gate.touch()
        assert handle.result(timeout=60) == [1, second.pid]
    assert [(r.attempt, r.pid) for r in harness.runs(log)] == [(1, first.pid), (1, second.pid)]
    assert harness.query(db, "SELECT status, attempt FROM tasks") == [("succeeded", 1)]
    assert second.terminate() == 0


def test_kill_9_of_a_notebook_process_loses_none_of_its_tasks(
    procs: Processes, db: Path, url: str, tmp_path: Path, wait_until_sync
) -> None:
    """Promise: kill -9 of a notebook-style process loses no task it enqueued; a CLI worker finishes them."""
    log, out = tmp_path / "runs.log", tmp_path / "out"
    out.mkdir()
    notebook = procs.script("notebook", url, str(log), str(out), "--lease", "2")
    wait_until_sync(lambda: notebook.says("^serving"), timeout=START_WAIT)
    worker = procs.worker(url, concurrency=2, lease=10)
    wait_until_sync(lambda: sum(r.pid == notebook.pid for r in harness.runs(log)) >= 10, timeout=START_WAIT)
    notebook.kill9()
    acked = (out / "acked").read_text().split()
    assert acked
    wait_until_sync(lambda: set(harness.statuses(db).values()) == {"succeeded"}, timeout=60)
    assert set(acked) <= set(harness.statuses(db)), "a task whose enqueue returned was lost"
    for task_runs in harness.runs_by_task(log).values():
        assert task_runs[-1].pid == worker.pid or len(task_runs) == 1, task_runs
        assert all(run.pid == notebook.pid for run in task_runs[:-1]), f"re-ran without a kill: {task_runs}"
    assert worker.terminate() == 0
    assert harness.healthy(db) == "ok"
