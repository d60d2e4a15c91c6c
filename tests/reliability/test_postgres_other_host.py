"""Promise: a worker on another host that loses its network past the lease can write nothing, and serves again.

A CLI worker runs in a network namespace of its own (``ip netns``), joined to this one by a
veth pair on a private /24 (``10.211.X.0/24``, X random per test): it reaches a private
PostgreSQL server (listening on 127.0.0.1 and on the veth's address here) over that link
only, as a worker on another machine would. While it runs a task (which blocks until a gate
file exists), the link is cut (``ip link set <veth> down``: packets are dropped, no
connection is refused or reset). Its 3 s lease runs out; a second worker, here on
127.0.0.1, rescues the task and runs it to success. Then the link is restored: the cut-off
worker's late outcome is refused (fenced on the lease token), no attempt runs a third
time, the stored result and attempt stay the rescuer's, and the cut-off worker logged
"lost" then "back" once each and keeps serving (it runs a new task).

Root and ``ip netns`` are required: CI runs as root, so this test fails (never skips) when
it cannot build the namespace.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import psycopg
import pytest
from harness import DRAIN_WAIT, START_WAIT, Processes
from postgres_server import PrivateServer, private_server
from test_sigstop import _writes_with

from omniq_nb import OmniQ

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LEASE = 3.0  # seconds: the cut outlasts it
LOST = r"lost its store"
BACK = r"reached its store \S+ again"


class Link:
    """A network namespace joined to this one by a veth pair: ``host`` here, ``peer`` there, on ``10.211.X.0/24``."""

    def __init__(self) -> None:
        used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
        free = [x for x in range(1, 255) if f" 10.211.{x}." not in used]
        subnet = random.choice(free)
        tag = uuid.uuid4().hex[:8]
        self.namespace, self.veth, self.veth_peer = f"omniq-{tag}", f"oq{tag}h", f"oq{tag}n"
        self.host, self.peer, self.network = f"10.211.{subnet}.1", f"10.211.{subnet}.2", f"10.211.{subnet}.0/24"
        self.prefix = ("ip", "netns", "exec", self.namespace)
        self._made: list[tuple[str, ...]] = []

    def open(self) -> None:
        """Create the namespace and the veth pair, address both ends and bring them up."""
        self._ip("netns", "add", self.namespace, undo=("netns", "delete", self.namespace))
        self._ip("link", "add", self.veth, "type", "veth", "peer", "name", self.veth_peer, "netns", self.namespace)
        self._made.append(("link", "delete", self.veth))  # deletes the peer too
        self._ip("addr", "add", f"{self.host}/24", "dev", self.veth)
        self._ip("link", "set", self.veth, "up")
        inside = ("-n", self.namespace)
        self._ip(*inside, "addr", "add", f"{self.peer}/24", "dev", self.veth_peer)
        self._ip(*inside, "link", "set", self.veth_peer, "up")
        self._ip(*inside, "link", "set", "lo", "up")

    def cut(self) -> None:
        """Take this end of the link down: whatever the namespace sends is dropped."""
        self._ip("link", "set", self.veth, "down")

    def restore(self) -> None:
        self._ip("link", "set", self.veth, "up")

    def close(self) -> None:
        """Delete the veth pair and the namespace (whatever of them was made)."""
        problems = []
        for undo in reversed(self._made):
            done = subprocess.run(["ip", *undo], capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                problems.append(f"ip {' '.join(undo)}: {done.stderr.strip()}")
        self._made.clear()
        assert not problems, problems

    def _ip(self, *args: str, undo: tuple[str, ...] | None = None) -> None:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"ip {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}"
        if undo is not None:
            self._made.append(undo)


@pytest.fixture
def link() -> Iterator[Link]:
    """A namespace and veth pair, removed afterwards even if the test fails; failing (not skipping) without them."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("this test needs root and iproute2's `ip` (ip netns, veth): CI runs it as root, it must not skip")
    made = Link()
    try:
        try:
            made.open()
        except AssertionError as exc:
            pytest.fail(f"cannot build a network namespace with a veth pair (`ip netns` unavailable?): {exc}")
        yield made
    finally:
        made.close()


@pytest.fixture
def server(link: Link) -> Iterator[PrivateServer]:
    """A private server on 127.0.0.1 and on the link's address here (trusting the link's network)."""
    with private_server(listen=[(link.host, link.network)]) as started:
        yield started


def tokens(url: str, task_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url.split("?")[0], autocommit=True, connect_timeout=10) as conn:
        return conn.execute("SELECT lease_token FROM jobs.tasks WHERE id = %s", (task_id,)).fetchall()


def count(worker: harness.Child, pattern: str) -> int:
    return len(re.findall(pattern, worker.text()))


def test_a_worker_cut_off_past_its_lease_is_fenced_and_serves_again(
    procs: Processes, link: Link, server: PrivateServer, tmp_path: Path, wait_until_sync
) -> None:
    here = f"{server.url}?schema=jobs"
    there = f"postgresql://postgres@{link.host}:{server.port}/postgres?schema=jobs"
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    with OmniQ(db_url=here) as q:
        task_id = q.enqueue_call(harness.gated, args=(str(log), str(gate)), retries=2).id
    remote = procs.worker(there, concurrency=2, lease=LEASE, prefix=link.prefix)
    wait_until_sync(lambda: [(r.attempt, r.pid) for r in harness.runs(log)] == [(1, remote.pid)], timeout=START_WAIT)
    [(old_token,)] = tokens(here, task_id)

    link.cut()
    rescuer = procs.worker(here, concurrency=2, lease=30)
    wait_until_sync(lambda: rescuer.says(f"task {task_id} attempt 1: its worker's lease ran out"), timeout=60)
    wait_until_sync(lambda: [r.attempt for r in harness.runs(log)] == [1, 2], timeout=60)
    wait_until_sync(lambda: remote.says(LOST), timeout=60)  # the cut-off worker noticed, long past its lease
    gate.touch()  # both attempts end now: only the rescuer can store its outcome
    with OmniQ(db_url=here) as q:
        assert q.get(task_id).result(timeout=DRAIN_WAIT) == [2, rescuer.pid]
    assert asyncio.run(_writes_with(here, task_id, old_token)) == ([], False, set())  # fenced at the store
    wait_until_sync(lambda: len(harness.runs(Path(f"{log}.end"))) == 2, timeout=60)  # the cut-off attempt ended too

    link.restore()
    wait_until_sync(lambda: remote.says(BACK), timeout=120)
    wait_until_sync(
        lambda: remote.says(f"task {task_id}: (outcome \\S+ discarded, the lease was lost|lease lost)"), timeout=120
    )
    assert rescuer.terminate() == 0  # from now on only the cut-off worker serves
    with OmniQ(db_url=here) as q:
        task = q.get(task_id).task
        assert (task.status, task.attempt, task.lease_token) == ("succeeded", 2, None)
        assert q.get(task_id).result(timeout=10) == [2, rescuer.pid]
        after = q.enqueue_call(harness.run_once, args=(str(log),))
        assert after.result(timeout=DRAIN_WAIT) == [1, remote.pid]  # it serves again, over the restored link
    runs = [(r.task_id, r.attempt, r.pid) for r in harness.runs(log)]
    assert runs == [(task_id, 1, remote.pid), (task_id, 2, rescuer.pid), (after.id, 1, remote.pid)]  # no third run
    assert (count(remote, LOST), count(remote, BACK)) == (1, 1), remote.text()[-4000:]
    text = remote.text()
    assert re.search(LOST, text).start() < re.search(BACK, text).start(), text[-4000:]  # lost, then back
    assert remote.terminate() == 0
