"""``omniq-nb check`` and ``q.check()`` on real SQLite files: healthy, damaged, too new, missing, a killed worker.

Each command runs as a real subprocess. Files are damaged only while no connection of this
process is open on them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import worker_tasks as wt
from processes import Child, Processes
from test_cli import TESTS, run

from omniq_nb import AsyncOmniQ, OmniQ, StorageError, WorkerPool
from omniq_nb.storage.sqlite_schema import SCHEMA_VERSION

WaitSync = Callable[..., Any]
START_WAIT = 60.0  # seconds for a worker process to start and claim (imports on a loaded machine)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store" / "omniq.db"


@pytest.fixture
def url(db: Path) -> str:
    return f"sqlite:///{db}"


def make_store(url: str, *, pending: int = 2, cancelled: int = 1) -> None:
    """Fill a new store with tasks nobody runs, and close it (its WAL is checkpointed away)."""
    with OmniQ(db_url=url) as q:
        for n in range(pending):
            q.enqueue(wt.add, n, n)
        for _ in range(cancelled):
            q.cancel(q.enqueue(wt.add, 0, 0).id)


def fields(output: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in output.splitlines() if " " in line)


def test_a_healthy_store_exits_0_with_one_line_per_fact(url: str) -> None:
    make_store(url)

    done = run("check", "--db-url", url)

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["store", "integrity", "schema", "wal", "tasks", "leases", "ok"]
    found = fields(done.stdout)
    assert found["store"] == url
    assert found["integrity"] == "ok"
    assert found["schema"] == f"version {SCHEMA_VERSION}"
    assert found["tasks"] == "waiting 0, pending 2, running 0, succeeded 0, failed 0, cancelled 1, expired 0"
    assert found["leases"] == "0 expired, 0 of them over 30 s ago"

    as_json = run("check", "--db-url", url, "--json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["ok"] is True
    assert report["problems"] == []
    assert report["schema_version"] == SCHEMA_VERSION
    assert report["counts"] == {
        "waiting": 0,
        "pending": 2,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 1,
        "expired": 0,
    }
    assert isinstance(report["wal_bytes"], int)


def test_a_missing_store_exits_2_and_nothing_is_created(db: Path, url: str) -> None:
    done = run("check", "--db-url", url)

    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert f"no store at {db}" in line
    assert not db.parent.exists(), "check created the store's folder"

    with pytest.raises(StorageError, match="no store at"):
        asyncio.run(AsyncOmniQ(db_url=url).check())
    assert not db.parent.exists()

    bad = run("check", "--db-url", "sqlite:/relative.db")
    assert bad.returncode == 2
    [line] = bad.stderr.strip().splitlines()
    assert "sqlite:/relative.db" in line


def garbage_page(page: bytearray) -> str:
    page[:] = b"\xa5" * len(page)
    return "page {root}: btreeinitpage() returns error code 11"


def altered_entry(page: bytearray) -> str:
    at = page.index(b"pending")
    page[at : at + 7] = b"pendinx"
    return "missing from index tasks_status"


@pytest.mark.parametrize("damage", [garbage_page, altered_entry])
def test_a_damaged_index_page_exits_1_with_the_integrity_report(
    db: Path, url: str, damage: Callable[[bytearray], str]
) -> None:
    make_store(url)
    assert not Path(f"{db}-wal").exists(), "the WAL should have been checkpointed into the file"
    reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        [(page_size,)] = reader.execute("PRAGMA page_size").fetchall()
        [(root,)] = reader.execute("SELECT rootpage FROM sqlite_master WHERE name = 'tasks_status'").fetchall()
    finally:
        reader.close()
    with db.open("r+b") as raw:  # no connection of this process is open on the file now
        raw.seek((root - 1) * page_size)
        page = bytearray(raw.read(page_size))
        expected = damage(page).format(root=root)
        raw.seek((root - 1) * page_size)
        raw.write(page)

    done = run("check", "--db-url", url)

    assert done.returncode == 1, done.stdout + done.stderr
    found = fields(done.stdout)
    assert found["integrity"] == "FAILED"
    assert found["tasks"] == "unknown"  # the index the count reads is damaged
    problems = [line for line in done.stdout.splitlines() if line.startswith("problem")]
    assert problems[0].startswith("problem   integrity check failed: ")
    assert expected in problems[0].lower()
    assert problems[1].startswith("problem   cannot read the store's tables:")
    assert done.stdout.splitlines()[-2:] == problems


def test_a_file_that_is_not_a_database_exits_1(db: Path, url: str) -> None:
    db.parent.mkdir()
    db.write_bytes(b"this is not a SQLite database, just some text " * 100)

    done = run("check", "--db-url", url)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "problem   integrity check failed: file is not a database" in done.stdout


def test_a_schema_newer_than_this_version_exits_1(db: Path, url: str) -> None:
    make_store(url)
    writer = sqlite3.connect(db)
    try:
        writer.execute("INSERT INTO omniq_schema (version) VALUES (99)")
        writer.commit()
    finally:
        writer.close()

    done = run("check", "--db-url", url, "--json")

    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert report["schema_version"] == 99
    assert report["integrity"] == "ok"
    [problem] = report["problems"]
    assert f"schema version 99 is newer than this omniq_nb understands ({SCHEMA_VERSION})" in problem


@pytest.fixture
def worker(tmp_path: Path, url: str, wait_until_sync: WaitSync) -> Iterator[Callable[[], Child]]:
    """Start ``python -m omniq_nb worker`` processes with a 1 s lease; all are killed at teardown."""
    workers = Processes(tmp_path, wait_until_sync)

    def start() -> Child:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p))
        args = ["-m", "omniq_nb", "worker", "--db-url", url, "--lease", "1", "--kind", "thread"]
        return workers.start(args, name="worker", env=env)

    try:
        yield start
    finally:
        workers.close()


@pytest.mark.slow
def test_a_worker_killed_mid_task_is_a_problem_until_a_pool_rescues_it(
    tmp_path: Path, url: str, worker: Callable[[], Child], wait_until_sync: WaitSync
) -> None:
    marker = tmp_path / "started"
    with OmniQ(db_url=url, lease_seconds=1, poll_interval=0.05) as q:
        h = q.enqueue(wt.sleep_in_process, str(marker))
        process = worker()
        wait_until_sync(marker.exists, timeout=START_WAIT)
        assert marker.read_text() == str(process.pid)
        os.kill(process.pid, signal.SIGKILL)
        process.process.wait(30)

        wait_until_sync(lambda: not q.check().ok, timeout=30)  # one lease to run out, one more of grace

        done = run("check", "--db-url", url, env={"OMNIQ_LEASE_SECONDS": "1"})
        assert done.returncode == 1, done.stdout + done.stderr
        found = fields(done.stdout)
        assert found["tasks"].startswith("waiting 0, pending 0, running 1,")
        assert found["leases"] == "1 expired, 1 of them over 1 s ago"
        assert found["problem"].startswith("1 running task(s) lost their worker")
        assert found["problem"].endswith(h.id)

        with WorkerPool(q, concurrency=1, kind="thread", lease=1):
            wait_until_sync(lambda: q.check().ok, timeout=30)
        assert h.status == "failed"  # its only attempt was used by the killed worker

    healthy = run("check", "--db-url", url, "--json")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert json.loads(healthy.stdout)["counts"]["failed"] == 1


_HOLDER = """
import asyncio, sys
import omniq_nb as omniq

