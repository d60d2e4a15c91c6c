"""Promise: waiting for another process's write lock does not shorten the lease of what a worker claims.

A worker whose only slot frees while another process holds the write lock (as a large
``enqueue_many`` does for seconds) claims as soon as the lock is released. Its lease must
start when the claim takes effect: a lease computed before the wait can be already expired
on arrival, and the task is then rescued and run again although its worker is alive.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import harness
from harness import START_WAIT, Processes

from omniq_nb import OmniQ

HOLD = 3.0  # seconds the write lock is held; more than the lease below
LEASE = 2.0


def test_a_claim_that_waited_for_the_write_lock_gets_a_full_lease(
    procs: Processes, db: Path, url: str, tmp_path: Path, wait_until_sync
) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    worker = procs.worker(url, concurrency=1, lease=LEASE)
    with OmniQ(db_url=url) as q:
        blocker = q.enqueue_call(harness.gated, args=(str(log), str(gate)))
        wait_until_sync(lambda: len(harness.runs(log)) == 1, timeout=START_WAIT)  # the only slot is taken
        waiting = q.enqueue_call(harness.run_once, args=(str(log),), retries=2)
        with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")  # another process's long write transaction
            gate.touch()  # the slot frees: the worker's claim now waits for the lock
            wait_until_sync(lambda: len(harness.runs(Path(f"{log}.end"))) == 1, timeout=60)
            time.sleep(HOLD)  # holds the lock for a fixed time: this is the scenario, not a wait for a condition
            holder.execute("COMMIT")
        assert waiting.result(timeout=60)[0] >= 1
        assert blocker.result(timeout=60)[0] == 1
    [(started_at,)] = harness.query(db, "SELECT started_at FROM tasks WHERE id = ?", (waiting.id,))
    [(took_effect,)] = harness.query(
        db, "SELECT min(at) FROM events WHERE task_id = ? AND kind = 'started'", (waiting.id,)
    )
    assert took_effect - started_at < LEASE / 2, (
        f"the claim's clock (started_at, lease_until = it + {LEASE}) is {took_effect - started_at:.1f} s "
        "before the claim took effect: its lease was already over when it was granted"
    )
    assert [r.attempt for r in harness.runs(log) if r.task_id == waiting.id] == [1], "a healthy worker lost its task"
    assert worker.terminate() == 0
