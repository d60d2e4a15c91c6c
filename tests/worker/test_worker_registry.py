"""Worker pools register themselves in their store, heartbeat, obey stop requests and keep kernel affinity."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import worker_tasks as wt

from omniq_nb import AsyncOmniQ, AsyncWorkerPool, TaskStatus, WorkerInfo
from omniq_nb.context import set_owner

pytestmark = pytest.mark.anyio

Wait = Callable[..., Any]
WAIT = 30.0


@pytest.fixture
async def q(tmp_path: Path) -> AsyncIterator[AsyncOmniQ]:
    async with AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'omniq.db'}", poll_interval=0.05) as queue:
        yield queue


def kernel_pool(kernel: str) -> WorkerInfo:
    """The registry row of another kernel's pool, as its heartbeat writes it."""
    return WorkerInfo(
        id=kernel[:8],
        name=kernel,
        host="elsewhere",
        pid=1,
        kind="thread",
        concurrency=1,
        queues=("default",),
        kernel=kernel,
    )


async def test_a_pool_is_listed_while_it_runs_and_leaves_when_it_stops(q: AsyncOmniQ, wait_until: Wait) -> None:
    pool = AsyncWorkerPool(q, concurrency=3, kind="thread", queues=["default", "io"], lease=2, name="mine")
    await pool.start()
    try:
        [listed] = await q.workers()
        assert len(pool.id) == 8 and pool.id.isalnum() and pool.id.isascii()
        assert (listed.id, listed.name, listed.host, listed.pid) == (pool.id, "mine", socket.gethostname(), os.getpid())
        assert (listed.kind, listed.concurrency, listed.queues, listed.kernel) == ("thread", 3, ("default", "io"), None)
        assert listed.ttl == 6.0 and listed.started_at is not None and not listed.stop_requested
        first = listed.heartbeat
        assert first is not None

        async def heartbeat_moved() -> bool:
            [now] = await q.workers()
            return now.heartbeat is not None and now.heartbeat > first

        await wait_until(heartbeat_moved, timeout=WAIT)
    finally:
        await pool.stop()
    assert await q.workers() == []


async def test_the_heartbeat_counts_running_tasks(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    gate = tmp_path / "gate"
    async with AsyncWorkerPool(q, concurrency=2, kind="thread", lease=1) as pool:
        h = await q.enqueue(wt.wait_for_gate_only, str(gate))

        async def one_running() -> bool:
            return [w.running for w in await q.workers()] == [1]

        await wait_until(one_running, timeout=WAIT)
        gate.touch()
        await h.result(timeout=WAIT)
        assert pool.running


async def test_a_stop_request_drains_the_pool(q: AsyncOmniQ, wait_until: Wait) -> None:
    pool = AsyncWorkerPool(q, concurrency=1, kind="thread", lease=1)
    await pool.start()
    assert await q.stop_worker(pool.id) is True
    with anyio.fail_after(WAIT):
        await pool.wait()  # it stops by itself: no exception, since nothing failed
    assert pool.stop_requested and not pool.running
    assert await q.workers() == []
    assert await q.stop_worker(pool.id) is False


async def test_a_kernel_pool_leaves_the_tasks_of_other_live_kernels(q: AsyncOmniQ, wait_until: Wait) -> None:
    await q.storage.heartbeat(kernel_pool("kernel-b"))  # another kernel, alive
    try:
        set_owner("kernel-b")
        theirs = await q.enqueue(wt.pid)
        set_owner("kernel-a")
        mine = await q.enqueue(wt.pid)
        shared = await q.enqueue_call(wt.pid, shared=True)
        set_owner("kernel-c")  # a kernel with no pool (it died)
        orphan = await q.enqueue(wt.pid)
        set_owner(None)
        script = await q.enqueue(wt.pid)
        async with AsyncWorkerPool(q, concurrency=2, kind="thread", kernel="kernel-a", lease=1):
            for handle in (mine, shared, orphan, script):
                assert await handle.result(timeout=WAIT) == os.getpid()
            assert (await q.get(theirs.id)).status is TaskStatus.PENDING
            assert [t.owner for t in [(await q.get(h.id)).task for h in (theirs, mine, shared, script)]] == [
                "kernel-b",
                "kernel-a",
                None,
                None,
            ]
            await q.storage.unregister("kernel-b")  # kernel B's pool stopped: its task is nobody's now
            assert await theirs.result(timeout=WAIT) == os.getpid()
    finally:
        set_owner(None)


async def test_a_shared_kernel_pool_and_a_standalone_pool_take_every_task(q: AsyncOmniQ) -> None:
    await q.storage.heartbeat(kernel_pool("kernel-b"))
    try:
        set_owner("kernel-b")
        first, second = await q.enqueue(wt.pid), await q.enqueue(wt.pid)
    finally:
        set_owner(None)
    async with AsyncWorkerPool(q, concurrency=1, kind="thread", kernel="kernel-a", shared=True, lease=1):
        assert await first.result(timeout=WAIT) == os.getpid()
    async with AsyncWorkerPool(q, concurrency=1, kind="thread", lease=1):
        assert await second.result(timeout=WAIT) == os.getpid()


async def test_an_only_unowned_pool_leaves_live_kernels_tasks(q: AsyncOmniQ) -> None:
    await q.storage.heartbeat(kernel_pool("kernel-b"))
    try:
        set_owner("kernel-b")
        theirs = await q.enqueue(wt.pid)
    finally:
        set_owner(None)
    script = await q.enqueue(wt.pid)
    async with AsyncWorkerPool(q, concurrency=1, kind="thread", shared=False, lease=1):
        assert await script.result(timeout=WAIT) == os.getpid()
        assert (await q.get(theirs.id)).status is TaskStatus.PENDING


async def test_tasks_belong_to_the_kernel_that_enqueued_them_unless_shared(q: AsyncOmniQ) -> None:
    try:
        set_owner("kernel-a")
        owned, shared = await q.enqueue(wt.pid), await q.enqueue_call(wt.pid, shared=True)
        many = await q.enqueue_many(wt.add, [(1, 2), (3, 4)])
    finally:
        set_owner(None)
    loose = await q.enqueue(wt.pid)
    owners = [(await q.get(task_id)).task.owner for task_id in (owned.id, shared.id, *many.ids, loose.id)]
    assert owners == ["kernel-a", None, "kernel-a", "kernel-a", None]
