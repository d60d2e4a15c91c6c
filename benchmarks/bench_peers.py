"""omniq_nb beside concurrent.futures, joblib, dask.distributed, ipyparallel and huey, in one run.

Run: ``python benchmarks/bench_peers.py [--tasks 10000] [--rounds 3] [--only WORKLOAD,...] [--quick]``
(peers: ``pip install -e '.[bench]'``; a peer that is not installed is skipped, and said so).

Workloads (``--only`` names), each run ``--rounds`` times with its peers interleaved, so a busy
neighbour slows them alike; the BEST round of each figure counts (highest rate or speed-up,
lowest latency or memory). omniq_nb runs with default settings unless the row names them, on a
fresh SQLite file per measurement, with functions defined in ``__main__`` (they travel by
value, as notebook functions do), every result awaited:

- ``noop-process``: ``--tasks`` no-op tasks on 2 processes. omniq_nb ``kind="process"``,
  concurrency 2: (drain) nobody waits, an ``on_local_write`` callback counts finished rows;
  (group) ``GroupHandle.result()`` of ``enqueue_many``; (gather) ``asyncio.gather`` of every
  ``TaskHandle.result()``. omniq's clock runs from pool start (tasks enqueued before);
  ProcessPoolExecutor(2) ``map`` (chunksize 1) and joblib (loky, 2 jobs, its default automatic
  batching of quick calls) are timed from executor creation, submission included.
- ``noop-thread``: the same with ``kind="thread"`` and 32 threads (drain, group, gather), with
  ``kind="async"`` and 32 slots (an ``async def`` no-op; drain, group, gather), and with default
  settings (thread kind, ``MAX_WORKERS`` threads): drain and ``@omniq.task``
  ``.map(...).result()`` on the blocking ``OmniQ``. Peers: ThreadPoolExecutor(32) ``map``; dask ``LocalCluster``
  (in-process, 1 worker of 32 threads; ``client.map`` + ``wait``; the cluster is started once,
  before the clock); ipyparallel (2 engines, load-balanced ``map``, started once); huey's
  SqliteHuey consumer (4 threads, 10 ms poll, as in bench_pool.py), tasks enqueued first.
- ``cpu``: 200 tasks of pure-Python arithmetic calibrated to 20 ms each, on 2 processes: the
  serial time (a loop here) divided by omniq_nb's (``kind="process"``, concurrency 2,
  ``enqueue_many`` to the group's result), ProcessPoolExecutor(2)'s ``map`` and joblib's; each
  pool is started and warmed (its 2 processes up) before the clock.
- ``round-trip``: one task at a time on an idle, warmed-up pool (20 ms pauses between
  samples), enqueue to result back: omniq_nb default settings (thread kind) and
  ``kind="process"`` (2); ProcessPoolExecutor(2) ``submit().result()``; ipyparallel
  ``apply_async().get()``; dask ``submit().result()``. p50 and p95 of ``--samples``.
- ``memory``: ``enqueue_many`` of ``--submit`` (100,000) calls with one small argument, no
  worker, in a fresh process (bench_memory.py): added RSS, and the store's growth per task
  beyond the pickled arguments; beside huey submitting the same calls one by one.

The table prints one line per comparison: the omniq_nb figure, the peer's, the ratio
omniq_nb / peer, the issue's target and whether it is met. "-" as target: shown for context.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_memory import measure_all
from bench_pool import huey_draining, throughput
from bench_wait import gather, group, mapped

import omniq_nb as omniq

TIMEOUT = 600.0
"""Seconds any one measurement may take before it fails."""

PEERS = {"joblib": "joblib", "dask": "distributed", "ipyparallel": "ipyparallel", "huey": "huey"}


def noop(i: int = 0) -> int:
    return i


async def noop_async(i: int = 0) -> int:
    return i


def burn(n: int) -> int:
    total = 0
    for k in range(n):
        total += k * k
    return total


# ---------------------------------------------------------------- figures and the table

UNITS = {"rate": "tasks/s", "ms": "ms", "x": "x serial", "MB": "MB", "B": "B/task"}
HIGHER_IS_BETTER = {"rate", "x"}


@dataclass
class Figures:
    """Every round's value of each figure, by key; ``best`` picks the best round."""

    unit: dict[str, str] = field(default_factory=dict)
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, unit: str, value: float) -> None:
        self.unit[key] = unit
        self.values.setdefault(key, []).append(value)

    def best(self, key: str) -> float | None:
        if key not in self.values:
            return None
        pick = max if self.unit[key] in HIGHER_IS_BETTER else min
        return pick(self.values[key])

    def text(self, key: str) -> str:
        value = self.best(key)
        if value is None:
            return "n/a"
        unit = self.unit[key]
        number = f"{value:,.0f}" if unit in ("rate", "B") else f"{value:.2f}"
        return f"{number} {UNITS[unit]}"


