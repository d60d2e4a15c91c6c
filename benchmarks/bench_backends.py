"""End-to-end throughput and idle pickup latency on SQLite and PostgreSQL, beside SAQ and procrastinate.

Run: ``python benchmarks/bench_backends.py [--tasks 10000] [--samples 200] [--only sqlite,postgres,saq,procrastinate]
[--repeat 1] [--peer-tasks N] [--pg-url postgresql://postgres@127.0.0.1:5432/test]``

Everything runs in one process on one machine against one PostgreSQL server:

- omniq_nb e2e throughput: ``--tasks`` no-op async tasks (a function defined in ``__main__``,
  so it travels by value as a notebook's does) queued with one ``enqueue_many`` and every
  result awaited with ``GroupHandle.result()``; default settings except the store URL. The
  clock runs from the ``enqueue_many`` call until the last result is in hand; the workers are
  already up and idle: an in-process ``AsyncWorkerPool`` (default kind and slots), then 1 and 4
  ``python -m omniq_nb worker`` processes (bench_pool's ``start_worker``). SQLite: a fresh temp
  file each time; PostgreSQL: a fresh schema each time, dropped afterwards.
- idle pickup latency: ``--samples`` single tasks enqueued one at a time (10 ms apart, so the
  worker is idle) and each result awaited; the task returns ``time.monotonic()`` when it starts
  (bench_pool's ``one_latency``), in-process and to one CLI worker (PostgreSQL: LISTEN/NOTIFY;
  SQLite: the wake-up socket).
- SAQ (``saq[postgres]``) and procrastinate (psycopg 3 connector) on the same server, in a
  scratch database created and dropped by this run, each with one worker process started by
  its own CLI with its default settings (peers_app.py). SAQ: ``queue.map`` enqueues and
  awaits every result (it polls every 0.5 s, its default); pickup is ``enqueue`` then
  ``job.refresh(until_complete=...)``. procrastinate stores no results: its time is
  ``batch_defer_async`` plus the drain until every job is ``succeeded`` (polled every 20 ms),
  and it has no pickup measure here.

Targets (issue 15, same run): omniq-PG >= 10x SAQ-PG and >= 5x procrastinate; 4 CLI workers on
PostgreSQL drain >= 2x what one drains (measured twice: on the no-op tasks, where one worker
already keeps both cores of a 2-core machine busy with the server and the client (the
table's "CPU busy": the machine's busy share of CPU time during each omniq run), and on
2,000 tasks that each wait 20 ms of I/O, where only claims that serialise workers could hold
four workers back); PostgreSQL pickup p50 <= 15 ms cross-process and
<= 5 ms in-process. With ``--repeat K`` each throughput is the median of K runs and the
pickup percentiles are over all K x samples.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from bench_pool import HERE, busy_since, cpu_ticks, one_latency, start_worker

import omniq_nb as omniq

BACKENDS = ("sqlite", "postgres", "saq", "procrastinate")
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
TIMEOUT = 900.0
IO_SECONDS = 0.02
IO_TASKS = 2_000


async def noop(i: int) -> int:
    return i


async def wait_io(i: int) -> int:
    """A task that waits on I/O for ``IO_SECONDS`` (the worker scaling row: claims, not CPU, would limit it)."""
    await asyncio.sleep(IO_SECONDS)
    return i


@dataclass
class Row:
    """One line of the table: throughputs of the repeats and pickup samples (ms)."""

    name: str
    rates: list[float] = field(default_factory=list)
    pickups: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)
    """The machine's busy share of CPU time during each throughput run (omniq rows)."""

    def add(self, rate: float, busy: float) -> None:
        """Record one throughput run: its rate and the machine's busy CPU share meanwhile."""
        self.rates.append(rate)
        self.busy.append(busy)

    @property
    def rate(self) -> float | None:
        return statistics.median(self.rates) if self.rates else None

    def pickup(self, cut: int) -> float | None:
        """Return the pickup percentile ``cut`` (50 or 90) in ms."""
        if len(self.pickups) < 2:
            return None
        return statistics.quantiles(self.pickups, n=10)[cut // 10 - 1]


# ---- omniq_nb ----


class Stores:
    """Fresh store URLs: SQLite files in a temp folder, PostgreSQL schemas dropped on close."""

    def __init__(self, folder: Path, pg_url: str) -> None:
        self.folder, self.pg_url, self.schemas, self.count = folder, pg_url, [], 0

    def url(self, backend: str) -> str:
        self.count += 1
        if backend == "sqlite":
            return f"sqlite:///{self.folder / f'bench{self.count}.db'}"
        schema = f"bench_{os.getpid()}_{self.count}"
        self.schemas.append(schema)
        return f"{self.pg_url}?schema={schema}"

    def close(self) -> None:
        if self.schemas:
            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                for schema in self.schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.asynccontextmanager
async def workers(q: omniq.AsyncOmniQ, url: str, cli: int) -> AsyncIterator[None]:
    """Run an idle in-process pool (``cli == 0``) or ``cli`` idle worker processes on ``url``."""
    if cli == 0:
        async with omniq.AsyncWorkerPool(q):
            await one_latency(q)
            yield
        return
    processes = [start_worker(url) for _ in range(cli)]
    try:
        await one_latency(q)
        while len(await q.workers()) < cli:  # noqa: ASYNC110 (another process registers them)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # every one is idle
        yield
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait(30)


async def omniq_e2e(url: str, tasks: int, cli: int, fn: Any = noop) -> tuple[float, float]:
    """Tasks/s from ``enqueue_many`` until ``GroupHandle.result()`` returns, workers idle at the start.

    Also returns the busy share of the machine's CPU time meanwhile.
    """
    async with omniq.AsyncOmniQ(db_url=url) as q, workers(q, url, cli):
        start, ticks = time.perf_counter(), cpu_ticks()
        handles = await q.enqueue_many(fn, [(i,) for i in range(tasks)])
        values = await handles.result(timeout=TIMEOUT)
        elapsed, busy = time.perf_counter() - start, busy_since(ticks)
    assert values == list(range(tasks))
    return tasks / elapsed, busy


async def omniq_pickup(url: str, samples: int, cli: int) -> list[float]:
    """Milliseconds from enqueue to start of ``samples`` single tasks on an idle worker."""
    async with omniq.AsyncOmniQ(db_url=url) as q, workers(q, url, cli):
        latencies = []
        for _ in range(samples):
            await asyncio.sleep(0.01)
            latencies.append(await one_latency(q))
        return latencies


async def omniq_backend(backend: str, stores: Stores, rows: dict[str, Row], args: argparse.Namespace) -> None:
    label = "SQLite" if backend == "sqlite" else "PG"
    for cli, what in ((0, "in-process pool"), (1, "1 CLI worker"), (4, "4 CLI workers")):
        row = rows.setdefault(f"{backend}:{cli}", Row(f"omniq {label}, {what}"))
        row.add(*await omniq_e2e(stores.url(backend), args.tasks, cli))
        if cli < 4:
            row.pickups += await omniq_pickup(stores.url(backend), args.samples, cli)
    for cli in (1, 4):  # tasks that wait 20 ms: four workers drain four times the slots, unless claims serialise them
        row = rows.setdefault(f"{backend}:{cli}:io", Row(f"omniq {label}, {cli} CLI worker(s), 20 ms I/O tasks"))
        row.add(*await omniq_e2e(stores.url(backend), IO_TASKS, cli, wait_io))


# ---- peers ----


@contextlib.contextmanager
def scratch_database(pg_url: str) -> Iterator[str]:
    """Create a database for the peers on the same server; drop it afterwards."""
    name = f"bench_peers_{os.getpid()}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield pg_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def peer_process(command: list[str], url: str) -> subprocess.Popen[bytes]:
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "BENCH_PEERS_URL": url, "PYTHONPATH": path}
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def saq_run(url: str, tasks: int, samples: int) -> tuple[float, list[float]]:
    import peers_app

    queue = peers_app.saq_queue()
    await queue.connect()  # creates its tables before the worker starts
    worker = peer_process([sys.executable, "-m", "saq", "peers_app.saq_settings"], url)
    try:

        async def pickup() -> float:
            submitted = time.monotonic()
            job = await queue.enqueue("started_at")
            assert job is not None
            await job.refresh(until_complete=60)
            return (float(job.result) - submitted) * 1000

        await pickup()  # the worker is up
        latencies = []
        for _ in range(samples):
            await asyncio.sleep(0.01)
            latencies.append(await pickup())
        start = time.perf_counter()
        values = await queue.map("noop", [{"i": i} for i in range(tasks)], timeout=TIMEOUT)
        rate = tasks / (time.perf_counter() - start)
        assert values == list(range(tasks))
        return rate, latencies
    finally:
        stop(worker)
        await queue.disconnect()


