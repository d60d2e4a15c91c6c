"""A real ``omniq-nb worker`` process on a PostgreSQL schema runs what an ``AsyncOmniQ`` here enqueues.

Directly, and through a private PgBouncer in transaction mode (``?pgbouncer=1``), with
wake-ups by ``LISTEN`` on a direct ``listen_url`` and without one (polling).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import worker_tasks as wt
from pgbouncer import pgbouncer
from postgres_server import POSTGRES_URL, postgres_schema
from processes import Processes

from omniq_nb import AsyncOmniQ, TaskStatus

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def url() -> Iterator[str]:
    with postgres_schema() as schema:
        yield f"{POSTGRES_URL}?schema={schema}"


async def test_a_cli_worker_runs_tasks_enqueued_here(url: str, workers: Processes) -> None:
    async with AsyncOmniQ(db_url=url, poll_interval=0.05) as q:  # creates the schema before the worker
        worker = workers.worker(url, concurrency=4, lease=5, program=(sys.executable, "-m", "omniq_nb"))
        one = await q.enqueue(wt.add, 1, 2)
        many = await q.enqueue_many(wt.add, [(n, n) for n in range(20)])
        coroutine = await q.enqueue(wt.async_add, 20, 22)
        assert await one.result(timeout=60) == 3
        assert await many.result(timeout=60) == [2 * n for n in range(20)]
        assert await coroutine.result(timeout=60) == 42
        done = await q.storage.get(one.id)
        assert done is not None and done.status is TaskStatus.SUCCEEDED and done.worker
        assert worker.alive()


@pytest.fixture(scope="module")
def bouncer() -> Iterator[str]:
    with pgbouncer() as url:
        yield url


@pytest.mark.parametrize("listen", [True, False], ids=["listen-direct", "polling"])
async def test_a_cli_worker_through_pgbouncer_runs_tasks_enqueued_through_it(
    bouncer: str, workers: Processes, listen: bool
) -> None:
    with postgres_schema() as schema:
        url = f"{bouncer}?schema={schema}&pgbouncer=1"
        if listen:
            url += "&listen_url=" + quote(POSTGRES_URL, safe="")
        async with AsyncOmniQ(db_url=url, poll_interval=0.05) as q:
            worker = workers.worker(url, concurrency=4, lease=5, program=(sys.executable, "-m", "omniq_nb"))
            many = await q.enqueue_many(wt.add, [(n, n) for n in range(50)])
            assert await many.result(timeout=60) == [2 * n for n in range(50)]
            coroutine = await q.enqueue(wt.async_add, 20, 22)
            assert await coroutine.result(timeout=60) == 42
            assert worker.says("now runs the store's rescue")  # the election works through the pooler
            assert worker.alive() and "Traceback" not in worker.text()
            assert worker.terminate() == 0
