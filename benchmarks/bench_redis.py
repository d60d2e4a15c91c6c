"""The Redis store beside SAQ and arq on the same Redis server, in the same run.

Run: ``python benchmarks/bench_redis.py [--url redis://127.0.0.1:6379/0] [--tasks 10000]``
(needs ``pip install 'omniq-nb[redis,bench]'``; never flushes anything: every system gets a
key prefix or queue name of its own, whose keys are deleted afterwards).

Prints:
- end to end, each system in this process with an in-process worker on the same loop:
  ``--tasks`` no-op async tasks enqueued, run, and every result awaited (omniq: one
  ``enqueue_many`` and the group's ``result()``, 100 slots; SAQ: ``queue.map``, 100 slots;
  arq: ``enqueue_job`` each and ``job.result()`` each, 100 jobs at once, 10 ms polls);
- idle pickup latency p50/p95 of a standalone ``omniq-nb worker`` process on Redis (submit
  to start, ``--samples`` tasks one at a time);
- the drain rate of ``--tasks`` sync no-op tasks by 1 and by ``--workers`` CLI worker processes,
  with the share of the machine's CPU time that was busy meanwhile (on a 2-core machine one
  worker, the server and this process already keep both cores busy);
- the same drain of 2,000 tasks that each wait 20 ms of I/O, where only claims that
  serialise workers could hold ``--workers`` of them back.

Targets: omniq e2e >= 3x SAQ and >= 5x arq; idle pickup p50 <= 5 ms cross-process;
4 CLI workers drain >= 2x what one drains (no-op tasks: on a machine with cores to spare;
20 ms I/O tasks: on any machine).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis
from bench_pool import busy_since, cpu_ticks, one_latency, percentiles

import omniq_nb as omniq
from omniq_nb.models import TaskStatus

IO_TASKS = 2_000  # tasks of the I/O drain: 20 ms each, 8 slots a worker, so about 5 s for one worker


async def noop_async() -> None:
    return None


def noop_sync() -> None:
    return None


def wait_io_sync() -> None:
    time.sleep(0.02)


async def saq_noop(ctx: dict[str, Any]) -> None:
    return None


async def arq_noop(ctx: dict[str, Any]) -> None:
    return None


def drop(url: str, pattern: str) -> None:
    """Delete the keys matching ``pattern`` (SCAN + UNLINK): one system's keys, nothing else."""
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 1000):
            client.unlink(*keys[start : start + 1000])


async def until(probe: Callable[[], Awaitable[bool]], step: float, limit: float = 600.0) -> None:
    """Poll ``probe`` every ``step`` seconds until it holds; fail after ``limit`` seconds."""
    for _ in range(int(limit / step)):
        if await probe():
            return
        await asyncio.sleep(step)
    raise TimeoutError(f"still waiting after {limit} s")


