"""Promise: ``omniq-nb worker --kind gevent`` runs sync tasks as overlapping greenlets, with every kind's rules.

A real worker process (``tests/processes.py``) on a SQLite file (and a PostgreSQL schema)
runs 200 tasks that each wait 0.2 s, on a socket or in ``time.sleep``: all succeed, and the
start/end times the tasks log show many running at once. Time-outs, retries, cancels and
progress of a running greenlet behave as on the other kinds, and a timed-out or cancelled
greenlet really stops (it records what stopped it). In this process (not patched at start)
a gevent pool is refused with the command to run instead, and other pools never claim a
``kind="gevent"`` task.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import gevent_tasks as gt
import pytest
import worker_tasks as wt
from postgres_server import POSTGRES_URL, postgres_schema
from processes import Child, Processes

from omniq_nb import AsyncOmniQ, ConfigError, OmniQ, TaskStatus, TaskTimeout
from omniq_nb.launch import asks_for_gevent_worker
from omniq_nb.notebook.view_text import status_text
from omniq_nb.terminal import format_task
from omniq_nb.worker import AsyncWorkerPool, WorkerPool

pytestmark = pytest.mark.anyio

BIN = Path(sys.executable).parent
Wait = Callable[..., Any]
TASKS = 200
NAP = 0.2
RESULT_WAIT = 60.0
START_WAIT = 60.0


def gevent_worker(
    workers: Processes, url: str, *, concurrency: int = 500, lease: float = 5.0, script: bool = False
) -> Child:
    """Start ``python -m omniq_nb worker --kind gevent`` (or the ``omniq-nb`` console script) on ``url``."""
    program = [str(BIN / "omniq-nb")] if script else [sys.executable, "-m", "omniq_nb"]
    return workers.worker(url, concurrency=concurrency, lease=lease, kind="gevent", program=program)


def most_at_once(folder: Path) -> int:
    """Return the most tasks whose logged ``start end`` intervals overlap at one instant."""
    edges: list[tuple[float, int]] = []
    for path in folder.iterdir():
        start, end = map(float, path.read_text().split())
        edges += [(start, 1), (end, -1)]
    running = most = 0
    for _, step in sorted(edges):  # at a tie an end (-1) sorts first: touching intervals do not overlap
        running += step
        most = max(most, running)
    return most


def read(path: Path | str) -> str:
    return Path(path).read_text()


def logged(folder: Path) -> int:
    return len(list(folder.iterdir()))


async def run_overlapping(q: AsyncOmniQ, folder: Path) -> None:
    await anyio.Path(folder).mkdir()
    group = await q.enqueue_many(gt.nap_and_log, [(str(folder), n, NAP) for n in range(TASKS)], kind="gevent")
    ran_on = await group.result(timeout=RESULT_WAIT)
    assert len(ran_on) == TASKS and set(ran_on) == {"omniq-gevent-hub"}  # greenlets of the hub's thread
    assert logged(folder) == TASKS
    assert most_at_once(folder) >= 50  # 32 threads could never overlap this many; greenlets overlap ~all


@pytest.mark.slow
async def test_200_waiting_tasks_run_at_once_on_sqlite(
    q: AsyncOmniQ, db_url: str, workers: Processes, tmp_path: Path
) -> None:
    gevent_worker(workers, db_url, script=True)  # the console script patches as python -m does
    await run_overlapping(q, tmp_path / "runs")


@pytest.mark.slow
@pytest.mark.postgres
async def test_200_waiting_tasks_run_at_once_on_postgres(workers: Processes, tmp_path: Path) -> None:
    with postgres_schema() as schema:
        url = f"{POSTGRES_URL}?schema={schema}"
        async with AsyncOmniQ(db_url=url, poll_interval=0.05) as q:  # creates the schema before the worker
            gevent_worker(workers, url)
            await run_overlapping(q, tmp_path / "runs")


@pytest.mark.slow
async def test_timeout_retry_and_progress_of_greenlets(
    q: AsyncOmniQ, db_url: str, workers: Processes, tmp_path: Path, wait_until: Wait
) -> None:
    gevent_worker(workers, db_url, concurrency=8)
    marker = str(tmp_path / "slow")
    slow = await q.enqueue_call(gt.sleep_until_stopped, args=(marker,), timeout=0.5, kind="gevent")
    flaky = await q.enqueue_call(wt.flaky, args=(str(tmp_path / "count"), 2), retries=2, kind="gevent")
    careless = await q.enqueue_call(gt.sleep_swallowing_errors, args=(30.0,), timeout=0.5, kind="gevent")
    gate = tmp_path / "gate"
    reporter = await q.enqueue_call(gt.report_progress, args=(str(gate), 5), kind="gevent")

    with pytest.raises(TaskTimeout):
        await slow.result(timeout=RESULT_WAIT)
    assert read(marker + ".ended") == "Timeout"  # gevent.Timeout stopped the greenlet itself
    with pytest.raises(TaskTimeout):  # gevent.Timeout is no Exception: "except Exception" cannot swallow it
        await careless.result(timeout=RESULT_WAIT)
    assert await flaky.result(timeout=RESULT_WAIT) == 3
    assert (await q.storage.get(flaky.id)).attempt == 3

    async def reported() -> bool:
        task = await q.storage.get(reporter.id)
        return task is not None and task.progress_message == "greenlet progress" and task.progress == 1.0

    await wait_until(reported, timeout=RESULT_WAIT)
    gate.touch()
    assert await reporter.result(timeout=RESULT_WAIT) == 5


@pytest.mark.slow
async def test_a_greenlet_that_never_waits_is_failed_at_its_timeout_all_the_same(
    q: AsyncOmniQ, db_url: str, workers: Processes
) -> None:
    gevent_worker(workers, db_url, concurrency=4)
    busy = await q.enqueue_call(gt.compute, args=(4.0,), timeout=0.3, kind="gevent")
    with pytest.raises(TaskTimeout):  # failed about a second past its timeout, while it still computes
        await busy.result(timeout=RESULT_WAIT)
    after = await q.enqueue_call(wt.add, args=(1, 2), kind="gevent")  # once it yields, the hub serves on
    assert await after.result(timeout=RESULT_WAIT) == 3


@pytest.mark.slow
async def test_a_cancelled_running_greenlet_is_killed(
    q: AsyncOmniQ, db_url: str, workers: Processes, tmp_path: Path, wait_until: Wait
) -> None:
    gevent_worker(workers, db_url, concurrency=4, lease=1.5)
    marker = tmp_path / "running"
    handle = await q.enqueue_call(gt.sleep_until_stopped, args=(str(marker),), kind="gevent")
    await wait_until(marker.exists, timeout=RESULT_WAIT)
    assert await q.cancel(handle.id)
    ended = Path(f"{marker}.ended")
    await wait_until(ended.exists, timeout=RESULT_WAIT)  # the worker learns it at its next lease renewal
    assert read(ended) == "GreenletExit"
    assert (await q.storage.get(handle.id)).status is TaskStatus.CANCELLED
    after = await q.enqueue_call(wt.add, args=(1, 2), kind="gevent")  # the worker serves on
    assert await after.result(timeout=RESULT_WAIT) == 3


@pytest.mark.slow
async def test_a_gevent_worker_runs_the_other_kinds_where_they_ask(
    q: AsyncOmniQ, db_url: str, workers: Processes
) -> None:
    worker = gevent_worker(workers, db_url, concurrency=8)
    ran = {}
    for kind in ("thread", "process", "async", "gevent", None):
        handle = await q.enqueue_call(gt.where, kind=kind)
        ran[kind] = await handle.result(timeout=RESULT_WAIT)
        assert ran[kind]["task_id"] == handle.id  # omniq.current() inside, a greenlet's included
    coroutine = await (await q.enqueue_call(gt.async_where, kind="gevent")).result(timeout=RESULT_WAIT)
    assert ran["process"]["pid"] != worker.pid  # a child process, started over gevent's patched sockets
    assert {ran[kind]["pid"] for kind in ("thread", "async", "gevent", None)} == {worker.pid}
    assert ran["thread"]["thread"].startswith("omniq-task-")
    assert ran["gevent"]["thread"] == ran[None]["thread"] == "omniq-gevent-hub"  # the pool's kind by default
    assert coroutine["thread"] == ran["async"]["thread"] == "MainThread"  # on the pool's loop
    assert "Traceback" not in worker.text()


@pytest.mark.slow
async def test_a_stopping_gevent_worker_hands_its_running_greenlets_back(
    q: AsyncOmniQ, db_url: str, workers: Processes, tmp_path: Path, wait_until: Wait
) -> None:
    worker = gevent_worker(workers, db_url, concurrency=4)
    marker = tmp_path / "running"
    handle = await q.enqueue_call(gt.sleep_until_stopped, args=(str(marker),), kind="gevent")
    await wait_until(marker.exists, timeout=RESULT_WAIT)
    assert await anyio.to_thread.run_sync(worker.terminate) == 0  # waits STOP_TIMEOUT, then interrupts
    assert read(f"{marker}.ended") == "GreenletExit"
    task = await q.storage.get(handle.id)
    assert task is not None and task.status is TaskStatus.PENDING and task.attempt == 0  # the attempt given back


async def test_a_gevent_pool_is_refused_in_a_process_not_patched_at_start(q: AsyncOmniQ) -> None:
    with pytest.raises(ConfigError, match="omniq-nb worker --kind gevent"):
        AsyncWorkerPool(q, kind="gevent")


def test_the_blocking_twin_refuses_a_gevent_pool_too(db_url: str) -> None:
    with OmniQ(db_url=db_url) as q, pytest.raises(ConfigError, match="omniq-nb worker --kind gevent"):
        WorkerPool(q, kind="gevent")


@pytest.mark.parametrize(
    ("argv", "default", "patches"),
    [
        (["python", "-m", "omniq_nb", "worker", "--kind", "gevent"], None, True),
        (["python", "-X", "dev", "-momniq_nb", "--db-url", "x", "worker", "--kind=gevent"], None, True),
        (["/venv/bin/python", "/venv/bin/omniq-nb", "worker", "-c", "500", "--ki", "gevent"], None, True),
        (["python", "/venv/bin/omniq-nb", "worker"], "gevent", True),
        (["python", "/venv/bin/omniq-nb", "worker", "--kind", "thread"], "gevent", False),
        (["python", "/venv/bin/omniq-nb", "list", "--queue", "gevent"], None, False),
        (["python", "-m", "pytest", "worker", "--kind", "gevent"], None, False),
        (["python", "-m", "ipykernel_launcher", "-f", "kernel.json"], "gevent", False),
        (["python", "-c", "import omniq_nb", "worker", "--kind", "gevent"], None, False),
    ],
)
def test_only_omniq_nb_worker_kind_gevent_is_patched(argv: list[str], default: str | None, patches: bool) -> None:
    assert asks_for_gevent_worker(argv, default) is patches


async def test_other_pools_leave_gevent_tasks_pending(q: AsyncOmniQ) -> None:
    waiting = await q.enqueue_call(wt.add, args=(1, 1), kind="gevent")
    async with AsyncWorkerPool(q, concurrency=2, kind="thread"):
        assert await (await q.enqueue(wt.add, 2, 2)).result(timeout=RESULT_WAIT) == 4
        assert await (await q.enqueue_call(wt.add, args=(3, 3), kind="async")).result(timeout=RESULT_WAIT) == 6
    task = await q.storage.get(waiting.id)
    assert task is not None and task.status is TaskStatus.PENDING and task.attempt == 0
    assert status_text(task) == "pending: waits for a gevent worker (omniq-nb worker --kind gevent)"
    assert "pending (waits for a gevent worker: omniq-nb worker --kind gevent)" in format_task(task)  # omniq-nb show