@dataclass
class Row:
    """One comparison: omniq_nb's figure, a peer's, and the target on their ratio or on the figure."""

    workload: str
    omniq: str
    peer: str | None = None
    op: str = ""
    bound: float = 0.0
    on_value: bool = False

    def cells(self, figures: Figures) -> list[str]:
        mine = figures.best(self.omniq)
        theirs = figures.best(self.peer) if self.peer else None
        ratio = mine / theirs if mine is not None and theirs else None
        checked = mine if self.on_value else ratio
        if not self.op:
            target, verdict = "-", ""
        else:
            unit = f" {UNITS[figures.unit.get(self.omniq, 'rate')]}" if self.on_value else "x"
            target = f"{self.op} {self.bound:g}{unit}"
            verdict = "n/a" if checked is None else "met" if meets(checked, self.op, self.bound) else "NOT MET"
        return [
            self.workload,
            label(self.omniq),
            figures.text(self.omniq),
            label(self.peer) if self.peer else "",
            figures.text(self.peer) if self.peer else "",
            "" if ratio is None else f"{ratio:.2f}x",
            target,
            verdict,
        ]


def meets(value: float, op: str, bound: float) -> bool:
    return value >= bound if op == ">=" else value <= bound


def label(key: str) -> str:
    return key.replace("_", " ")


ROWS = [
    Row("noop-process", "omniq_process2_group", "ProcessPool2", ">=", 0.5),
    Row("noop-process", "omniq_process2_drain", "ProcessPool2"),
    Row("noop-process", "omniq_process2_group", "joblib_loky2"),
    Row("noop-process", "omniq_process2_gather", "omniq_process2_group", ">=", 0.9),
    Row("noop-thread", "omniq_thread_default_map", "omniq_thread_default_drain", ">=", 0.9),
    Row("noop-thread", "omniq_thread_default_map", "huey_4threads", ">=", 4),
    Row("noop-thread", "omniq_thread_default_map", "ProcessPool2", ">=", 0.5),
    Row("noop-thread", "omniq_thread32_drain", "ThreadPool32"),
    Row("noop-thread", "omniq_thread32_group", "ThreadPool32"),
    Row("noop-thread", "omniq_thread32_group", "dask_32threads"),
    Row("noop-thread", "omniq_thread32_group", "ipyparallel_2engines"),
    Row("noop-thread", "omniq_thread32_gather", "omniq_thread32_group", ">=", 0.9),
    Row("noop-thread", "omniq_async32_group", "ThreadPool32"),
    Row("noop-thread", "omniq_async32_group", "omniq_async32_drain"),
    Row("noop-thread", "omniq_async32_gather", "omniq_async32_group", ">=", 0.9),
    Row("cpu", "omniq_process2_speedup", "ProcessPool2_speedup", ">=", 0.95),
    Row("cpu", "omniq_process2_speedup", "joblib_loky2_speedup"),
    Row("round-trip", "omniq_default_p50", "ProcessPool2_p50", "<=", 1.5),
    Row("round-trip", "omniq_default_p95", "ProcessPool2_p95", "<=", 5, on_value=True),
    Row("round-trip", "omniq_process2_p50", "ProcessPool2_p50", "<=", 1.5),
    Row("round-trip", "omniq_process2_p95", "ProcessPool2_p95", "<=", 5, on_value=True),
    Row("round-trip", "omniq_default_p50", "ipyparallel_p50"),
    Row("round-trip", "omniq_default_p50", "dask_p50"),
    Row("memory", "omniq_added_RSS", "huey_added_RSS", "<=", 40, on_value=True),
    Row("memory", "omniq_store_per_task", "huey_store_per_task", "<=", 200, on_value=True),
]
HEADER = ["workload", "omniq_nb", "figure", "peer", "figure", "ratio", "target", "verdict"]


def print_table(figures: Figures, workloads: list[str]) -> None:
    lines = [HEADER] + [row.cells(figures) for row in ROWS if row.workload in workloads]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    for n, line in enumerate(lines):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * width for width in widths))


