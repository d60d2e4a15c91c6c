"""Memory a submitter pays per task, with no worker running, beside huey in the same run.

Run: ``python benchmarks/bench_memory.py [--tasks 100000] [--repeat 3]``

Each measurement runs in a fresh process: it imports everything, notes its resident set
size (RSS), submits ``--tasks`` calls of a function defined in ``__main__`` with one small
argument each, keeps what a user keeps (omniq_nb: the ``GroupHandle`` of ``enqueue_many``;
huey: the ``Result`` of each call), and notes its RSS again. A second run of each traces
Python's allocations instead (``tracemalloc``) and reports what is still held once the
submission returned: RSS shows the peak a process keeps from the allocator, retained bytes
show what the kept handles cost. Printed: both per task, medians of ``--repeat`` runs, and
the ratios omniq_nb / huey.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import gc, json, os, pickle, sys, tracemalloc

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def noop(n):
    return n

peer, folder, tasks, traced = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "traced"

def held():
    gc.collect()
    return tracemalloc.get_traced_memory()[0] if traced else rss()

def store():
    return sum(entry.stat().st_size for entry in os.scandir(folder) if entry.is_file())

if peer == "omniq":
    import omniq_nb as omniq
    with omniq.OmniQ(db_url=f"sqlite:///{folder}/omniq.db") as q:
        tracemalloc.start() if traced else None
        stored = store()
        before = held()
        kept = q.enqueue_many(noop, [(n,) for n in range(tasks)])
        after = held()
else:
    os.environ["HUEY_DB"] = f"{folder}/huey.db"
    from huey import SqliteHuey
    huey = SqliteHuey(filename=os.environ["HUEY_DB"])
    task = huey.task()(noop)
    stored = store()
    tracemalloc.start() if traced else None
    before = held()
    kept = [task(n) for n in range(tasks)]
    after = held()
    huey.storage.close()
args = sum(len(pickle.dumps(((n,), {}))) for n in range(tasks))
print(json.dumps({"grown": after - before, "store": store() - stored, "args": args}))
"""


def measure(peer: str, tasks: int, how: str) -> int:
    """Return the bytes one fresh process grew by while submitting ``tasks`` (``how``: rss or traced)."""
    return measure_all(peer, tasks, how)["grown"]


def measure_all(peer: str, tasks: int, how: str) -> dict[str, int]:
    """Return what one fresh process submitting ``tasks`` grew by, in bytes.

    Keys: ``grown`` (RSS or traced memory, per ``how``), ``store`` (the store's files, once
    closed, beyond their size before the submission), ``args`` (the arguments, pickled).
    """
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, peer, folder, str(tasks), how],
            capture_output=True,
            text=True,
            check=True,
            cwd=folder,  # not this folder: "python -c" puts the working directory first on sys.path
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])},
        )
    figures: dict[str, int] = json.loads(done.stdout.splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for how in ("rss", "traced"):
        grown: dict[str, list[int]] = {"omniq": [], "huey": []}
        for _ in range(args.repeat):  # interleaved, so both see the same machine
            for peer in grown:
                grown[peer].append(measure(peer, args.tasks, how))
        medians = {peer: statistics.median(values) for peer, values in grown.items()}
        for peer, value in medians.items():
            print(f"{how:6} {peer:6} +{value / 1e6:7.1f} MB  {value / args.tasks:7.0f} bytes/task")
        print(f"{how:6} omniq_nb / huey: {medians['omniq'] / medians['huey']:.2f}")


if __name__ == "__main__":
    main()
