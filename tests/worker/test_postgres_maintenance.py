"""Two upkeep runners on one PostgreSQL schema: one leads; when it dies, the other takes over and rescues.

Each runner has its own queue (its own store object and pool of connections), as two worker
pools on two machines would. Only the holder of the maintenance turn rescues; once it stops
renewing (its process died), the other takes the turn after the holder's term and rescues
the tasks whose lease ran out meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest
from postgres_server import POSTGRES_URL, postgres_schema

import omniq_nb as omniq
from omniq_nb.jobs import cancel_and_wait
from omniq_nb.models import TaskStatus
from omniq_nb.storage import postgres_base
from omniq_nb.worker import Maintenance

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

WaitUntil = Callable[..., Awaitable[None]]
STEP = 0.1  # seconds between upkeep steps: the turn lasts max(5 steps, 2 s)


def add(a: int, b: int) -> int:
    return a + b


@pytest.fixture
def schema() -> Iterator[str]:
    with postgres_schema() as name:
        yield name


@pytest.fixture
async def queues(schema: str) -> AsyncIterator[list[omniq.AsyncOmniQ]]:
    url = f"{POSTGRES_URL}?schema={schema}"
    async with omniq.AsyncOmniQ(db_url=url) as one, omniq.AsyncOmniQ(db_url=url) as two:
        yield [one, two]


def holder(schema: str) -> Any:
    with psycopg.connect(POSTGRES_URL) as conn:
        row = conn.execute(f"SELECT holder FROM \"{schema}\".leaders WHERE role = 'maintenance'").fetchone()
    return row[0] if row else None


async def lost_lease(q: omniq.AsyncOmniQ) -> str:
    """Enqueue a task and claim it for a worker that never renews (its lease runs out in 0.3 s)."""
    handle = await q.enqueue_call(add, args=(1, 2), retries=3)
    [claimed] = await q.storage.claim(queues=["default"], limit=1, lease=0.3, worker="gone")
    assert claimed.id == handle.id
    return handle.id


async def test_one_runner_leads_and_the_other_takes_over_when_it_dies(
    schema: str, queues: list[omniq.AsyncOmniQ], wait_until: WaitUntil
) -> None:
    runners = [Maintenance(q, interval=STEP) for q in queues]
    jobs = [asyncio.create_task(r.run()) for r in runners]
    try:
        await wait_until(lambda: any(r.leading for r in runners), timeout=10)
        for _ in range(5):  # several steps: never two leaders
            assert sum(r.leading for r in runners) <= 1
            await asyncio.sleep(STEP)  # lets a few steps pass: the check above runs between them
        await wait_until(lambda: any(r.leading for r in runners), timeout=10)
        leader = next(n for n, r in enumerate(runners) if r.leading)
        other = 1 - leader
        assert holder(schema) == runners[leader].runner

        rescued = await lost_lease(queues[0])
        await wait_until(lambda: queue_status(queues[other], rescued, TaskStatus.PENDING), timeout=15)

        jobs[leader].cancel()  # the leader dies: it never renews its turn, nor hands it over
        assert await ended([jobs[leader]])
        died = time.monotonic()
        orphan = await lost_lease(queues[0])
        await wait_until(lambda: runners[other].leading, timeout=15)
        assert time.monotonic() - died <= runners[leader].term + 5, "the takeover took longer than a term"
        assert holder(schema) == runners[other].runner
        await wait_until(lambda: queue_status(queues[other], orphan, TaskStatus.PENDING), timeout=15)
    finally:
        for job in jobs:
            job.cancel()
        assert await ended(jobs), "an upkeep job did not end on cancel()"


async def test_one_cancel_ends_the_upkeep_even_as_the_pool_hands_it_a_connection(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One ``cancel()`` ends ``Maintenance.run``, though psycopg_pool's wait for a connection may swallow it.

    The pool waits with ``wait_for``, which on Python 3.11 drops a cancel that lands as the
    wait ends. With one connection, the upkeep step waits for the one this test's read returns; the
    cancel then lands as the pool hands it over. The loop still ends (``jobs.end_if_cancelled``).
    """
    monkeypatch.setattr(postgres_base, "_POOL_SIZE", 1)
    async with omniq.AsyncOmniQ(db_url=f"{POSTGRES_URL}?schema={schema}") as q:
        for _ in range(10):
            job = asyncio.create_task(Maintenance(q, interval=0.0).run())
            for _ in range(20):  # its steps take the connection in turn with these reads
                await q.storage.get("no-such-task")
            await q.storage.get("no-such-task")  # on return, the pool hands the connection to the waiting step
            job.cancel()
            assert await ended([job]), "the upkeep loop ran on after its cancel()"


async def ended(jobs: list[asyncio.Task[None]]) -> bool:
    """Return whether every job ended within 30 seconds of the cancels already sent (those that did not are ended)."""
    _, pending = await asyncio.wait(jobs, timeout=30)
    await cancel_and_wait(list(pending), within=30)  # cancelled until they end: the test fails, it does not hang
    return not pending


async def queue_status(q: omniq.AsyncOmniQ, task_id: str, status: TaskStatus) -> bool:
    task = await q.storage.get(task_id)
    return task is not None and task.status is status and task.attempt == 1 and task.error is not None