q = omniq.OmniQ(db_url=sys.argv[1])
print(q.enqueue(print, 1).id, flush=True)
health = asyncio.run(omniq.AsyncOmniQ(db_url=sys.argv[1]).check())  # unopened: a connection of its own
print(health.ok, flush=True)
sys.stdin.readline()
print(q.enqueue(print, 2).id, flush=True)
sys.stdin.readline()
"""


def test_an_in_process_check_keeps_the_process_locks_and_the_live_wal(db: Path, url: str) -> None:
    db.parent.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        first = holder.stdout.readline().strip()
        assert holder.stdout.readline().strip() == "True"
        outside = run("check", "--db-url", url, "--json")  # closes the last connection but the holder's
        assert outside.returncode == 0, outside.stdout + outside.stderr
        assert json.loads(outside.stdout)["counts"]["pending"] == 1
        assert Path(f"{db}-wal").exists(), "the live WAL was deleted: the holder's locks were dropped"
        holder.stdin.write("\n")
        holder.stdin.flush()
        second = holder.stdout.readline().strip()
        assert second, f"the holder ended early (exit {holder.wait(30)})"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
    finally:
        holder.kill()
        holder.wait(30)
    reader = sqlite3.connect(db)
    try:
        assert {row[0] for row in reader.execute("SELECT id FROM tasks")} == {first, second}
    finally:
        reader.close()
