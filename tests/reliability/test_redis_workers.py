"""Promises of CLI workers on a Redis store: exactly once at scale, fencing of a paused worker, killed connections.

- 3 CLI workers drain 10,000 tasks: every task runs exactly once, at attempt 1.
- A worker paused (``SIGSTOP``) past its lease is rescued by another; once resumed it can
  write nothing: the rescuer's outcome stands.
- Every connection of a running worker killed by the server (``CLIENT KILL`` of that
  worker's own connections, found by the client name that carries its pid): it reconnects,
  resubscribes and keeps running tasks.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest
import redis
from harness import DRAIN_WAIT, START_WAIT, Processes
from redis_server import REDIS_URL, redis_prefix

from omniq_nb import OmniQ, TaskStatus
from omniq_nb.models import TaskResult
from omniq_nb.storage import open_storage

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def rurl() -> Iterator[str]:
    with redis_prefix() as prefix:
        yield f"{REDIS_URL}?prefix={prefix}"


def test_three_cli_workers_run_ten_thousand_tasks_exactly_once(
    procs: Processes, rurl: str, tmp_path: Path, wait_until_sync
) -> None:
    log = tmp_path / "runs.log"
    for _ in range(3):
        procs.worker(rurl, concurrency=8, lease=10)
    with OmniQ(db_url=rurl) as q:
        group = q.enqueue_many(harness.run_once, [(str(log),)] * 10_000)
        wait_until_sync(lambda: q.check().counts[TaskStatus.SUCCEEDED] == 10_000, timeout=DRAIN_WAIT)
        ids = set(group.ids)
    runs = harness.runs(log)
    per_task = Counter(run.task_id for run in runs)
    assert set(per_task) == ids
    assert [task_id for task_id, n in per_task.items() if n > 1] == []
    assert {run.attempt for run in runs} == {1}
    assert len({run.pid for run in runs}) == 3, "every worker took a share"


async def _writes_with(url: str, task_id: str, token: str) -> tuple[list[object], bool, set[str]]:
    async with open_storage(url) as store:
        late = TaskResult(task_id=task_id, lease_token=token, status=TaskStatus.FAILED)
        settled = await store.settle([late])
        progressed = await store.progress(task_id=task_id, lease_token=token, done=1, total=2, message="late")
        renewed = await store.renew(leases={task_id: token}, lease=30)
    return settled, progressed, renewed


def test_a_paused_worker_past_its_lease_can_write_nothing(
    procs: Processes, rurl: str, tmp_path: Path, wait_until_sync
) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    paused = procs.worker(rurl, concurrency=1, lease=2)
    with OmniQ(db_url=rurl) as q:
        task_id = q.enqueue_call(harness.gated, args=(str(log), str(gate)), retries=1).id
        wait_until_sync(lambda: [r.attempt for r in harness.runs(log)] == [1], timeout=START_WAIT)
        paused.signal(signal.SIGSTOP)
        old_token = q.get(task_id).task.lease_token
        assert old_token
        rescuer = procs.worker(rurl, concurrency=1, lease=30)
        wait_until_sync(lambda: [r.attempt for r in harness.runs(log)] == [1, 2], timeout=60)
        gate.touch()
        wait_until_sync(lambda: q.get(task_id).done(), timeout=60)
        rescued = q.get(task_id).task
        assert (rescued.status, rescued.attempt) == ("succeeded", 2)
        assert q.get(task_id).result(timeout=10) == [2, rescuer.pid]
        assert asyncio.run(_writes_with(rurl, task_id, old_token)) == ([], False, set())
        paused.signal(signal.SIGCONT)
        wait_until_sync(lambda: len(harness.runs(Path(f"{log}.end"))) == 2, timeout=60)
        assert paused.terminate() == 0
        after = q.get(task_id).task
        assert (after.status, after.attempt, after.result) == ("succeeded", 2, rescued.result)


def test_a_worker_whose_connections_are_killed_keeps_running_tasks(
    procs: Processes, rurl: str, tmp_path: Path, wait_until_sync
) -> None:
    log = tmp_path / "runs.log"
    worker = procs.worker(rurl, concurrency=2, lease=5)
    prefix = rurl.rsplit("prefix=", 1)[1]
    mine = f"omniq-{prefix}-{worker.pid}-"
    with OmniQ(db_url=rurl) as q:
        first = q.enqueue_many(harness.run_once, [(str(log),)] * 20)
        assert len(first.result(timeout=60)) == 20
        with redis.Redis.from_url(REDIS_URL) as client:
            killed = [c["id"] for c in client.client_list() if c.get("name", "").startswith(mine)]
            assert killed, "the worker's connections carry its pid in their name"
            for client_id in killed:
                client.client_kill_filter(_id=client_id)  # the worker's own connections only
        second = q.enqueue_many(harness.run_once, [(str(log),)] * 20)
        assert len(second.result(timeout=60)) == 20
        with redis.Redis.from_url(REDIS_URL) as client:
            wait_until_sync(
                lambda: any(
                    c.get("name", "").startswith(mine) and int(c.get("sub", 0)) > 0 for c in client.client_list()
                ),
                timeout=30,
            )
        assert worker.alive()
    assert len(harness.runs(log)) == 40
