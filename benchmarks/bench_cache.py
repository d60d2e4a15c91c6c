"""The result cache's cost and gain on a SQLite file, each against the uncached path in the same run.

Run: ``python benchmarks/bench_cache.py [--tasks 2000] [--rounds 3]``

For ``--tasks`` calls of a function defined in ``__main__`` (``.map`` through
``enqueue_many``, results awaited, default pool: thread kind, 4 slots), prints the medians of
``--rounds`` rounds of:

- ``uncached``: a plain submission that runs every call;
- ``first``: the same with ``cache=True`` on an empty store (keys computed and stored, every call runs);
- ``hit``: the same ``cache=True`` submission again (every call answered from the store, nothing runs).

``first / uncached`` is what keying costs; ``hit / uncached`` what a cache hit saves on a no-op
(on real work the saving is the work itself).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import omniq_nb as omniq


def score(x: int) -> int:
    return x * x


def timed(q: omniq.OmniQ, tasks: int, **options: object) -> float:
    start = time.perf_counter()
    group = q.enqueue_many(score, [(n,) for n in range(tasks)], **options)
    assert group.result(timeout=600) == [n * n for n in range(tasks)]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {"uncached": [], "first": [], "hit": []}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{Path(folder) / 'bench.db'}"
            with omniq.OmniQ(db_url=url) as q, omniq.WorkerPool(q):
                seconds["uncached"].append(timed(q, args.tasks))
                seconds["first"].append(timed(q, args.tasks, cache=True))
                seconds["hit"].append(timed(q, args.tasks, cache=True))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, value in medians.items():
        print(f"{name:9} {args.tasks / value:9,.0f} calls/s  ({value:.3f} s)")
    print(f"first / uncached time: {medians['first'] / medians['uncached']:.2f}x")
    print(f"hit / uncached time:   {medians['hit'] / medians['uncached']:.2f}x")


if __name__ == "__main__":
    main()