async def procrastinate_run(url: str, tasks: int) -> float:
    import peers_app

    async with peers_app.proc_app.open_async(), await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await peers_app.proc_app.schema_manager.apply_schema_async()
        worker = peer_process([sys.executable, "-m", "procrastinate", "--app=peers_app.proc_app", "worker"], url)
        query = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"

        async def until_done(count: int) -> None:
            while (await (await conn.execute(query)).fetchone())[0] < count:  # type: ignore[index]  # noqa: ASYNC110
                await asyncio.sleep(0.02)

        try:
            await peers_app.proc_noop.defer_async(i=0)
            await until_done(1)  # the worker is up
            start = time.perf_counter()
            await peers_app.proc_noop.batch_defer_async(*({"i": i} for i in range(tasks)))
            await until_done(1 + tasks)
            return tasks / (time.perf_counter() - start)
        finally:
            stop(worker)


async def peer_backend(backend: str, pg_url: str, rows: dict[str, Row], args: argparse.Namespace) -> None:
    tasks = args.peer_tasks or args.tasks
    with scratch_database(pg_url) as url:
        os.environ["BENCH_PEERS_URL"] = url
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        sys.modules.pop("peers_app", None)  # its URL is read at import
        if backend == "saq":
            row = rows.setdefault("saq", Row("SAQ PG, 1 worker process (10 jobs at once)"))
            rate, latencies = await saq_run(url, tasks, args.samples)
            row.rates.append(rate)
            row.pickups += latencies
        else:
            row = rows.setdefault("procrastinate", Row("procrastinate PG, 1 worker (concurrency 1), no results"))
            row.rates.append(await procrastinate_run(url, tasks))


