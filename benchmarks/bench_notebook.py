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
import json
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

TARGET_P95_MS = 50.0
TARGET_RATE = 50.0

TASK = """
@omniq.task
def work(i):
    for step in range(100):
        omniq.progress(step + 1, 100)
        time.sleep(0.00005)  # 100 x 50 us: about 5 ms in all
    return i
"""


class Recorder:
    """Drains iopub on a thread, keeping (arrival time, msg_type, parent msg_id, comm method or execution state)."""

    def __init__(self, kc: BlockingKernelClient) -> None:
        self.kc = kc
        self.records: list[tuple[float, str, str | None, str | None]] = []
        self.lock = threading.Condition()
        self.idle: set[str | None] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while not self.stop.is_set():
            try:
                msg = self.kc.get_iopub_msg(timeout=0.05)
            except queue.Empty:
                continue
            kind, content = msg["msg_type"], msg["content"]
            detail = content.get("data", {}).get("method") if kind == "comm_msg" else content.get("execution_state")
            parent = msg["parent_header"].get("msg_id")
            with self.lock:
                self.records.append((time.monotonic(), kind, parent, detail))
                if kind == "status" and detail == "idle":
                    self.idle.add(parent)
                self.lock.notify_all()

    def wait_idle(self, msg_id: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while msg_id not in self.idle:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no idle status for {msg_id} within {timeout} s")
                self.lock.wait(min(left, 0.1))

    def between(self, start: float, end: float) -> list[tuple[float, str, str | None, str | None]]:
        with self.lock:
            return [r for r in self.records if start <= r[0] <= end]


@dataclass
class Phase:
    name: str
    round_trips: list[float] = field(default_factory=list)
    probes: set[str] = field(default_factory=set)
    start: float = 0.0
    end: float = 0.0

    def report(self, recorder: Recorder, opened_before: float | None = None) -> dict[str, Any]:
        seconds = self.end - self.start
        records = recorder.between(self.start, self.end)
        ours = [r for r in records if r[2] not in self.probes]
        steady = [r for r in ours if r[1] != "comm_open" and (opened_before is None or r[0] > opened_before)]
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
            "comm_opens": sum(1 for r in ours if r[1] == "comm_open"),
            "kinds": Counter(r[3] or r[1] for r in ours).most_common(6),
        }


class Bench:
    def __init__(self, folder: Path) -> None:
        spec_dir = folder / "kernels" / "omniq-bench"
        spec_dir.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (spec_dir / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "bench", "language": "python"}))
        specs = KernelSpecManager(kernel_dirs=[str(folder / "kernels")], ensure_native_kernel=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
        env.update(OMNIQ_AUTOSTART="0", PYDEVD_DISABLE_FILE_VALIDATION="1")
        self.km = KernelManager(kernel_name="omniq-bench", kernel_spec_manager=specs)
        self.km.start_kernel(cwd=str(folder), env=env)
        self.kc: BlockingKernelClient = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=90)
        self.recorder = Recorder(self.kc)

    def execute(self, code: str, timeout: float = 120.0, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        msg_id = self.kc.execute(code, **kwargs)
        reply = self._reply(msg_id, timeout)
        self.recorder.wait_idle(msg_id, timeout)
        if reply["status"] != "ok":
            raise RuntimeError(f"{code[:60]!r} failed: {reply.get('ename')}: {reply.get('evalue')}")
        return msg_id, reply

    def _reply(self, msg_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") == msg_id:
                return dict(msg["content"])

    def probe(self, phase: Phase) -> None:
        sent = time.monotonic()
        msg_id = self.kc.execute("pass", store_history=False)
        self._reply(msg_id, 60)
        phase.round_trips.append(time.monotonic() - sent)
        phase.probes.add(msg_id)

    def close(self) -> None:
        self.recorder.stop.set()
        self.recorder.thread.join(5)
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


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
        bench = Bench(Path(folder))
        try:
            bench.execute("%load_ext omniq_nb\nimport time\nimport omniq_nb as omniq")
            bench.execute("%omniq workers start -n 4 --kind thread")
            bench.execute(TASK)

            idle = Phase("idle (no tasks)")
            idle.start = time.monotonic()
            while time.monotonic() - idle.start < args.idle_seconds:
                bench.probe(idle)
                time.sleep(args.probe_interval)  # pacing the probes, not synchronizing
            idle.end = time.monotonic()

            loaded = Phase(f"loaded ({args.tasks} tasks, views: {args.views})")
            loaded.start = time.monotonic()
            submit_id, _ = bench.execute(submit_code(args.tasks, args.views))
            submitted = time.monotonic()  # no probe runs while the submit cell does
            loaded.probes.discard(submit_id)
            finished = "all(h.done() for h in handles)"
            checks = 0
            while True:
                bench.probe(loaded)
                checks += 1
                if checks % 10 == 0:
                    check_id = bench.kc.execute("", store_history=False, user_expressions={"v": finished})
                    done = bench._reply(check_id, 60)["user_expressions"]["v"]["data"]["text/plain"] == "True"
                    loaded.probes.add(check_id)
                    if done:
                        break
                time.sleep(args.probe_interval)
            loaded.end = time.monotonic()
            all_done = loaded.end - loaded.start
            return [
                idle.report(bench.recorder),
                {
                    **loaded.report(bench.recorder, opened_before=submitted),
                    "all_done_s": all_done,
                    "submit_s": submitted - loaded.start,
                },
            ]
        finally:
            bench.close()


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
