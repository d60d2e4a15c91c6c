"""Store throughput on a SQLite file, beside a bare aiosqlite floor measured in the same run.

Run: ``python benchmarks/bench_store.py [--tasks 20000] [--single 3000] [--rounds 10] [--batch 100]``

Prints, each as operations per second:
- floor: bare aiosqlite, one INSERT + commit per row, awaited one after another;
- enqueue: ``AsyncOmniQ.enqueue`` awaited one after another (target >= 60 % of the floor);
  the two run in interleaved rounds and each reports its median, so both see the same noise;
- enqueue_many: ``AsyncOmniQ.enqueue_many`` (target >= 50,000 tasks/s);
- claim+complete: ``claim(limit=batch)`` then one ``settle`` of the batch (target >= 5,000/s);
  then the same as an in-kernel pool claims (kernel affinity: ``unowned_only`` with its own
  ``owner``, three live kernels in the registry) on a copy of the same tasks, and once more
  with a backlog of ``--backlog`` pending tasks of another live kernel ahead of them (each
  claim skips them).
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import aiosqlite

import omniq_nb as omniq
from omniq_nb.context import set_owner
from omniq_nb.models import TaskResult, TaskStatus, WorkerInfo

KERNELS = ("kernel-me", "kernel-b", "kernel-c")


async def one_by_one(base: Path, rows: int, rounds: int) -> tuple[float, float]:
    """Return (floor, enqueue) rates, medians of interleaved rounds so both see the same noise."""
    payload = os.urandom(80)
    floor_rates, enqueue_rates = [], []
    async with aiosqlite.connect(base / "floor.db") as conn, omniq.AsyncOmniQ(db_url=f"sqlite:///{base}/one.db") as q:
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, payload BLOB, created REAL)")
        await conn.commit()
        per_round = rows // rounds
        for r in range(rounds):
            start = time.perf_counter()
            for i in range(per_round):
                await conn.execute("INSERT INTO t VALUES (?, ?, ?)", (f"{r}-{i}", payload, time.time()))
                await conn.commit()
            floor_rates.append(per_round / (time.perf_counter() - start))
            start = time.perf_counter()
            for i in range(per_round):
                await q.enqueue(operator.add, i, 1)
            enqueue_rates.append(per_round / (time.perf_counter() - start))
    return statistics.median(floor_rates), statistics.median(enqueue_rates)


async def many_enqueue(url: str, rows: int, *, owner: str | None = None, priority: int = 0) -> float:
    set_owner(owner)
    async with omniq.AsyncOmniQ(db_url=url) as q:
        calls = [(i, 1) for i in range(rows)]
        start = time.perf_counter()
        await q.enqueue_many(operator.add, calls, priority=priority)
        return rows / (time.perf_counter() - start)


async def claim_complete(url: str, batch: int, *, affinity: bool = False) -> tuple[float, int]:
    async with omniq.AsyncOmniQ(db_url=url) as q:
        store, result = q.storage, q.serializer.dumps(1)
        if affinity:
            for kernel in KERNELS:
                info = WorkerInfo(
                    id=kernel[-4:],
                    name=kernel,
                    host="h",
                    pid=1,
                    kind="thread",
                    concurrency=8,
                    queues=("default",),
                    kernel=kernel,
                    ttl=3600,
                )
                await store.heartbeat(info)
        done = 0
        start = time.perf_counter()
        while claimed := await store.claim(
            queues=["default"], limit=batch, lease=30, worker="bench", unowned_only=affinity, owner=KERNELS[0]
        ):
            outcomes = [
                TaskResult(task_id=t.id, lease_token=t.lease_token or "", status=TaskStatus.SUCCEEDED, result=result)
                for t in claimed
            ]
            done += len(await store.settle(outcomes))
        return done / (time.perf_counter() - start), done


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks for enqueue_many and claim+complete")
    parser.add_argument("--single", type=int, default=3_000, help="tasks for the one-by-one measurements")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds of floor and enqueue")
    parser.add_argument("--batch", type=int, default=100, help="tasks claimed per claim statement")
    parser.add_argument("--backlog", type=int, default=5_000, help="pending tasks of another live kernel, ahead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        floor_rate, single_rate = await one_by_one(base, args.single, args.rounds)
        many_rate = await many_enqueue(f"sqlite:///{base}/many.db", args.tasks, owner=KERNELS[0])
        shutil.copy(base / "many.db", base / "affinity.db")
        shutil.copy(base / "many.db", base / "backlog.db")
        await many_enqueue(f"sqlite:///{base}/backlog.db", args.backlog, owner=KERNELS[1], priority=1)
        cycle_rate, cycled = await claim_complete(f"sqlite:///{base}/many.db", args.batch)
        mine_rate, mine = await claim_complete(f"sqlite:///{base}/affinity.db", args.batch, affinity=True)
        behind_rate, behind = await claim_complete(f"sqlite:///{base}/backlog.db", args.batch, affinity=True)
    print(f"floor (aiosqlite INSERT + commit) : {floor_rate:10,.0f} rows/s")
    print(
        f"enqueue, one by one               : {single_rate:10,.0f} tasks/s  ({single_rate / floor_rate:.0%} of floor)"
    )
    print(f"enqueue_many                      : {many_rate:10,.0f} tasks/s")
    print(f"claim+complete (batch {args.batch:>4})       : {cycle_rate:10,.0f} tasks/s  ({cycled} tasks)")
    print(f"  as a kernel pool (affinity)     : {mine_rate:10,.0f} tasks/s  ({mine} tasks)")
    print(
        f"  same, {args.backlog} others' ahead    : {behind_rate:10,.0f} tasks/s  ({behind} tasks, "
        f"{args.backlog} left to their live kernel)"
    )


if __name__ == "__main__":
    asyncio.run(main())
