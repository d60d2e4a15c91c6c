"""Promise: a Redis server with ``appendonly yes`` + ``everysec``, killed and restarted, loses nothing acknowledged.

A private ``redis-server`` (a free port, its own data folder, append-only file on) serves a
CLI worker and this process's queue. While tasks are enqueued and run, the server is killed
with ``SIGKILL`` and started again on the same folder. Every task whose ``enqueue`` returned
is still there afterwards and runs to success; every outcome stored before the kill stays.
Enqueues that failed while the server was down were never acknowledged and are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest
import redis
from harness import DRAIN_WAIT, START_WAIT, Processes

from omniq_nb import AsyncOmniQ, TaskStatus
from omniq_nb.errors import StorageError

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.anyio]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
BATCHES = 30
BATCH = 50


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateServer:
    """A ``redis-server`` of this test only: a free port, a data folder, the append-only file on."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no"]
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_WAIT
        while True:
            with contextlib.suppress(redis.RedisError), redis.Redis(port=self.port, socket_timeout=1) as client:
                if client.ping() and client.info("persistence").get("loading") == 0:
                    return
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"redis-server did not start:\n{(self.folder / 'server.log').read_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=60)


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[PrivateServer]:
    server = PrivateServer(tmp_path / "redis-data")
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def test_a_restarted_append_only_server_loses_nothing_acknowledged(
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
            await asyncio.sleep(0.02)

        async def all_done() -> bool:
            counts = await q.storage.count(task_ids=acknowledged)
            return counts[TaskStatus.SUCCEEDED] == len(acknowledged)

        deadline = time.monotonic() + DRAIN_WAIT
        while not await all_done():
            assert time.monotonic() < deadline, f"not all acknowledged tasks ran: {await q.storage.count()}"
            await asyncio.sleep(0.1)
        stored = {t.id: t for t in await q.storage.get_many(acknowledged)}
    assert len(acknowledged) >= (BATCHES - 2) * BATCH
    assert set(stored) == set(acknowledged), "an acknowledged task was lost"
    assert done_before <= {task_id for task_id, t in stored.items() if t.status is TaskStatus.SUCCEEDED}
    ran = {run.task_id for run in harness.runs(log)}
    assert set(acknowledged) <= ran
