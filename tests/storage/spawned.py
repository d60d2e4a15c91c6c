"""Run worker functions in "spawn" processes started together (a barrier), and read what each reported.

A worker function takes its own arguments, then the barrier and the path of its report,
and writes a JSON report there (``{"error": traceback}`` when it failed). It must live in
a module a spawned child can import by name (not a test module): the tests put this folder
on ``sys.path``, which spawned children inherit.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

JOIN_SECONDS = 120


def run_together(
    target: Callable[..., None], arguments: Sequence[tuple[Any, ...]], folder: Path
) -> list[dict[str, Any]]:
    """Start one process per argument tuple, all released at once; return each one's report, in order."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(len(arguments))
    outs = [folder / f"report-{n}.json" for n in range(len(arguments))]
    processes = [
        context.Process(target=target, args=(*args, start, str(out)), name=f"omniq-spawned-{n}")
        for n, (args, out) in enumerate(zip(arguments, outs, strict=True))
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join(JOIN_SECONDS)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
    reports = []
    for process, out in zip(processes, outs, strict=True):
        report = json.loads(out.read_text()) if out.exists() else {"error": "no report written"}
        assert process.exitcode == 0 and "error" not in report, (
            f"{process.name} ended with exit code {process.exitcode}: {report.get('error')}"
        )
        reports.append(report)
    return reports