# ---------------------------------------------------------------- peers


def installed(peer: str) -> bool:
    return importlib.util.find_spec(PEERS[peer]) is not None


@contextmanager
def dask_client(skipped: list[str]) -> Iterator[Any]:
    """Yield a dask Client on an in-process LocalCluster of 32 threads (``None``: skipped)."""
    if not installed("dask"):
        yield None
        return
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=1, threads_per_worker=32, processes=False, dashboard_address=None, silence_logs=logging.ERROR
    )
    client = Client(cluster, timeout=60)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@contextmanager
def ipyparallel_view(skipped: list[str]) -> Iterator[Any]:
    """Yield a load-balanced view on a 2-engine ipyparallel cluster (``None``: skipped)."""
    if not installed("ipyparallel"):
        yield None
        return
    import ipyparallel

    cluster = ipyparallel.Cluster(n=2, log_level=logging.ERROR)
    client = None
    try:
        cluster.start_cluster_sync()
        client = cluster.connect_client_sync()
        client.wait_for_engines(2, timeout=60)
    except Exception as exc:  # a cluster that cannot start is a skipped peer, not a failed run
        skipped.append(f"ipyparallel (could not start 2 engines within 60 s: {exc!r})")
        print(f"skipped: {skipped[-1]}", flush=True)
        view = None
    else:
        view = client.load_balanced_view()
    try:
        yield view
    finally:
        if client is not None:
            client.close()
        cluster.stop_cluster_sync()


def pool_rate(make: Callable[[], Any], tasks: int) -> float:
    """Tasks/s of a concurrent.futures executor mapping ``noop`` (executor creation included)."""
    start = time.perf_counter()
    with make() as executor:
        values = list(executor.map(noop, range(tasks), timeout=TIMEOUT))
    elapsed = time.perf_counter() - start
    assert values == list(range(tasks))
    return tasks / elapsed


def joblib_run(fn: Callable[[int], int], items: list[int]) -> float:
    """Seconds of ``Parallel(n_jobs=2, backend="loky")`` over ``items``."""
    from joblib import Parallel, delayed

    start = time.perf_counter()
    values = Parallel(n_jobs=2, backend="loky", timeout=TIMEOUT)(delayed(fn)(i) for i in items)
    elapsed = time.perf_counter() - start
    assert len(values) == len(items)
    return elapsed


def joblib_shutdown() -> None:
    if installed("joblib"):
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)


def dask_rate(client: Any, tasks: int) -> float:
    from distributed import wait

    start = time.perf_counter()
    futures = client.map(noop, range(tasks), pure=False)
    wait(futures, timeout=TIMEOUT)
    values = client.gather(futures)
    elapsed = time.perf_counter() - start
    assert values == list(range(tasks))
    return tasks / elapsed


def ipyparallel_rate(view: Any, tasks: int) -> float:
    start = time.perf_counter()
    values = view.map_async(noop, range(tasks)).get(timeout=TIMEOUT)
    elapsed = time.perf_counter() - start
    assert list(values) == list(range(tasks))
    return tasks / elapsed


# ---------------------------------------------------------------- workloads


@dataclass
class Run:
    """What every workload needs: sizes, the temp folder, the started peers and the figures."""

    args: argparse.Namespace
    folder: Path
    stack: ExitStack
    figures: Figures = field(default_factory=Figures)
    skipped: list[str] = field(default_factory=list)
    files: int = 0
    _peers: dict[str, Any] = field(default_factory=dict)

    def url(self) -> str:
        """Return a fresh SQLite file's URL."""
        self.files += 1
        return f"sqlite:///{self.folder / f'omniq{self.files}.db'}"

    def path(self, stem: str) -> Path:
        self.files += 1
        return self.folder / f"{stem}{self.files}.db"

    def peer(self, name: str) -> Any:
        """Return the started dask client or ipyparallel view (started on first use; ``None``: skipped)."""
        if name not in self._peers:
            start = dask_client if name == "dask" else ipyparallel_view
            self._peers[name] = self.stack.enter_context(start(self.skipped))
        return self._peers[name]

    def add(self, key: str, unit: str, value: float) -> None:
        self.figures.add(key, unit, value)


