"""Promise: a store file deleted or moved under a running worker or queue is noticed within a
few poll intervals; the worker logs one clear error naming the path and stops, and an
enqueue raises ``StoreLost`` instead of acknowledging a task into an orphaned file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import worker_tasks as wt

from omniq_nb import OmniQ, WorkerPool
from omniq_nb.errors import StoreLost

TESTS = Path(__file__).resolve().parents[1]
START_WAIT = 60.0
STOP_WAIT = 30.0


def remove_store(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


@pytest.fixture
def worker(tmp_path: Path, wait_until_sync: Callable[..., None]) -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(db: Path) -> subprocess.Popen[str]:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
        env["OMNIQ_POLL_INTERVAL"] = "0.1"
        process = subprocess.Popen(
            [sys.executable, "-m", "omniq_nb", "worker", "--db-url", f"sqlite:///{db}", "--log-level", "INFO"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=STOP_WAIT)
        assert process.stderr is not None
        process.stderr.close()


@pytest.mark.parametrize("how", ["deleted", "folder-moved"])
def test_a_worker_whose_store_file_went_away_stops_with_one_clear_error(
    tmp_path: Path, worker: Callable[[Path], subprocess.Popen[str]], how: str
) -> None:
    db = tmp_path / "store" / "omniq.db"
    with OmniQ(db_url=f"sqlite:///{db}") as q:
        process = worker(db)
        assert q.enqueue(wt.add, 1, 2).result(timeout=START_WAIT) == 3  # it serves
    if how == "deleted":
        remove_store(db)
    else:
        (tmp_path / "store").rename(tmp_path / "moved")
    assert process.wait(timeout=STOP_WAIT) != 0
    assert process.stderr is not None
    log = process.stderr.read()
    gone = [line for line in log.splitlines() if "deleted or moved" in line]
    assert gone and all(str(db) in line for line in gone), log
    assert "stops:" in log


def test_a_queue_whose_store_file_was_deleted_refuses_to_enqueue_and_its_pool_stops(
    tmp_path: Path, wait_until_sync: Callable[..., None]
) -> None:
    db = tmp_path / "omniq.db"
    with OmniQ(db_url=f"sqlite:///{db}", poll_interval=0.05) as q:
        pool = WorkerPool(q, concurrency=1)
        pool.start()
        try:
            assert q.enqueue(wt.add, 2, 2).result(timeout=START_WAIT) == 4
            remove_store(db)
            with pytest.raises(StoreLost, match=str(db)):
                q.enqueue(wt.add, 3, 3)
            wait_until_sync(lambda: not pool.running, timeout=STOP_WAIT)
        finally:
            pool.stop()
    with OmniQ(db_url=f"sqlite:///{db}") as fresh:  # reopening starts a new store at the path
        assert fresh.list() == []
