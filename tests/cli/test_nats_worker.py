"""Real ``omniq-nb worker`` processes on a NATS prefix run what an ``AsyncOmniQ`` here enqueues."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import worker_tasks as wt
from nats_server import NATS_URL, nats_prefix
from processes import Processes, child_env

from omniq_nb import AsyncOmniQ, TaskStatus

pytestmark = [pytest.mark.anyio, pytest.mark.nats, pytest.mark.slow]

WaitSync = Callable[..., Any]


@pytest.fixture
def url() -> Iterator[str]:
    with nats_prefix() as prefix:
        yield f"{NATS_URL}?prefix={prefix}"


async def test_a_cli_worker_runs_tasks_enqueued_here(url: str, workers: Processes) -> None:
    async with AsyncOmniQ(db_url=url, poll_interval=0.05) as q:
        worker = workers.worker(url, concurrency=4, lease=5, program=(sys.executable, "-m", "omniq_nb"))
        one = await q.enqueue(wt.add, 1, 2)
        many = await q.enqueue_many(wt.add, [(n, n) for n in range(20)])
        coroutine = await q.enqueue(wt.async_add, 20, 22)
        assert await one.result(timeout=60) == 3
        assert await many.result(timeout=60) == [2 * n for n in range(20)]
        assert await coroutine.result(timeout=60) == 42
        done = await q.storage.get(one.id)
        assert done is not None and done.status is TaskStatus.SUCCEEDED and done.worker
        assert [w.pid for w in await q.workers()] == [worker.pid]
        assert worker.alive()


async def test_a_task_whose_worker_is_killed_is_rescued_and_runs_once_more(
    url: str, workers: Processes, tmp_path: Path, wait_until_sync: WaitSync
) -> None:
    """SIGKILL mid-task: the lease lapses, another worker rescues the task and runs it exactly once more."""
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    async with AsyncOmniQ(db_url=url, poll_interval=0.05) as q:
        doomed = workers.worker(url, concurrency=1, lease=1)
        handle = await q.enqueue_call(wt.log_run_then_wait, args=(str(log), str(gate)), retries=2)
        wait_until_sync(lambda: log.exists() and len(log.read_text().splitlines()) == 1, timeout=60)
        doomed.kill9()
        gate.touch()
        workers.worker(url, concurrency=1, lease=1)
        run_id = await handle.result(timeout=90)
        runs = [line.split() for line in log.read_text().splitlines()]
        assert [attempt for attempt, _ in runs] == ["1", "2"]  # the killed run, then exactly one more
        assert runs[1][1] == run_id != runs[0][1]
        task = await q.storage.get(handle.id)
        assert task is not None and (task.status, task.attempt) == (TaskStatus.SUCCEEDED, 2)


async def test_check_reports_an_existing_store_and_refuses_a_missing_one(url: str) -> None:
    async with AsyncOmniQ(db_url=url):
        pass  # the store exists: check never creates one
    command = [sys.executable, "-m", "omniq_nb", "check", "--db-url", url]
    done = await anyio.run_process(command, env=child_env(), check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0] == f"store     {url}" and lines[-1] == "ok"
    with nats_prefix() as missing:
        command = [sys.executable, "-m", "omniq_nb", "check", "--db-url", f"{NATS_URL}?prefix={missing}"]
        done = await anyio.run_process(command, env=child_env(), check=False)
    assert done.returncode != 0
    assert "no omniq store" in (done.stdout + done.stderr).decode()
