"""Promise: processes sharing one SQLite file never lose a task whose ``enqueue`` returned.

The scenario of the durability report: a process holds the store open, opens a second
store object on the same file, another process lists the store and closes; the first then
enqueues, its tasks are visible to others while it lives, and after ``kill -9`` every
acknowledged task is still in the file and the WAL was never deleted under it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import harness
import pytest

_ENQUEUER = textwrap.dedent(
    """
    import sys
    import omniq_nb as omniq

    def sq(x):
        return x * x

    q = omniq.OmniQ(db_url=sys.argv[1])
    print(q.enqueue(sq, 3).id, flush=True)
    if sys.argv[2] == "second-store":
        omniq.OmniQ(db_url=sys.argv[1]).close()   # a second store object in this process
    else:
        pool = omniq.WorkerPool(q, concurrency=2)  # its lease thread opens its own connection
        pool.start()
    print("second-closed", flush=True)
    sys.stdin.readline()                          # the test lists the store from outside
    for i in range(5):
        print(q.enqueue(sq, i).id, flush=True)
    print("enqueued", flush=True)
    sys.stdin.readline()                          # wait to be killed
    """
)


def _read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"the enqueuer ended early (exit {proc.wait(timeout=30)})"
    return line.strip()


def _task_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:  # a fresh connection, as another process sees the file
        return {row[0] for row in conn.execute("SELECT id FROM tasks")}


@pytest.mark.parametrize("opener", ["second-store", "pool"])
def test_acknowledged_tasks_survive_a_listing_process_and_kill_9(tmp_path: Path, opener: str) -> None:
    db = tmp_path / "jobs.db"
    url = f"sqlite:///{db}"
    proc = subprocess.Popen(
        [sys.executable, "-c", _ENQUEUER, url, opener], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        acknowledged = [_read_line(proc)]
        assert _read_line(proc) == "second-closed"
        listing = subprocess.run(
            [sys.executable, "-m", "omniq_nb", "--db-url", url, "list"], capture_output=True, text=True, timeout=60
        )
        assert listing.returncode == 0, listing.stderr
        assert acknowledged[0] in listing.stdout
        assert (tmp_path / "jobs.db-wal").exists(), "the live WAL was deleted by a listing process"
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        acknowledged += [_read_line(proc) for _ in range(5)]
        assert _read_line(proc) == "enqueued"
        assert set(acknowledged) <= _task_ids(db), "another process cannot see tasks the live process enqueued"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert set(acknowledged) <= _task_ids(db)
    assert harness.healthy(db) == "ok"
