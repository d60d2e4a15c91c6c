"""Promises of the SQLite reliability suite, on PostgreSQL: kill -9 mid-task, SIGSTOP past the lease, 3 workers.

Real ``omniq-nb worker`` processes on one schema of the test server (the harness of this
folder; the task functions log one line per run):

- a worker killed with ``kill -9`` mid-task: another worker rescues the task once the lease
  ran out (after taking over the maintenance turn, if the dead one held it), runs it again,
  and its result is the one stored;
- a worker paused (``SIGSTOP``) past its lease: the rescuer's outcome stands, and once
  resumed (``SIGCONT``) the paused worker's late writes are all refused;
- three workers draining 10,000 tasks: each task runs exactly once, at attempt 1, and more
  than one worker took part.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest
from harness import DRAIN_WAIT, START_WAIT, Processes
from postgres_server import POSTGRES_URL, postgres_schema, query
from test_sigstop import _writes_with

from omniq_nb import OmniQ

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LEADS = "now runs the store's rescue"
LEFT = "no longer runs the store's rescue"
TASKS = 10_000  # the size: three workers drain them in well under a minute here


@pytest.fixture
def schema() -> Iterator[str]:
    with postgres_schema() as name:
        yield name


@pytest.fixture
def url(schema: str) -> str:
    return f"{POSTGRES_URL}?schema={schema}"


def test_a_task_whose_worker_is_killed_mid_run_is_rescued_and_runs_again_once(
    procs: Processes, url: str, tmp_path: Path, wait_until_sync
) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    first = procs.worker(url, concurrency=2, lease=2)
    with OmniQ(db_url=url) as q:
        handle = q.enqueue_call(harness.gated, args=(str(log), str(gate)), retries=2)
        wait_until_sync(lambda: [r.attempt for r in harness.runs(log)] == [1], timeout=START_WAIT)
        first.kill9()
        gate.touch()  # the next attempt may end at once
        rescuer = procs.worker(url, concurrency=2, lease=2)
        assert handle.result(timeout=DRAIN_WAIT) == [2, rescuer.pid]
        task = q.get(handle.id).task
    assert (task.status, task.attempt) == ("succeeded", 2)
    assert [(r.attempt, r.pid) for r in harness.runs(log)] == [(1, first.pid), (2, rescuer.pid)]
    assert first.says(LEADS) and rescuer.says(LEADS)  # the rescuer took the dead worker's turn
    assert rescuer.terminate() == 0


def test_late_outcome_of_a_resumed_worker_is_rejected(
    procs: Processes, schema: str, url: str, tmp_path: Path, wait_until_sync
) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    paused = procs.worker(url, concurrency=1, lease=2)
    with OmniQ(db_url=url) as q:
        task_id = q.enqueue_call(harness.gated, args=(str(log), str(gate)), retries=1).id
        wait_until_sync(lambda: [r.attempt for r in harness.runs(log)] == [1], timeout=START_WAIT)
        paused.signal(signal.SIGSTOP)
        [(old_token,)] = query(schema, "SELECT lease_token FROM tasks")
        rescuer = procs.worker(url, concurrency=1, lease=30)
        wait_until_sync(lambda: rescuer.says(f"task {task_id} attempt 1: its worker's lease ran out"), timeout=60)
        wait_until_sync(lambda: [r.attempt for r in harness.runs(log)] == [1, 2], timeout=60)
        gate.touch()
        wait_until_sync(lambda: q.get(task_id).done(), timeout=60)
        rescued = q.get(task_id).task
        assert (rescued.status, rescued.attempt) == ("succeeded", 2)

        assert asyncio.run(_writes_with(url, task_id, old_token)) == ([], False, set())  # fenced at the store

        paused.signal(signal.SIGCONT)
        wait_until_sync(lambda: len(harness.runs(Path(f"{log}.end"))) == 2, timeout=60)  # the late attempt ended
        wait_until_sync(
            lambda: paused.says(f"task {task_id}: (outcome \\S+ discarded, the lease was lost|lease lost)"), timeout=60
        )
        assert paused.terminate() == 0
        after = q.get(task_id).task
        assert (after.status, after.attempt, after.result) == ("succeeded", 2, rescued.result)
        assert q.get(task_id).result(timeout=10) == [2, rescuer.pid]
    assert query(schema, "SELECT status, attempt, lease_token FROM tasks") == [("succeeded", 2, None)]


def test_three_workers_run_every_task_exactly_once(
    procs: Processes, schema: str, url: str, tmp_path: Path, wait_until_sync
) -> None:
    log = tmp_path / "runs.log"
    with OmniQ(db_url=url) as q:
        ids = q.enqueue_many(harness.run_once, [(str(log),)] * TASKS).ids
    workers = [procs.worker(url, concurrency=4, lease=10) for _ in range(3)]

    def done() -> bool:
        return query(schema, "SELECT status, count(*) FROM tasks GROUP BY status") == [("succeeded", TASKS)]

    wait_until_sync(done, timeout=DRAIN_WAIT)
    runs = harness.runs(log)
    assert Counter(run.task_id for run in runs) == Counter(ids), "a task ran twice or never"
    assert {run.attempt for run in runs} == {1}
    assert {run.pid for run in runs} <= {w.pid for w in workers}
    assert len({run.pid for run in runs}) > 1, "one worker ran everything: the claim serialised them"
    taken = sum(len(re.findall(LEADS, w.text())) for w in workers)
    released = sum(len(re.findall(LEFT, w.text())) for w in workers)
    assert 1 <= taken <= released + 1, "two workers held the maintenance turn"  # one, unless a slow step lost it
    for worker in workers:
        assert worker.terminate() == 0
