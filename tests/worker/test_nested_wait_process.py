"""A process pool on a loop that a blocked caller re-enters (nest_asyncio2, as a notebook cell's wait does)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import nest_asyncio2
import worker_tasks as wt

from omniq_nb import AsyncOmniQ, AsyncWorkerPool

TASKS = 200
WATCHDOG = 60.0  # seconds the whole run may take at most on a loaded machine (it takes about 1 s)


def test_a_loop_re_entered_while_children_answer_never_blocks_on_their_sockets(tmp_path: Path) -> None:
    # A nested loop can select a child's socket again before the callback that the outer loop
    # queued for it has run; the second callback must not block reading a message already read.
    results: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        nest_asyncio2.apply(loop)
        finished = asyncio.Event()

        async def re_enter() -> None:
            while not finished.is_set():
                loop.run_until_complete(asyncio.sleep(0))  # what a cell's blocking wait does
                await asyncio.sleep(0)

        async with (
            AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'q.db'}", poll_interval=0.05) as q,
            AsyncWorkerPool(q, concurrency=2, kind="process", lease=5),
        ):
            nesting = asyncio.ensure_future(re_enter())
            handles = await q.enqueue_many(wt.add, [(i, 1) for i in range(TASKS)])
            results.extend(await handles.result(timeout=WATCHDOG))
            finished.set()
            await nesting

    runner = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    runner.start()
    runner.join(WATCHDOG)
    assert not runner.is_alive(), "the loop blocked: a child's socket was read when it had nothing to give"
    assert results == [i + 1 for i in range(TASKS)]
