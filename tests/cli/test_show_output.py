"""``omniq-nb show ID --output`` prints what a task printed, kept by the worker process that ran it (issue 19).

Real ``omniq-nb worker`` processes on a SQLite file run the tasks; the command runs as a real
subprocess. Waits are bounded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import worker_tasks as wt
from processes import Processes

from omniq_nb import OmniQ

RUN_WAIT = 60.0


def show(url: str, task_id: str, *flags: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(wt.FOLDER), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "omniq_nb", "show", task_id, "--db-url", url, *flags],
        capture_output=True,
        text=True,
        timeout=RUN_WAIT,
        env=env,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("kind", ["thread", "process", "gevent"])
def test_show_output_prints_what_a_cli_worker_kept(
    tmp_path: Path, kind: str, wait_until_sync: Callable[..., Any]
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    workers = Processes(tmp_path, wait_until_sync, paths=[wt.FOLDER])
    try:
        worker = workers.worker(url, concurrency=2, kind=kind)
        with OmniQ(db_url=url, poll_interval=0.05) as q:
            h = q.enqueue(wt.chatter, 30)
            quiet = q.enqueue(wt.add, 1, 2)
            assert h.result(timeout=RUN_WAIT) == 30
            assert quiet.result(timeout=RUN_WAIT) == 3
        shown = show(url, h.id, "--output")
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines.index("output:") < lines.index("line 0")
        assert lines[lines.index("line 0") :] == [f"line {i}" for i in range(30)], shown.stdout
        assert shown.stderr.splitlines() == ["err 0", "err 10", "err 20"]
        wait_until_sync(lambda: "line 29" in worker.text(), timeout=RUN_WAIT)  # still printed by the worker too
        assert "output: none kept" in show(url, quiet.id, "--output").stdout
        assert "output:" not in show(url, h.id).stdout  # only with --output
    finally:
        workers.close()


def test_show_output_says_when_the_head_was_dropped(tmp_path: Path, wait_until_sync: Callable[..., Any]) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    workers = Processes(tmp_path, wait_until_sync, paths=[wt.FOLDER])
    try:
        workers.worker(url, concurrency=1, OMNIQ_OUTPUT_LINES="10")
        with OmniQ(db_url=url, poll_interval=0.05) as q:
            h = q.enqueue(wt.chatter, 200)
            assert h.result(timeout=RUN_WAIT) == 200
        shown = show(url, h.id, "--output")
        assert shown.returncode == 0, shown.stderr
        assert "[earlier output was dropped" in shown.stdout
        assert shown.stdout.rstrip().endswith("line 199")
        assert "line 0\n" not in shown.stdout
    finally:
        workers.close()
