"""gevent workers beside thread workers on I/O-bound tasks, in the same run.

Run: ``python benchmarks/bench_gevent.py [--tasks 1000] [--wait 0.1] [--greenlets 500] [--threads 32]``

Each task waits ``--wait`` seconds on a socket that never receives (an I/O wait: patched by
gevent in a gevent worker, a blocking ``recv`` on a thread). For each kind a standalone
worker process (``omniq-nb worker --kind gevent --concurrency 500``, then ``--kind thread
--concurrency 32``) serves its own SQLite file; once it serves, ``--tasks`` tasks are
enqueued with ``enqueue_many`` and their results awaited. Throughput is tasks over the time
from the enqueue until the last result arrived.

Prints both throughputs and their ratio. Target: gevent >= 5x the thread kind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import omniq_nb as omniq

ROOT = Path(__file__).resolve().parent.parent
START_WAIT = 60.0  # seconds a worker process may take to start serving
RESULT_WAIT = 300.0


def wait_io(seconds: float) -> None:
    """Wait ``seconds`` on a socket that never receives (travels by value: this is ``__main__``)."""
    quiet, other = socket.socketpair()
    with quiet, other:
        quiet.settimeout(seconds)
        try:
            quiet.recv(1)
        except TimeoutError:
            return


def start_worker(url: str, kind: str, concurrency: int, log: Path) -> subprocess.Popen[bytes]:
    """Start ``omniq-nb worker`` on ``url`` and return once it serves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["OMNIQ_POLL_INTERVAL"] = "0.05"
    args = ["worker", "--db-url", url, "--kind", kind, "--concurrency", str(concurrency), "--log-level", "WARNING"]
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "omniq_nb", *args], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_WAIT
    while not registered(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"the {kind} worker did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return process


def registered(url: str) -> bool:
    """Return whether a worker pool is live in the store's registry."""
    with omniq.OmniQ(db_url=url) as q:
        return bool(q.workers())


async def drain(url: str, tasks: int, wait: float) -> float:
    """Enqueue ``tasks`` waits and await every result; return tasks per second."""
    async with omniq.AsyncOmniQ(db_url=url, poll_interval=0.05) as q:
        start = time.perf_counter()
        group = await q.enqueue_many(wait_io, [(wait,) for _ in range(tasks)])
        await group.result(timeout=RESULT_WAIT)
        return tasks / (time.perf_counter() - start)


def measure(folder: Path, kind: str, concurrency: int, tasks: int, wait: float) -> float:
    url = f"sqlite:///{folder / f'{kind}.db'}"
    with omniq.OmniQ(db_url=url):  # create the store before the worker opens it
        pass
    worker = start_worker(url, kind, concurrency, folder / f"{kind}.log")
    try:
        return asyncio.run(drain(url, tasks, wait))
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--wait", type=float, default=0.1, help="seconds of I/O each task waits")
    parser.add_argument("--greenlets", type=int, default=500, help="the gevent worker's concurrency")
    parser.add_argument("--threads", type=int, default=32, help="the thread worker's concurrency")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        green = measure(folder, "gevent", args.greenlets, args.tasks, args.wait)
        threads = measure(folder, "thread", args.threads, args.tasks, args.wait)
    print(f"{args.tasks} tasks, each waiting {args.wait * 1000:g} ms on a socket, results awaited")
    print(f"gevent kind, concurrency {args.greenlets}: {green:8.0f} tasks/s")
    print(f"thread kind, {args.threads} threads:      {threads:8.0f} tasks/s")
    print(f"ratio: {green / threads:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
