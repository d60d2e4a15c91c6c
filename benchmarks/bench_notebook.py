"""Kernel responsiveness and iopub traffic while 1,000 progress-reporting tasks run with live views.

Run: ``python benchmarks/bench_notebook.py [--tasks 1000] [--views group|per-task] [--probe-interval 0.05]``

A real ipykernel 7 kernel (this Python) loads the extension with ``OMNIQ_AUTOSTART=0`` and
starts ``%omniq workers start -n 4 --kind thread``. Then two phases run, in this order:

1. *idle* (the peer): no tasks; a trivial cell (``pass``) is executed every
   ``--probe-interval`` seconds and its execute round trip (``execute_request`` sent ->
   ``execute_reply`` received) is timed, for ``--idle-seconds``.
2. *loaded*: one cell submits ``--tasks`` tasks of about 5 ms, each reporting progress 100
   times (``omniq.progress``), and displays their views; the same probes run until every
   task has finished and its view has drawn its last frame.

Which views are displayed (``--views``):

- ``group`` (default, what a notebook user would write): the tasks are one ``.map()`` over
  all but 5 inputs, displayed as its single ``GroupView``, plus 5 tasks submitted one by one,
  each displayed as its ``TaskView``. A ``.map()`` is designed to show one aggregate view,
  never a widget per task.
- ``per-task``: every task is submitted alone and displayed as its own ``TaskView`` (about
  14 widget models each): the worst case, for comparison.

Printed per phase: round trip p50/p95/max (probes start once the submit cell has returned;
its own duration is printed apart), and iopub messages per second, in all and
without the probes' own messages (each probe causes ``busy``, ``execute_input`` and
``idle``): the latter is the traffic tasks and views cause. Targets: loaded p95 <= 50 ms
and view/task traffic <= 50 msg/s. The widgets' comm_open burst when views are first
displayed is counted too, and reported apart. Always exits 0.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the kernel driver the tests use
from kernel_driver import Kernel, Message, start_kernel, write_kernel_spec

TARGET_P95_MS = 50.0
TARGET_RATE = 50.0
CELL_TIMEOUT = 120.0

TASK = """
@omniq.task
def work(i):
    for step in range(100):
        omniq.progress(step + 1, 100)
        time.sleep(0.00005)  # 100 x 50 us: about 5 ms in all
    return i
"""


def detail(message: Message) -> str | None:
    """Return a comm message's method or a status message's execution state."""
    return message.comm_method if message.msg_type == "comm_msg" else message.content.get("execution_state")


@dataclass
class Phase:
    name: str
    round_trips: list[float] = field(default_factory=list)
    probes: set[str] = field(default_factory=set)
    start: float = 0.0
    end: float = 0.0

    def probe(self, kernel: Kernel) -> None:
        """Time one trivial cell's round trip: ``execute_request`` sent -> ``execute_reply`` received."""
        cell = kernel.send("pass", store_history=False)
        kernel.wait_for(lambda: cell.replied_at is not None, 60, "a probe's reply")
        assert cell.replied_at is not None
        self.round_trips.append(cell.replied_at - cell.sent_at)
        self.probes.add(cell.msg_id)

    def report(self, kernel: Kernel, opened_before: float | None = None) -> dict[str, Any]:
        seconds = self.end - self.start
        records = [m for m in kernel.messages if self.start <= m.at <= self.end]
        ours = [m for m in records if m.parent_id not in self.probes]
        steady = [m for m in ours if m.msg_type != "comm_open" and (opened_before is None or m.at > opened_before)]
        trips = sorted(self.round_trips)
        return {
            "phase": self.name,
            "seconds": seconds,
            "probes": len(trips),
            "p50_ms": 1000 * statistics.median(trips),
            "p95_ms": 1000 * trips[min(len(trips) - 1, int(0.95 * len(trips)))],
            "max_ms": 1000 * trips[-1],
            "iopub_total_per_s": len(records) / seconds,
            "iopub_views_tasks_per_s": len(ours) / seconds,
            "iopub_views_tasks_steady_per_s": len(steady) / seconds,
            "comm_opens": sum(1 for m in ours if m.msg_type == "comm_open"),
            "kinds": Counter(detail(m) or m.msg_type for m in ours).most_common(6),
        }


