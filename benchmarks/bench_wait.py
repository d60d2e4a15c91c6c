"""What waiting for results costs: drain rate with nobody waiting, beside group and per-task waits.

Run: ``python benchmarks/bench_wait.py [--tasks 5000] [--kinds async,thread]``

Every measurement uses a fresh SQLite file, default settings (``MAX_WORKERS`` slots) and no-op
functions defined in ``__main__`` (so they travel by value, as notebook functions do). The
tasks are enqueued first; the clock runs from pool start until the last outcome is known:

- (a) drain: nobody waits; an ``on_local_write`` callback counts finished rows (``bench_pool``'s
  ``throughput``, its no-op functions taking no argument);
- (b) group: ``(await q.enqueue_many(...)).result()``, and ``fn.map(...).result()`` through
  the blocking ``OmniQ`` (thread kind only: the sync twin's own loop runs the pool);
- (c) gather: ``asyncio.gather`` of one ``TaskHandle.result()`` per task.

The three run in turn ``--rounds`` times (3) and the best rate of each counts, so a busy
neighbour on the machine slows all of them alike. Each is printed as tasks/s and as a ratio
to (a) of the same kind.
Targets: (b) >= 0.90 x (a); (c) >= 0.90 x (b).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench_pool import throughput

import omniq_nb as omniq
from omniq_nb import GroupHandle
from omniq_nb.task import use_queue
from omniq_nb.worker.sync import WorkerPool


async def noop_async(i: int) -> int:
    return i


def noop_sync(i: int) -> int:
    return i


def function(kind: str) -> object:
    return noop_async if kind == "async" else noop_sync


async def drain(url: str, kind: str, tasks: int) -> float:
    """(a): tasks/s with nobody waiting, at the default number of slots."""
    return await throughput(url, kind, tasks, None)


async def timed_wait(
    url: str,
    kind: str,
    tasks: int,
    wait: Callable[[GroupHandle], Awaitable[list[Any]]],
    fn: Callable[[int], Any] | None = None,
    concurrency: int | None = None,
) -> float:
    """Tasks/s from pool start until ``wait`` returns every result of an ``enqueue_many`` of ``tasks``.

    ``fn``: the no-op, ``fn(i) == i`` (default: this module's, for ``kind``); ``concurrency``:
    the pool's slots (default: ``MAX_WORKERS``).
    """
    async with omniq.AsyncOmniQ(db_url=url) as q:
        handles = await q.enqueue_many(fn or function(kind), [(i,) for i in range(tasks)])  # type: ignore[arg-type]
        pool = omniq.AsyncWorkerPool(q, kind=kind, concurrency=concurrency)
        start = time.perf_counter()
        await pool.start()
        try:
            values = await wait(handles)
        finally:
            elapsed = time.perf_counter() - start
            await pool.stop()
        assert values == list(range(tasks))
        return tasks / elapsed


async def group(
    url: str, kind: str, tasks: int, fn: Callable[[int], Any] | None = None, concurrency: int | None = None
) -> float:
    """(b): tasks/s of ``GroupHandle.result()`` on ``enqueue_many``."""
    return await timed_wait(url, kind, tasks, lambda handles: handles.result(timeout=600), fn, concurrency)


def mapped(url: str, tasks: int, fn: Callable[[int], Any] | None = None) -> float:
    """(b) through the blocking queue: ``fn.map(...).result()`` (thread kind, the default)."""
    with omniq.OmniQ(db_url=url) as q:
        use_queue(q)
        try:
            handles = omniq.task(fn or noop_sync).map(range(tasks))
            with WorkerPool(q):
                start = time.perf_counter()
                values = handles.result(timeout=600)
                elapsed = time.perf_counter() - start
        finally:
            use_queue(None)
        assert values == list(range(tasks))
        return tasks / elapsed


async def gather(
    url: str, kind: str, tasks: int, fn: Callable[[int], Any] | None = None, concurrency: int | None = None
) -> float:
    """(c): tasks/s of ``asyncio.gather`` over one ``TaskHandle.result()`` per task."""
    return await timed_wait(
        url, kind, tasks, lambda handles: asyncio.gather(*(h.result(timeout=600) for h in handles)), fn, concurrency
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--kinds", default="async,thread")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (a), (b), (c); best counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = 0

        def url() -> str:
            nonlocal runs
            runs += 1
            return f"sqlite:///{Path(tmp) / f'wait{runs}.db'}"

        for kind in args.kinds.split(","):
            best: dict[str, float] = {}
            for _ in range(args.rounds):  # interleaved, so a noisy neighbour slows every measure alike
                rates = {
                    "a": asyncio.run(drain(url(), kind, args.tasks)),
                    "b": asyncio.run(group(url(), kind, args.tasks)),
                    "c": asyncio.run(gather(url(), kind, args.tasks)),
                }
                if kind == "thread":
                    rates["m"] = mapped(url(), args.tasks)
                best = {k: max(v, best.get(k, 0.0)) for k, v in rates.items()}
            a, b, c = best["a"], best["b"], best["c"]
            print(f"{kind:6} (a) drain, nobody waits     {a:9,.0f} tasks/s")
            print(f"{kind:6} (b) GroupHandle.result()    {b:9,.0f} tasks/s  {b / a:5.2f} x (a)")
            if "m" in best:
                m = best["m"]
                print(f"{kind:6} (b) .map(...).result() sync {m:9,.0f} tasks/s  {m / a:5.2f} x (a)")
            print(f"{kind:6} (c) gather TaskHandle.result {c:9,.0f} tasks/s  {c / a:5.2f} x (a)  {c / b:5.2f} x (b)")


if __name__ == "__main__":
    main()
