"""What printing costs a task: ``kind="process"`` against ``kind="thread"``, in the same run.

Run: ``python benchmarks/bench_output.py [--lines 1000000] [--repeat 1]``

A task prints ``--lines`` short lines (``print(f"line {i}")``); the pool runs it on a SQLite
file with an output sink that counts what reaches it (as a notebook cell's would), so the
terminal costs nothing. Prints the seconds from enqueue to result for each kind, the
process / thread ratio, and how many characters reached the sink and were kept in the store.

Before output batching a process task's every write was one message to the parent: 1e6
lines took many times as long as on a thread.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import omniq_nb as omniq


def chatter(lines: int) -> int:
    """Print ``lines`` short lines."""
    for i in range(lines):
        print(f"line {i}")
    return lines


class CountingSink:
    """An output sink that counts the characters it gets (thread-safe enough for one task)."""

    def __init__(self) -> None:
        self.chars = 0

    def __call__(self, kind: str, payload: Any) -> None:
        if kind in ("stdout", "stderr"):
            self.chars += len(payload)


async def run_one(url: str, kind: str, lines: int) -> tuple[float, int, int]:
    """Return (seconds, characters that reached the sink, characters kept) for one printing task."""
    sink = CountingSink()
    async with (
        omniq.AsyncOmniQ(db_url=url) as q,
        omniq.AsyncWorkerPool(q, concurrency=1, kind=kind, output=lambda _: sink),
    ):
        if kind == "process":  # start the child first: its start is not what is measured
            await (await q.enqueue(chatter, 0)).result(timeout=60)
        began = time.perf_counter()
        h = await q.enqueue(chatter, lines)
        await h.result(timeout=3600)
        seconds = time.perf_counter() - began
        kept = 0
        output = getattr(q.storage, "output", None)
        if output is not None:  # a store without kept output (before issue 19)
            after = 0
            while page := (await output(h.id, after=after)).chunks:
                kept += sum(len(c.text) for c in page)
                after = page[-1].seq
    return seconds, sink.chars, kept


def route_thread_output() -> None:
    """Send a thread task's prints to its sink, as in a notebook (a pool does it itself since issue 19)."""
    try:
        from omniq_nb.worker.capture import route_streams
    except ImportError:  # before issue 19: the notebook's stand-ins did it
        import sys

        from omniq_nb.notebook.output import _RoutedStream  # type: ignore[attr-defined]

        sys.stdout, sys.stderr = _RoutedStream("stdout", sys.stdout), _RoutedStream("stderr", sys.stderr)
        return
    route_streams()


def main() -> None:
    """Run the benchmark and print its numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    route_thread_output()
    expected = sum(len(f"line {i}\n") for i in range(args.lines))
    with tempfile.TemporaryDirectory() as folder:
        seconds: dict[str, list[float]] = {"thread": [], "process": []}
        for n in range(args.repeat):
            for kind in seconds:
                url = f"sqlite:///{Path(folder) / f'{kind}-{n}.db'}"
                took, reached, kept = asyncio.run(run_one(url, kind, args.lines))
                seconds[kind].append(took)
                print(f"{kind:8} {args.lines:,} lines {took:.2f} s, sink {reached:,}/{expected:,} chars, kept {kept:,}")
    thread, process = min(seconds["thread"]), min(seconds["process"])
    print(f"best: thread {thread:.2f} s, process {process:.2f} s, process/thread {process / thread:.1f}x")


if __name__ == "__main__":
    main()