def submit_code(tasks: int, views: str) -> str:
    if views == "per-task":
        return f"handles = [work.submit(i) for i in range({tasks})]\nfor h in handles:\n    display(h)\n"
    singles = min(5, tasks)
    return (
        f"g = work.map(range({tasks - singles}))\n"
        f"handles = list(g) + [work.submit(i) for i in range({singles})]\n"
        f"display(g, *handles[{tasks - singles}:])\n"
    )


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="omniq-bench-nb-") as folder:
        specs = write_kernel_spec(Path(folder) / "kernels", "omniq-bench")
        kernel = start_kernel(specs, "omniq-bench", Path(folder), {"OMNIQ_AUTOSTART": "0"})
        try:
            kernel.run("%load_ext omniq_nb\nimport time\nimport omniq_nb as omniq", CELL_TIMEOUT)
            kernel.run("%omniq workers start -n 4 --kind thread", CELL_TIMEOUT)
            kernel.run(TASK, CELL_TIMEOUT)

            idle = Phase("idle (no tasks)")
            idle.start = time.monotonic()
            while time.monotonic() - idle.start < args.idle_seconds:
                idle.probe(kernel)
                time.sleep(args.probe_interval)  # pacing the probes, not synchronizing
            idle.end = time.monotonic()

            loaded = Phase(f"loaded ({args.tasks} tasks, views: {args.views})")
            loaded.start = time.monotonic()
            kernel.run(submit_code(args.tasks, args.views), CELL_TIMEOUT)
            submitted = time.monotonic()  # no probe runs while the submit cell does
            finished = "all(h.done() for h in handles)"
            checks = 0
            while True:
                loaded.probe(kernel)
                checks += 1
                if checks % 10 == 0:
                    check = kernel.send("", store_history=False, user_expressions={"v": finished})
                    kernel.wait_for(lambda check=check: check.reply is not None, 60, "the check's reply")
                    assert check.reply is not None
                    done = check.reply["user_expressions"]["v"]["data"]["text/plain"] == "True"
                    loaded.probes.add(check.msg_id)
                    if done:
                        break
                time.sleep(args.probe_interval)
            loaded.end = time.monotonic()
            all_done = loaded.end - loaded.start
            return [
                idle.report(kernel),
                {
                    **loaded.report(kernel, opened_before=submitted),
                    "all_done_s": all_done,
                    "submit_s": submitted - loaded.start,
                },
            ]
        finally:
            kernel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--views", choices=("group", "per-task"), default="group")
    parser.add_argument("--probe-interval", type=float, default=0.05, help="seconds between probe cells")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args()
    results = run(args)
    print(f"kernel responsiveness and iopub traffic ({sys.executable}, {os.cpu_count()} CPUs)")
    print(f"probe: execute 'pass' every {args.probe_interval * 1000:.0f} ms, time execute_request -> execute_reply")
    for result in results:
        print(f"\n== {result['phase']}: {result['seconds']:.1f} s, {result['probes']} probes")
        print(
            f"   round trip   p50 {result['p50_ms']:6.1f} ms   p95 {result['p95_ms']:6.1f} ms   "
            f"max {result['max_ms']:6.1f} ms"
        )
        print(
            f"   iopub        {result['iopub_total_per_s']:6.1f} msg/s in all; "
            f"{result['iopub_views_tasks_per_s']:6.1f} msg/s from views and tasks "
            f"({result['iopub_views_tasks_steady_per_s']:.1f} msg/s without the {result['comm_opens']} comm_open "
            f"and the submit cell's burst)"
        )
        print(f"   busiest      {', '.join(f'{kind} {n}' for kind, n in result['kinds'])}")
        if "all_done_s" in result:
            print(
                f"   the submit cell (enqueue, create and display the views) took {result['submit_s']:.2f} s; "
                f"all tasks finished {result['all_done_s']:.1f} s after it was sent"
            )
    idle, loaded = results
    p95_ok = loaded["p95_ms"] <= TARGET_P95_MS
    rate_ok = loaded["iopub_views_tasks_per_s"] <= TARGET_RATE
    print(
        f"\nloaded p95 {loaded['p95_ms']:.1f} ms vs idle {idle['p95_ms']:.1f} ms "
        f"(target <= {TARGET_P95_MS:.0f} ms): {'MET' if p95_ok else 'MISSED'}"
    )
    print(
        f"views/tasks iopub {loaded['iopub_views_tasks_per_s']:.1f} msg/s vs idle "
        f"{idle['iopub_views_tasks_per_s']:.1f} msg/s (target <= {TARGET_RATE:.0f} msg/s): "
        f"{'MET' if rate_ok else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