# ---- report ----


def fmt(value: float | None, spec: str) -> str:
    """Format ``value`` with ``spec`` (width first), or a dash as wide."""
    return format(value, spec) if value is not None else "-".rjust(int(spec.split(",")[0].split(".")[0]))


def ratio(rows: dict[str, Row], top: str, bottom: str) -> float | None:
    a, b = rows.get(top), rows.get(bottom)
    if a is None or b is None or a.rate is None or b.rate is None:
        return None
    return a.rate / b.rate


def report(rows: dict[str, Row], args: argparse.Namespace) -> None:
    print(f"\n{'backend':<56} {'tasks/s':>9} {'pickup p50':>11} {'p90':>9} {'CPU busy':>9}")
    for row in rows.values():
        p50, p90 = fmt(row.pickup(50), "8.2f"), fmt(row.pickup(90), "6.2f")
        busy = f"{statistics.median(row.busy):8.0%}" if row.busy else "-".rjust(8)
        print(f"{row.name:<56} {fmt(row.rate, '9,.0f')} {p50} ms {p90} ms {busy}")
    checks = [  # label, numerator row, denominator row, target (0: none)
        ("omniq-PG in-process pool / SAQ-PG", "postgres:0", "saq", 10),
        ("omniq-PG 1 CLI worker / SAQ-PG (1 worker)", "postgres:1", "saq", 10),
        ("omniq-PG in-process pool / procrastinate", "postgres:0", "procrastinate", 5),
        ("omniq-PG 1 CLI worker / procrastinate (1 worker)", "postgres:1", "procrastinate", 5),
        ("PG: 4 CLI workers / 1 CLI worker", "postgres:4", "postgres:1", 2),
        ("PG, 20 ms I/O tasks: 4 CLI workers / 1 CLI worker", "postgres:4:io", "postgres:1:io", 2),
        ("SQLite: 4 CLI workers / 1 CLI worker (no target)", "sqlite:4", "sqlite:1", 0),
    ]
    print(f"\n{'same-run ratio':<56} {'measured':>9}  target")
    for name, top, bottom, target in checks:
        value = ratio(rows, top, bottom)
        verdict = "" if value is None or not target else ("met" if value >= target else "NOT met")
        print(f"{name:<56} {fmt(value, '8.1f')}x  {f'>= {target}x' if target else '':<7} {verdict}")
    for key, name, limit in (("postgres:1", "cross-process", 15.0), ("postgres:0", "in-process", 5.0)):
        p50 = rows[key].pickup(50) if key in rows else None
        verdict = "" if p50 is None else ("met" if p50 <= limit else "NOT met")
        print(f"{'PG pickup p50, ' + name:<56} {fmt(p50, '6.2f')} ms  <= {limit:.0f} ms {verdict}")
    peer_tasks = args.peer_tasks or args.tasks
    sizes = f"{args.tasks:,} omniq tasks, {peer_tasks:,} peer jobs, {args.samples} pickup samples"
    print(f"\n{sizes}, repeat {args.repeat} (median)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000, help="no-op tasks per throughput run")
    parser.add_argument("--peer-tasks", type=int, default=0, help="jobs per peer run (default --tasks)")
    parser.add_argument("--samples", type=int, default=200, help="pickup samples per setup")
    parser.add_argument("--only", default=",".join(BACKENDS), help="comma-separated subset of " + ", ".join(BACKENDS))
    parser.add_argument("--repeat", type=int, default=1, help="runs of each throughput; the median counts")
    parser.add_argument("--pg-url", default=PG_URL, help="the PostgreSQL server (a database on it)")
    args = parser.parse_args()
    chosen = [b for b in BACKENDS if b in args.only.split(",")]
    rows: dict[str, Row] = {}
    with tempfile.TemporaryDirectory() as tmp:
        stores = Stores(Path(tmp), args.pg_url)
        try:
            for _ in range(args.repeat):
                for backend in chosen:
                    began = time.perf_counter()
                    run: Awaitable[None] = (
                        omniq_backend(backend, stores, rows, args)
                        if backend in ("sqlite", "postgres")
                        else peer_backend(backend, args.pg_url, rows, args)
                    )
                    await run
                    print(f"{backend}: {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
        finally:
            stores.close()
    report(rows, args)


if __name__ == "__main__":
    asyncio.run(main())
