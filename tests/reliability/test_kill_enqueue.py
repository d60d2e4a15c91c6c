"""Promise: ``kill -9`` during ``enqueue_many`` (or ``.map``) of 50,000 tasks leaves all of them or none.

The enqueuer is killed at several points: while it serializes, the moment another process
finds the write lock taken (the insert transaction is open), a little later, at a random
moment, and after the call returned (then all 50,000 must be there). Every time the file
holds 0 or 50,000 tasks, passes ``PRAGMA integrity_check``, and still takes new tasks.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import time
from pathlib import Path

import harness
import pytest
from harness import START_WAIT, Processes

from omniq_nb import OmniQ

N = 50_000


def _write_locked(db: Path) -> bool:
    """Return whether another connection holds the write lock (probed with ``BEGIN IMMEDIATE``, no wait)."""
    with contextlib.closing(sqlite3.connect(db, timeout=0, isolation_level=None)) as conn:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc) or "busy" in str(exc), exc
            return True
        conn.execute("ROLLBACK")
        return False


@pytest.mark.parametrize(
    ("api", "point"),
    [
        ("enqueue_many", "serializing"),
        ("enqueue_many", "transaction-open"),
        ("enqueue_many", "transaction-open+0.2s"),
        ("enqueue_many", "random"),
        ("enqueue_many", "returned"),
        ("map", "transaction-open"),
        ("map", "returned"),
    ],
)
def test_kill_9_during_enqueue_many_leaves_all_or_none(
    procs: Processes, db: Path, url: str, api: str, point: str, wait_until_sync
) -> None:
    args = [url, str(N), "--batch", str(N), "--wait", "--hold"] + (["--map"] if api == "map" else [])
    enqueuer = procs.script("enqueue", *args, stdin=True, OMNIQ_DB_URL=url)
    wait_until_sync(lambda: enqueuer.says("^ready"), timeout=START_WAIT)
    enqueuer.send()
    wait_until_sync(lambda: enqueuer.says("^enqueuing"), timeout=60)
    if point == "serializing":
        time.sleep(0.05)  # picks the kill moment: not a wait for a condition
    elif point.startswith("transaction-open"):
        wait_until_sync(lambda: _write_locked(db), timeout=60)
        if point.endswith("+0.2s"):
            time.sleep(0.2)  # picks the kill moment: not a wait for a condition
    elif point == "random":
        time.sleep(random.uniform(0.0, 1.5))  # picks the kill moment: not a wait for a condition
    else:
        wait_until_sync(lambda: enqueuer.says(f"^enqueued {N}"), timeout=60)
    enqueuer.kill9()

    held = harness.query(db, "SELECT count(*) FROM tasks")[0][0]
    if point == "returned":
        assert held == N, "tasks whose enqueue returned were lost"
    else:
        assert held in (0, N), f"killed at {point}: a partial batch of {held} tasks survived"
    assert harness.healthy(db) == "ok"
    with OmniQ(db_url=url) as q:  # the file still works
        assert q.enqueue_many(harness.noop, [(), ()]).ids
    assert harness.query(db, "SELECT count(*) FROM tasks")[0][0] == held + 2
