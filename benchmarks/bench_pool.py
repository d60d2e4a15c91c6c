"""Worker pool throughput and latency on a SQLite file, beside huey's SqliteHuey in the same run.

Run: ``python benchmarks/bench_pool.py [--tasks 10000] [--samples 200] [--idle 5]``

Prints:
- throughput of ``--tasks`` no-op tasks (enqueued with ``enqueue_many`` first, timed from
  pool start until every outcome is stored) for the ``async`` and ``thread`` kinds, and for
  huey's consumer (4 thread workers, a fixed 10 ms poll) draining the same number;
- submit-to-start latency p50/p95 on an idle in-process pool, on an idle standalone
  ``omniq-nb worker`` process, and on the idle huey consumer;
- the CPU share of a core used by the idle standalone worker and by the idle huey consumer.

Targets on a 2-core machine: async >= 10,000 tasks/s and >= 5x huey; thread >= 5,000/s;
in-process p50 <= 1.5 ms, p95 <= 5 ms; cross-process p50 <= 10 ms at <= 2 % of a core.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from subprocess import Popen
from types import ModuleType

import omniq_nb as omniq
from omniq_nb.models import Task

HERE = Path(__file__).resolve().parent


async def noop_async() -> None:
    return None


def noop_sync() -> None:
    return None


async def throughput(
    url: str, kind: str, tasks: int, concurrency: int | None, fn: Callable[[], object] | None = None
) -> float:
    """Tasks/s of a pool draining ``tasks`` no-op tasks while nobody waits (``None``: the default slots).

    ``fn``: the no-op, called with no argument (default: this module's, for ``kind``).
    """
    fn = fn or (noop_async if kind == "async" else noop_sync)
    async with omniq.AsyncOmniQ(db_url=url) as q:
        await q.enqueue_many(fn, [() for _ in range(tasks)])
        finished = 0
        all_done = asyncio.Event()

        def count(changed: Sequence[Task]) -> None:
            nonlocal finished
            finished += sum(1 for t in changed if t.status.is_terminal)
            if finished >= tasks:
                all_done.set()

        q.on_local_write(count)
        pool = omniq.AsyncWorkerPool(q, concurrency=concurrency, kind=kind)
        start = time.perf_counter()
        await pool.start()
        try:
            await asyncio.wait_for(all_done.wait(), timeout=600)
        finally:
            elapsed = time.perf_counter() - start
            await pool.stop()
        return tasks / elapsed


async def latency_in_process(url: str, samples: int) -> list[float]:
    async with omniq.AsyncOmniQ(db_url=url) as q, omniq.AsyncWorkerPool(q, concurrency=4, kind="thread"):
        return [await one_latency(q) for _ in range(samples)]


async def one_latency(q: omniq.AsyncOmniQ) -> float:
    submitted = time.monotonic()
    h = await q.enqueue(time.monotonic)  # returns when the worker started it (CLOCK_MONOTONIC is system-wide)
    started: float = await h.result(timeout=30)
    return (started - submitted) * 1000


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu_share(pid: int, seconds: float) -> float:
    before, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - start)


def cpu_ticks() -> tuple[int, int]:
    """Return the machine's CPU time so far and the idle part of it, in clock ticks (``/proc/stat``)."""
    with open("/proc/stat") as stat:
        ticks = [int(field) for field in stat.readline().split()[1:]]
    return sum(ticks), ticks[3] + ticks[4]


def busy_since(before: tuple[int, int]) -> float:
    """Return the busy share of the machine's CPU time since ``before`` (a ``cpu_ticks()`` reading)."""
    total, idle = cpu_ticks()
    return 1 - (idle - before[1]) / max(total - before[0], 1)


def start_worker(url: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "omniq_nb", "worker", "--db-url", url, "--concurrency", "4"]
    return subprocess.Popen([*command, "--log-level", "WARNING"])


async def standalone_worker(url: str, samples: int, idle: float) -> tuple[list[float], float]:
    worker = start_worker(url)
    try:
        async with omniq.AsyncOmniQ(db_url=url) as q:
            await one_latency(q)  # the worker is up and idle
            share = await asyncio.to_thread(idle_cpu_share, worker.pid, idle)
            return [await one_latency(q) for _ in range(samples)], share
    finally:
        worker.terminate()
        worker.wait(30)


def huey_consumer(db: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HUEY_DB": str(db), "PYTHONPATH": str(HERE)}
    command = [sys.executable, "-m", "huey.bin.huey_consumer", "huey_app.huey", "-w", "4", "-k", "thread"]
    command += ["-d", "0.01", "-m", "0.01", "-b", "1", "-n", "-q"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def huey_app_at(db: Path) -> ModuleType:
    """Return ``huey_app`` with its SqliteHuey on ``db`` (re-imported when an earlier run used another file)."""
    os.environ["HUEY_DB"] = str(db)
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import huey_app

    if huey_app.huey.storage.filename != str(db):
        huey_app = importlib.reload(huey_app)
    return huey_app


@contextmanager
def huey_draining(db: Path, tasks: int, timeout: float = 600) -> Iterator[tuple[float, ModuleType, Popen[bytes]]]:
    """Enqueue ``tasks`` no-op huey tasks, start the consumer and yield its drain rate, the app and the consumer.

    The consumer is stopped on exit.
    """
    app = huey_app_at(db)
    for _ in range(tasks):
        app.noop()
    consumer = huey_consumer(db)
    try:
        start = time.perf_counter()
        while app.huey.result_count() < tasks:
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"huey drained {app.huey.result_count()} of {tasks} tasks in {timeout} s")
            time.sleep(0.005)
        yield tasks / (time.perf_counter() - start), app, consumer
    finally:
        consumer.terminate()
        consumer.wait(30)


def huey_run(db: Path, tasks: int, samples: int, idle: float) -> tuple[float, list[float], float]:
    with huey_draining(db, tasks) as (rate, huey_app, consumer):
        huey_app.started_at()(blocking=True, timeout=30)
        share = idle_cpu_share(consumer.pid, idle)
        latencies = []
        for _ in range(samples):
            submitted = time.monotonic()
            started = huey_app.started_at()(blocking=True, timeout=30)
            latencies.append((started - submitted) * 1000)
        return rate, latencies, share


def percentiles(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=20)
    return f"p50 {statistics.median(values):6.2f} ms  p95 {cuts[18]:6.2f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=200, help="latency samples per setup")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds to measure an idle worker's CPU")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        async_rate = await throughput(f"sqlite:///{base}/async.db", "async", args.tasks, 100)
        thread_rate = await throughput(f"sqlite:///{base}/thread.db", "thread", args.tasks, 32)
        local = await latency_in_process(f"sqlite:///{base}/local.db", args.samples)
        remote, remote_cpu = await standalone_worker(f"sqlite:///{base}/remote.db", args.samples, args.idle)
        huey_rate, huey_latency, huey_cpu = await asyncio.to_thread(
            huey_run, base / "huey.db", args.tasks, args.samples, args.idle
        )
    print(f"throughput async  (100 slots)        : {async_rate:8,.0f} tasks/s  ({async_rate / huey_rate:.1f}x huey)")
    print(f"throughput thread (32 threads)       : {thread_rate:8,.0f} tasks/s")
    print(f"throughput huey   (4 threads, 10 ms) : {huey_rate:8,.0f} tasks/s")
    print(f"latency in-process idle pool         : {percentiles(local)}")
    print(f"latency standalone worker process    : {percentiles(remote)}  idle CPU {remote_cpu:.2%} of a core")
    print(f"latency huey consumer                : {percentiles(huey_latency)}  idle CPU {huey_cpu:.2%} of a core")


if __name__ == "__main__":
    asyncio.run(main())
