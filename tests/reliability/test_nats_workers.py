"""Promises of CLI workers on a NATS store: exactly once at scale, fencing of a paused worker, a server restart.

- 3 CLI workers drain 10,000 tasks: every task runs exactly once, at attempt 1.
- A worker paused (``SIGSTOP``) past its lease is rescued by another; once resumed it can
  write nothing (its writes name a revision and a lease token that moved on): the rescuer's
  outcome stands.
- A private ``nats-server`` (a free port, its own JetStream folder) killed (``SIGKILL``) and
  started again under a running worker and this process's queue: the connections come back,
  every task whose enqueue was acknowledged runs to success, and what finished before stays
  (a killed process loses nothing the OS holds; a machine crash may lose the writes of the
  last interval between the server's syncs, see the README).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest
from harness import DRAIN_WAIT, START_WAIT, Processes
from nats_server import NATS_URL, nats_prefix

from omniq_nb import AsyncOmniQ, AsyncWorkerPool, OmniQ, TaskStatus
from omniq_nb.errors import StorageError
from omniq_nb.models import TaskResult
from omniq_nb.storage import open_storage

pytestmark = [pytest.mark.nats, pytest.mark.slow]

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
BATCHES = 20
BATCH = 25


@pytest.fixture
def nurl() -> Iterator[str]:
    with nats_prefix() as prefix:
        yield f"{NATS_URL}?prefix={prefix}"


def test_three_cli_workers_run_ten_thousand_tasks_exactly_once(
    procs: Processes, nurl: str, tmp_path: Path, wait_until_sync
) -> None:
    log = tmp_path / "runs.log"
    for _ in range(3):
        procs.worker(nurl, concurrency=8, lease=10)
    with OmniQ(db_url=nurl) as q:
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
    procs: Processes, nurl: str, tmp_path: Path, wait_until_sync
) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    paused = procs.worker(nurl, concurrency=1, lease=2)
    with OmniQ(db_url=nurl) as q:
        task_id = q.enqueue_call(harness.gated, args=(str(log), str(gate)), retries=1).id
        wait_until_sync(lambda: [r.attempt for r in harness.runs(log)] == [1], timeout=START_WAIT)
        paused.signal(signal.SIGSTOP)
        old_token = q.get(task_id).task.lease_token
        assert old_token
        rescuer = procs.worker(nurl, concurrency=1, lease=30)
        wait_until_sync(lambda: [r.attempt for r in harness.runs(log)] == [1, 2], timeout=60)
        gate.touch()
        wait_until_sync(lambda: q.get(task_id).done(), timeout=60)
        rescued = q.get(task_id).task
        assert (rescued.status, rescued.attempt) == ("succeeded", 2)
        assert q.get(task_id).result(timeout=10) == [2, rescuer.pid]
        assert asyncio.run(_writes_with(nurl, task_id, old_token)) == ([], False, set())
        paused.signal(signal.SIGCONT)
        wait_until_sync(lambda: len(harness.runs(Path(f"{log}.end"))) == 2, timeout=60)
        assert paused.terminate() == 0
        after = q.get(task_id).task
        assert (after.status, after.attempt, after.result) == ("succeeded", 2, rescued.result)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateServer:
    """A ``nats-server`` of this test only: a free port, JetStream on in a folder of its own."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.folder / "js")]
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_WAIT
        while "Server is ready" not in (self.folder / "server.log").read_text():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"nats-server did not start:\n{(self.folder / 'server.log').read_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=60)
            log = self.folder / "server.log"
            log.write_text(log.read_text().replace("Server is ready", "Server was ready"))


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[PrivateServer]:
    server = PrivateServer(tmp_path / "nats-data")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.mark.anyio