async def timed(run: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await run()
    return time.perf_counter() - start


async def omniq_e2e(url: str, tasks: int) -> float:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        async with omniq.AsyncOmniQ(db_url=f"{url}?prefix={prefix}") as q:
            pool = omniq.AsyncWorkerPool(q, concurrency=100, kind="async")
            await pool.start()

            async def run() -> None:
                group = await q.enqueue_many(noop_async, [() for _ in range(tasks)])
                await group.result(timeout=600)

            elapsed = await timed(run)
            await pool.stop()
        return tasks / elapsed
    finally:
        drop(url, f"{prefix}:*")


async def saq_e2e(url: str, tasks: int) -> float:
    from saq import Queue, Worker

    name = f"bench-{uuid.uuid4().hex[:8]}"
    queue = Queue.from_url(url, name=name)
    await queue.connect()
    worker = Worker(queue, functions=[saq_noop], concurrency=100)
    running = asyncio.create_task(worker.start())
    try:

        async def run() -> None:
            await queue.map("saq_noop", [{} for _ in range(tasks)], poll_interval=0.01)

        return tasks / await timed(run)
    finally:
        await worker.stop()
        running.cancel()
        await queue.disconnect()
        drop(url, f"saq:*{name}*")


async def arq_e2e(url: str, tasks: int) -> float:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.worker import Worker

    name = f"bench-{uuid.uuid4().hex[:8]}"
    pool = await create_pool(RedisSettings.from_dsn(url), default_queue_name=f"arq:queue:{name}")
    worker = Worker(
        functions=[arq_noop],
        redis_pool=pool,
        queue_name=f"arq:queue:{name}",
        max_jobs=100,
        poll_delay=0.01,
        handle_signals=False,
        keep_result=600,
    )
    running = asyncio.create_task(worker.async_run())
    try:

        async def run() -> None:
            jobs = [await pool.enqueue_job("arq_noop", _job_id=f"{name}-{n}") for n in range(tasks)]
            for job in jobs:
                assert job is not None
                await job.result(timeout=600, poll_delay=0.01)

        return tasks / await timed(run)
    finally:
        await worker.close()
        running.cancel()
        await pool.aclose()
        drop(url, f"arq:*{name}*")


def start_workers(url: str, count: int) -> list[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "omniq_nb", "worker", "--db-url", url, "--concurrency", "8", "--kind", "thread"]
    return [subprocess.Popen([*command, "--log-level", "WARNING"]) for _ in range(count)]


def stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(60)


async def pickup_latency(url: str, samples: int) -> list[float]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    store = f"{url}?prefix={prefix}"
    try:
        async with omniq.AsyncOmniQ(db_url=store) as q:
            workers = start_workers(store, 1)
            try:
                await one_latency(q)  # the worker is up and idle
                return [await one_latency(q) for _ in range(samples)]
            finally:
                stop(workers)
    finally:
        drop(url, f"{prefix}:*")


async def drain_rate(url: str, tasks: int, count: int, fn: Callable[[], None] = noop_sync) -> tuple[float, float]:
    """Tasks/s that ``count`` idle CLI worker processes drain once ``tasks`` calls of ``fn`` are enqueued.

    Returns:
        The rate, and the busy share of the machine's CPU time while they drained.
    """
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    store = f"{url}?prefix={prefix}"
    try:
        async with omniq.AsyncOmniQ(db_url=store, events=False) as q:
            workers = start_workers(store, count)
            try:

                async def serving() -> bool:
                    return len(await q.workers()) >= count

                async def drained() -> bool:
                    return (await q.storage.count())[TaskStatus.SUCCEEDED] >= tasks

                await until(serving, 0.05)
                start, ticks = time.perf_counter(), cpu_ticks()
                await q.enqueue_many(fn, [() for _ in range(tasks)])
                await until(drained, 0.01)
                return tasks / (time.perf_counter() - start), busy_since(ticks)
            finally:
                stop(workers)
    finally:
        drop(url, f"{prefix}:*")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=200, help="pickup latency samples")
    parser.add_argument("--workers", type=int, default=4, help="CLI workers in the scaling run")
    args = parser.parse_args()
    ours = await omniq_e2e(args.url, args.tasks)
    saq = await saq_e2e(args.url, args.tasks)
    arq = await arq_e2e(args.url, args.tasks)
    latency = await pickup_latency(args.url, args.samples)
    one, one_busy = await drain_rate(args.url, args.tasks, 1)
    many, many_busy = await drain_rate(args.url, args.tasks, args.workers)
    io_one, _ = await drain_rate(args.url, IO_TASKS, 1, wait_io_sync)
    io_many, _ = await drain_rate(args.url, IO_TASKS, args.workers, wait_io_sync)
    print(f"e2e omniq on Redis (100 slots)   : {ours:8,.0f} tasks/s  ({ours / saq:.1f}x SAQ, {ours / arq:.1f}x arq)")
    print(f"e2e SAQ (100 slots)              : {saq:8,.0f} tasks/s")
    print(f"e2e arq (100 jobs, 10 ms polls)  : {arq:8,.0f} tasks/s")
    print(f"idle pickup, CLI worker process  : {percentiles(latency)}")
    print(f"drain by 1 CLI worker            : {one:8,.0f} tasks/s  (machine CPU {one_busy:.0%} busy)")
    scaled = f"{many / one:.1f}x; machine CPU {many_busy:.0%} busy"
    print(f"drain by {args.workers} CLI workers           : {many:8,.0f} tasks/s  ({scaled})")
    print(f"20 ms I/O tasks, 1 CLI worker    : {io_one:8,.0f} tasks/s")
    print(f"20 ms I/O tasks, {args.workers} CLI workers   : {io_many:8,.0f} tasks/s  ({io_many / io_one:.1f}x)")


if __name__ == "__main__":
    asyncio.run(main())