def noop_process(run: Run) -> None:
    n = run.args.tasks
    run.add("omniq_process2_drain", "rate", asyncio.run(throughput(run.url(), "process", n, 2, fn=noop)))
    run.add("omniq_process2_group", "rate", asyncio.run(group(run.url(), "process", n, noop, 2)))
    run.add("omniq_process2_gather", "rate", asyncio.run(gather(run.url(), "process", n, noop, 2)))
    run.add("ProcessPool2", "rate", pool_rate(lambda: ProcessPoolExecutor(2), n))
    if installed("joblib"):
        run.add("joblib_loky2", "rate", n / joblib_run(noop, list(range(n))))


def noop_thread(run: Run) -> None:
    n = run.args.tasks
    run.add("omniq_thread_default_drain", "rate", asyncio.run(throughput(run.url(), "thread", n, None, fn=noop)))
    run.add("omniq_thread_default_map", "rate", mapped(run.url(), n, noop))
    run.add("omniq_thread32_drain", "rate", asyncio.run(throughput(run.url(), "thread", n, 32, fn=noop)))
    run.add("omniq_thread32_group", "rate", asyncio.run(group(run.url(), "thread", n, noop, 32)))
    run.add("omniq_thread32_gather", "rate", asyncio.run(gather(run.url(), "thread", n, noop, 32)))
    run.add("omniq_async32_drain", "rate", asyncio.run(throughput(run.url(), "async", n, 32, fn=noop_async)))
    run.add("omniq_async32_group", "rate", asyncio.run(group(run.url(), "async", n, noop_async, 32)))
    run.add("omniq_async32_gather", "rate", asyncio.run(gather(run.url(), "async", n, noop_async, 32)))
    run.add("ThreadPool32", "rate", pool_rate(lambda: ThreadPoolExecutor(32), n))
    if "noop-process" not in run.args.only:
        run.add("ProcessPool2", "rate", pool_rate(lambda: ProcessPoolExecutor(2), n))
    if (client := run.peer("dask")) is not None:
        run.add("dask_32threads", "rate", dask_rate(client, n))
    if (view := run.peer("ipyparallel")) is not None:
        run.add("ipyparallel_2engines", "rate", ipyparallel_rate(view, n))
    if installed("huey"):
        with huey_draining(run.path("huey"), n, TIMEOUT) as (rate, _, _):
            run.add("huey_4threads", "rate", rate)


async def omniq_cpu(url: str, work: int, tasks: int) -> float:
    """Seconds of ``tasks`` calls of ``burn(work)`` on a warm 2-process pool, from ``enqueue_many`` to the results."""
    async with omniq.AsyncOmniQ(db_url=url) as q, omniq.AsyncWorkerPool(q, concurrency=2, kind="process"):
        await (await q.enqueue_many(noop, [(0,), (1,)])).result(timeout=60)  # both children are up
        start = time.perf_counter()
        handles = await q.enqueue_many(burn, [(work,)] * tasks)
        await handles.result(timeout=TIMEOUT)
        return time.perf_counter() - start


def calibrate(seconds: float) -> int:
    """Return the ``burn`` argument that takes about ``seconds`` here."""
    probe = 200_000
    took = min(timed(burn, probe) for _ in range(3))
    return max(1, int(probe * seconds / took))


def timed(fn: Callable[[int], Any], arg: int) -> float:
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


def cpu(run: Run) -> None:
    tasks = run.args.cpu_tasks
    work = run.args.work or calibrate(0.020)
    run.args.work = work
    start = time.perf_counter()
    for _ in range(tasks):
        burn(work)
    serial = time.perf_counter() - start
    run.add("serial_seconds", "ms", serial * 1000)
    run.add("omniq_process2_speedup", "x", serial / asyncio.run(omniq_cpu(run.url(), work, tasks)))
    with ProcessPoolExecutor(2) as executor:
        list(executor.map(noop, range(2)))  # both children are up
        start = time.perf_counter()
        list(executor.map(burn, [work] * tasks, timeout=TIMEOUT))
        run.add("ProcessPool2_speedup", "x", serial / (time.perf_counter() - start))
    if installed("joblib"):
        joblib_run(noop, [0, 1])  # loky's reusable executor is up
        run.add("joblib_loky2_speedup", "x", serial / joblib_run(burn, [work] * tasks))


def samples_of(once: Callable[[int], Any], samples: int) -> list[float]:
    """Milliseconds of ``once(i)`` for ``samples`` calls, 20 ms apart, after 5 warm-up calls."""
    for i in range(5):
        once(i)
    took = []
    for i in range(samples):
        start = time.perf_counter()
        once(i)
        took.append((time.perf_counter() - start) * 1000)
        time.sleep(0.020)
    return took


