"""Promise: a worker whose PostgreSQL server goes away keeps its tasks, says so once, and resumes.

A private server (its own data folder and port) is stopped with ``pg_ctl stop -m fast``
while a CLI worker runs tasks of a few seconds, and started again: the worker logs one
"lost" line and one "back" line, its running tasks go on, their outcomes are stored once
the server answers, and every task ran exactly once. On the shared server, the worker's own
connections (found by their ``application_name``, which names this test's schema) are
killed with ``pg_terminate_backend`` while it works: nothing is lost or run twice either.
And when the outage outlasts a lease, the worker, alive all along, renews it once the server
is back: its task is neither rescued nor run again.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import harness
import psycopg
import pytest
from harness import DRAIN_WAIT, START_WAIT, Processes
from postgres_server import POSTGRES_URL, PrivateServer, postgres_schema, private_server

from omniq_nb import OmniQ

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TASKS = 12
SECONDS = 2.0  # each task runs this long: some are always running when the server goes
LOST = r"lost its store"
BACK = r"reached its store \S+ again"


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    with private_server() as started:
        yield started


def enqueue(url: str, log: Path) -> list[str]:
    with OmniQ(db_url=url) as q:
        return q.enqueue_many(harness.run_once, [(str(log), SECONDS)] * TASKS, retries=2).ids


def check_each_ran_once(url: str, log: Path, ids: list[str]) -> None:
    with OmniQ(db_url=url) as q:
        results = {task_id: q.get(task_id).result(timeout=DRAIN_WAIT) for task_id in ids}
    runs = harness.runs(log)
    assert Counter(run.task_id for run in runs) == Counter(ids), f"a task ran twice or never: {runs}"
    assert all(results[run.task_id] == [1, run.pid] for run in runs)


def count(worker: harness.Child, pattern: str) -> int:
    return len(re.findall(pattern, worker.text()))


def test_a_server_restart_mid_run_costs_no_task_and_two_log_lines(
    procs: Processes, server: PrivateServer, tmp_path: Path, wait_until_sync
) -> None:
    url, log = f"{server.url}?schema=jobs", tmp_path / "runs.log"
    ids = enqueue(url, log)
    worker = procs.worker(url, concurrency=4, lease=60)  # the leases outlast the outage
    wait_until_sync(lambda: len(harness.runs(log)) >= 4, timeout=START_WAIT)

    server.stop()  # every session is cut while four tasks run
    wait_until_sync(lambda: worker.says(LOST), timeout=60)
    server.start()
    wait_until_sync(lambda: worker.says(BACK), timeout=90)

    check_each_ran_once(url, log, ids)
    assert (count(worker, LOST), count(worker, BACK)) == (1, 1), worker.text()[-4000:]
    noise = [line for line in worker.text().splitlines() if "error connecting" in line or "Traceback" in line]
    assert not noise, noise[:5]  # no line per failed retry
    assert worker.terminate() == 0


def test_killing_the_workers_connections_costs_no_task(procs: Processes, tmp_path: Path, wait_until_sync) -> None:
    log = tmp_path / "runs.log"
    with postgres_schema() as schema:
        url = f"{POSTGRES_URL}?schema={schema}"
        mine = f"{url}&application_name=omniq-test"  # this test's own connections are left alone
        ids = enqueue(mine, log)
        worker = procs.worker(url, concurrency=4, lease=30)
        for round_ in (1, 2):  # twice: a replaced connection is killed again
            wait_until_sync(lambda r=round_: len(harness.runs(log)) >= 4 * r, timeout=START_WAIT)
            assert terminate(f"omniq-nb/{schema}") > 0
        check_each_ran_once(mine, log, ids)
        assert count(worker, LOST) == count(worker, BACK) <= 2, worker.text()[-4000:]
        assert worker.terminate() == 0


def terminate(application_name: str) -> int:
    """Kill every backend of the shared server named ``application_name`` (this test's worker only)."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchall()
    return len(rows)


def test_an_outage_longer_than_the_lease_costs_the_worker_none_of_its_tasks(
    procs: Processes, server: PrivateServer, tmp_path: Path, wait_until_sync
) -> None:
    """The store saw the lease run out during the outage, but the worker is alive and still runs the task:
    once the server is back it renews the lease (its own upkeep never rescues a lease it renews, and
    rescues nothing for one lease after the outage), and the attempt's outcome is the one stored."""
    url, log, gate = f"{server.url}?schema=jobs", tmp_path / "runs.log", tmp_path / "gate"
    with OmniQ(db_url=url) as q:
        task_id = q.enqueue_call(harness.gated, args=(str(log), str(gate)), retries=2).id
    worker = procs.worker(url, concurrency=2, lease=2)
    wait_until_sync(lambda: [r.attempt for r in harness.runs(log)] == [1], timeout=START_WAIT)

    server.stop()
    wait_until_sync(lambda: worker.says(LOST), timeout=60)  # takes longer than the 2 s lease
    server.start()

    def renewed() -> bool:
        with psycopg.connect(server.url, autocommit=True) as conn:
            row = conn.execute("SELECT attempt, lease_until > extract(epoch from now()) FROM jobs.tasks").fetchone()
        return row == (1, True)

    wait_until_sync(renewed, timeout=90)
    wait_until_sync(lambda: worker.says(BACK), timeout=90)
    gate.touch()

    with OmniQ(db_url=url) as q:
        assert q.get(task_id).result(timeout=DRAIN_WAIT)[0] == 1
        task = q.get(task_id).task
    assert (task.status, task.attempt) == ("succeeded", 1)
    wait_until_sync(lambda: len(harness.runs(Path(f"{log}.end"))) == 1, timeout=60)
    assert [r.attempt for r in harness.runs(log)] == [1]
    assert not worker.says("lease ran out") and not worker.says("discarded"), worker.text()[-4000:]
    assert count(worker, LOST) == 1
    assert worker.terminate() == 0
