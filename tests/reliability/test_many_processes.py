"""Promise: 8 processes enqueue and 2 workers run at once: every task is visible to every process and runs once.

Eight producer processes enqueue (single tasks and groups) on one file while two worker
processes drain it; each producer's handles get the results of the run (through events
written by the workers); then every producer looks up every task of all eight (``get``) and
finds it succeeded, and the run log shows exactly one run per task, attempt 1, in a worker.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import harness
from harness import DRAIN_WAIT, START_WAIT, Processes

PRODUCERS = 8
PER_PRODUCER = 150


def test_eight_producers_and_two_workers_share_one_file(
    procs: Processes, db: Path, url: str, tmp_path: Path, wait_until_sync
) -> None:
    log, out = tmp_path / "runs.log", tmp_path / "out"
    out.mkdir()
    workers = [procs.worker(url, concurrency=4, lease=10) for _ in range(2)]
    producers = [procs.script("produce", url, str(log), str(out), f"p{n}", str(PER_PRODUCER)) for n in range(PRODUCERS)]
    wait_until_sync(lambda: len(list(out.glob("ids-*"))) == PRODUCERS, timeout=START_WAIT + DRAIN_WAIT)
    seen = [line.split() for f in sorted(out.glob("ids-*")) for line in f.read_text().splitlines()]
    ids = [task_id for task_id, _, _ in seen]
    assert len(ids) == len(set(ids)) == PRODUCERS * PER_PRODUCER
    assert harness.counts(db) == {"succeeded": len(ids)}

    (out / "check").touch()
    wait_until_sync(lambda: len(list(out.glob("missing-*"))) == PRODUCERS, timeout=60)
    for report in sorted(out.glob("missing-*")):
        total, *missing = report.read_text().split("\n")
        assert (int(total), [m for m in missing if m]) == (len(ids), []), f"{report.name}: not visible or not done"
    for producer in producers:
        assert producer.process.wait(timeout=60) == 0, producer.text()

    runs = harness.runs(log)
    assert Counter(run.task_id for run in runs) == Counter(ids), "a task ran twice or never"
    ran = {run.task_id: (run.attempt, run.pid) for run in runs}
    assert {task_id: (int(a), int(p)) for task_id, a, p in seen} == ran, "a producer's handle saw another result"
    assert {run.attempt for run in runs} == {1}
    assert {run.pid for run in runs} <= {w.pid for w in workers}
    assert set(harness.statuses(db)) == set(ids)
    for worker in workers:
        assert worker.terminate() == 0
    assert harness.healthy(db) == "ok"
