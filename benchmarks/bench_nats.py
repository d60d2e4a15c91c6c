"""The NATS store end to end beside a bare nats-py publish + pull + ack loop (the floor), in the same run.

Run: ``python benchmarks/bench_nats.py [--url nats://127.0.0.1:4222] [--tasks 10000]``
(needs ``pip install 'omniq-nb[nats]'``; every system gets streams of its own, named from a
fresh prefix, deleted afterwards: the bucket, the object store of kept functions, events, output).

Prints:
- the floor: ``--tasks`` messages published to a work-queue stream (each publish awaited
  for its ack, 100 at once), then fetched by a durable pull consumer in batches of 100 and
  acknowledged one by one (each ack awaited): the least a JetStream task queue does per task;
- omniq end to end: ``--tasks`` no-op async tasks enqueued with one ``enqueue_many``, run by an
  in-process pool (100 slots, on the same loop) and every result awaited (``group.result()``);
- the ratio omniq ÷ floor (target >= 30 %).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid

import nats
from nats.js import api

import omniq_nb as omniq


async def noop_async() -> None:
    return None


async def drop_streams(url: str, *names: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for name in names:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
    finally:
        await nc.close()


async def floor(url: str, tasks: int) -> float:
    """Return messages per second through publish (acked) + pull + ack (acked) on a work queue."""
    name = f"bench_floor_{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=name, subjects=[f"{name}.jobs"], retention=api.RetentionPolicy.WORK_QUEUE)
        puller = await js.pull_subscribe(f"{name}.jobs", durable="workers", stream=name)
        start = time.perf_counter()
        for first in range(0, tasks, 100):
            await asyncio.gather(*(js.publish(f"{name}.jobs", b"x") for _ in range(min(100, tasks - first))))
        done = 0
        while done < tasks:
            batch = await puller.fetch(min(100, tasks - done), timeout=10)
            await asyncio.gather(*(msg.ack_sync() for msg in batch))
            done += len(batch)
        return tasks / (time.perf_counter() - start)
    finally:
        await nc.close()
        await drop_streams(url, name)


async def omniq_e2e(url: str, tasks: int) -> float:
    """Return tasks per second: enqueue_many, an in-process pool of 100 async slots, every result awaited."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        async with omniq.AsyncOmniQ(db_url=f"{url}?prefix={prefix}") as q:
            pool = omniq.AsyncWorkerPool(q, concurrency=100, kind="async")
            await pool.start()
            start = time.perf_counter()
            group = await q.enqueue_many(noop_async, [() for _ in range(tasks)])
            await group.result(timeout=600)
            elapsed = time.perf_counter() - start
            await pool.stop()
        return tasks / elapsed
    finally:
        await drop_streams(
            url, f"KV_omniq_{prefix}", f"OBJ_omniq_{prefix}", f"omniq_{prefix}_events", f"omniq_{prefix}_output"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    bare = await floor(args.url, args.tasks)
    print(f"floor: nats-py publish + pull + ack   {bare:8.0f} msgs/s")
    ours = await omniq_e2e(args.url, args.tasks)
    print(f"omniq NATS store, e2e with results    {ours:8.0f} tasks/s")
    print(f"omniq / floor                         {ours / bare:8.0%}  (target >= 30 %)")


if __name__ == "__main__":
    asyncio.run(main())