async def omniq_round_trips(url: str, samples: int, kind: str | None, concurrency: int | None) -> list[float]:
    async with omniq.AsyncOmniQ(db_url=url) as q, omniq.AsyncWorkerPool(q, kind=kind, concurrency=concurrency):
        for i in range(5):
            await (await q.enqueue(noop, i)).result(timeout=30)
        took = []
        for i in range(samples):
            start = time.perf_counter()
            value = await (await q.enqueue(noop, i)).result(timeout=30)
            took.append((time.perf_counter() - start) * 1000)
            assert value == i
            await asyncio.sleep(0.020)
        return took


def add_percentiles(run: Run, key: str, took: list[float]) -> None:
    run.add(f"{key}_p50", "ms", statistics.median(took))
    run.add(f"{key}_p95", "ms", statistics.quantiles(took, n=20)[18])


def round_trip(run: Run) -> None:
    samples = run.args.samples
    add_percentiles(run, "omniq_default", asyncio.run(omniq_round_trips(run.url(), samples, None, None)))
    add_percentiles(run, "omniq_process2", asyncio.run(omniq_round_trips(run.url(), samples, "process", 2)))
    with ProcessPoolExecutor(2) as executor:
        add_percentiles(run, "ProcessPool2", samples_of(lambda i: executor.submit(noop, i).result(30), samples))
    if (view := run.peer("ipyparallel")) is not None:
        add_percentiles(run, "ipyparallel", samples_of(lambda i: view.apply_async(noop, i).get(30), samples))
    if (client := run.peer("dask")) is not None:
        add_percentiles(run, "dask", samples_of(lambda i: client.submit(noop, i, pure=False).result(30), samples))


def memory(run: Run) -> None:
    tasks = run.args.submit
    for peer in ("omniq", "huey") if installed("huey") else ("omniq",):
        grown = measure_all(peer, tasks, "rss")
        run.add(f"{peer}_added_RSS", "MB", grown["grown"] / 1e6)
        run.add(f"{peer}_store_per_task", "B", (grown["store"] - grown["args"]) / tasks)


WORKLOADS: dict[str, Callable[[Run], None]] = {
    "noop-process": noop_process,
    "noop-thread": noop_thread,
    "cpu": cpu,
    "round-trip": round_trip,
    "memory": memory,
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000, help="no-op tasks per throughput measure")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measure; the best round counts")
    parser.add_argument("--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {', '.join(WORKLOADS)}")
    parser.add_argument("--samples", type=int, default=200, help="round trips per setup and round")
    parser.add_argument("--submit", type=int, default=100_000, help="tasks submitted by the memory workload")
    parser.add_argument("--cpu-tasks", type=int, default=200, help="20 ms CPU tasks of the cpu workload")
    parser.add_argument("--work", type=int, default=0, help="burn() argument of a CPU task (0: calibrate to 20 ms)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of small sizes")
    args = parser.parse_args(argv)
    args.only = [name for name in args.only.split(",") if name]
    unknown = set(args.only) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    if args.quick:
        args.tasks, args.rounds, args.samples = min(args.tasks, 300), 1, min(args.samples, 20)
        args.submit, args.cpu_tasks = min(args.submit, 2_000), min(args.cpu_tasks, 20)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    started = time.perf_counter()
    print(f"bench_peers: {', '.join(args.only)}; {args.tasks:,} tasks, {args.rounds} round(s), best round counts")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, omniq_nb {omniq.__version__}", flush=True)
    skipped = [f"{peer} (not installed)" for peer in PEERS if not installed(peer)]
    for reason in skipped:
        print(f"skipped: {reason}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        run = Run(args, Path(tmp), stack, skipped=skipped)
        stack.callback(joblib_shutdown)
        for n in range(args.rounds):
            for name in args.only:
                print(f"round {n + 1}/{args.rounds}: {name} ...", flush=True)
                WORKLOADS[name](run)
    print()
    print_table(run.figures, args.only)
    if "cpu" in args.only:
        serial = run.figures.best("serial_seconds") or 0.0
        print(f"cpu: {args.cpu_tasks} tasks of burn({args.work:,}), serial {serial / 1000:.2f} s (best round)")
    print(f"skipped: {'; '.join(run.skipped) or 'none'}")
    print(f"took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
