"""Promise: a 1,000-task diamond (one root, 998 middles, one sink) runs each task once on every store.

The middles wait for the root and the sink for all 998 middles; a real pool runs them.
The sink becomes ready as the last middle finishes (its ``ready`` event follows that
middle's finish), and every task ran exactly one attempt.
"""

from __future__ import annotations

import pytest
import worker_tasks as wt
from store_spec import open_spec

from omniq_nb import AsyncOmniQ, AsyncWorkerPool, EventKind

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

MIDDLES = 998
WAIT = 300.0  # seconds: the slowest store on a loaded 2-core machine


async def test_a_thousand_task_diamond_runs_each_task_once(store_url: str) -> None:
    async with AsyncOmniQ(storage=open_spec(store_url)) as q:
        await q.purge(everything=True)
        root = await q.enqueue(wt.add, 0, 1)
        middles = await q.enqueue_many(wt.add, [(root, n) for n in range(MIDDLES)])
        sink = await q.enqueue_call(sum, args=(middles,))
        async with AsyncWorkerPool(q, concurrency=8):
            assert await sink.result(timeout=WAIT) == sum(range(1, MIDDLES + 1))
        rows = [(await q.get(h.id)).task for h in (root, *middles, sink)]
        assert {t.attempt for t in rows} == {1}
        last_middle = max(t.finished_at for t in rows[1:-1] if t.finished_at is not None)
        [ready] = [e for e in await q.events(task_id=sink.id) if e.kind is EventKind.READY]
        assert ready.at >= last_middle.replace(microsecond=0)  # times are kept to the store's precision
