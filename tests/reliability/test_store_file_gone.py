"""Promise: a store file deleted or moved under a running worker or queue is noticed within a
few poll intervals; the worker logs one clear error naming the path and stops, and an
enqueue raises ``StoreLost`` instead of acknowledging a task into an orphaned file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import harness
import pytest
from harness import START_WAIT, Processes

from omniq_nb import OmniQ, WorkerPool
from omniq_nb.errors import StoreLost

STOP_WAIT = 30.0


def remove_store(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


@pytest.mark.parametrize("how", ["deleted", "folder-moved"])
def test_a_worker_whose_store_file_went_away_stops_with_one_clear_error(
    procs: Processes, tmp_path: Path, how: str
) -> None:
    db = tmp_path / "store" / "omniq.db"
    with OmniQ(db_url=f"sqlite:///{db}") as q:
        worker = procs.worker(f"sqlite:///{db}", concurrency=1)
        assert q.enqueue(harness.echo, 3).result(timeout=START_WAIT) == 3  # it serves
    if how == "deleted":
        remove_store(db)
    else:
        (tmp_path / "store").rename(tmp_path / "moved")
    assert worker.process.wait(timeout=STOP_WAIT) != 0
    gone = [line for line in worker.text().splitlines() if "deleted or moved" in line]
    assert gone and all(str(db) in line for line in gone), worker.text()
    assert "stops:" in worker.text()


def test_a_queue_whose_store_file_was_deleted_refuses_to_enqueue_and_its_pool_stops(
    tmp_path: Path, wait_until_sync: Callable[..., None]
) -> None:
    db = tmp_path / "omniq.db"
    with OmniQ(db_url=f"sqlite:///{db}", poll_interval=0.05) as q:
        pool = WorkerPool(q, concurrency=1)
        pool.start()
        try:
            assert q.enqueue(harness.echo, 4).result(timeout=START_WAIT) == 4
            remove_store(db)
            with pytest.raises(StoreLost, match=str(db)):
                q.enqueue(harness.echo, 6)
            wait_until_sync(lambda: not pool.running, timeout=STOP_WAIT)
        finally:
            pool.stop()
    with OmniQ(db_url=f"sqlite:///{db}") as fresh:  # reopening starts a new store at the path
        assert fresh.list() == []