async def test_a_restarted_server_loses_no_acknowledged_task_and_the_worker_reconnects(
    private_server: PrivateServer, procs: Processes, tmp_path: Path
) -> None:
    url = f"{private_server.url}?prefix=restart"
    log = tmp_path / "runs.log"
    acknowledged: list[str] = []
    async with AsyncOmniQ(db_url=url, poll_interval=0.05) as q:
        procs.worker(url, concurrency=4, lease=3)
        for batch in range(BATCHES):
            if batch == BATCHES // 2:
                done_before = {t.id for t in await q.storage.list(statuses=[TaskStatus.SUCCEEDED], limit=100_000)}
                assert done_before, "nothing ran before the kill: the test would prove little"
                private_server.kill()
                with contextlib.suppress(StorageError):  # not acknowledged: the server is down
                    await q.enqueue_many(harness.run_once, [(str(log),)] * BATCH)
                private_server.start()
            try:
                group = await q.enqueue_many(harness.run_once, [(str(log),)] * BATCH)
            except StorageError:
                continue  # the client was still reconnecting: this batch was never acknowledged
            acknowledged += group.ids
            await asyncio.sleep(0.05)

        async def all_done() -> bool:
            counts = await q.storage.count(task_ids=acknowledged)
            return counts[TaskStatus.SUCCEEDED] == len(acknowledged)

        deadline = time.monotonic() + DRAIN_WAIT
        while not await all_done():
            if time.monotonic() > deadline:
                failed = await q.storage.list(statuses=[TaskStatus.FAILED], limit=10)
                errors = [t.error.message for t in failed if t.error]
                raise AssertionError(f"not all acknowledged tasks ran: {await q.storage.count()}; {errors}")
            await asyncio.sleep(0.1)
        stored = {t.id: t for t in await q.storage.get_many(acknowledged)}
    assert len(acknowledged) >= (BATCHES - 2) * BATCH
    assert set(stored) == set(acknowledged), "an acknowledged task was lost"
    assert done_before <= {task_id for task_id, t in stored.items() if t.status is TaskStatus.SUCCEEDED}
    ran = {run.task_id for run in harness.runs(log)}
    assert set(acknowledged) <= ran


def test_an_outcome_that_waited_out_a_server_restart_keeps_its_lease_and_lands(
    private_server: PrivateServer, procs: Processes, tmp_path: Path, wait_until_sync
) -> None:
    """The run ended while the server was down, and stayed down past the lease: the outcome still counts.

    The worker renews the lease of a run until its outcome is stored, and its own upkeep never
    rescues a lease it renews, so the task is not failed as "worker lost" (no retries) when the
    server comes back: its result is the one the run returned.
    """
    url = f"{private_server.url}?prefix=outage"
    log, gate, lease = tmp_path / "runs.log", tmp_path / "gate", 2.0
    worker = procs.worker(url, concurrency=1, lease=lease)
    with OmniQ(db_url=url) as q:
        task_id = q.enqueue_call(harness.gated, args=(str(log), str(gate))).id
        wait_until_sync(lambda: len(harness.runs(log)) == 1, timeout=START_WAIT)
        private_server.kill()
        gate.touch()
        wait_until_sync(lambda: len(harness.runs(Path(f"{log}.end"))) == 1, timeout=60)
        time.sleep(2 * lease)  # the store's lease runs out while the outcome waits in the worker
        private_server.start()
        wait_until_sync(lambda: q.get(task_id).done(), timeout=DRAIN_WAIT)
        task = q.get(task_id).task
        assert (task.status, task.attempt, task.error) == ("succeeded", 1, None)
        assert q.get(task_id).result(timeout=10) == [1, worker.pid]
    assert len(harness.runs(log)) == 1


async def nothing() -> None:
    return None


@pytest.mark.anyio
async def test_closing_a_queue_that_awaited_results_ends_its_event_follower_at_once(
    nurl: str, caplog: pytest.LogCaptureFixture
) -> None:
    """nats-py's fetch can swallow the follower's cancel (a ``wait_for`` whose wait had just ended, Python 3.11).

    Close cancels it again: before, most closes here waited 2 s, warned that the follower
    did not stop, and the follower then failed on the closed connection.
    """
    caplog.set_level(logging.WARNING, logger="omniq_nb")
    for _ in range(4):
        async with AsyncOmniQ(db_url=nurl) as q, AsyncWorkerPool(q, concurrency=100, kind="async"):
            group = await q.enqueue_many(nothing, [() for _ in range(1000)])
            assert await group.result(timeout=120) == [None] * 1000
    await asyncio.sleep(0)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("omniq_nb")] == []
