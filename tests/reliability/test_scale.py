"""Promise: 100,000 queued tasks keep memory, lookups and the WAL bounded.

The same scenario runs with 1,000 and with 100,000 tasks: an enqueuer process adds them
(``enqueue_many`` in groups of 1,000) and a worker process drains them while this process
watches the file. With 100,000 the peak RSS of the enqueuer and of the worker stays within a
generous bound of the 1,000-task run (no per-task growth), ``get`` by id is an index search
in the real file's query plan (``EXPLAIN QUERY PLAN``, not timing), and the ``-wal`` file
stays under the store's ``journal_size_limit`` while the worker drains (checkpoints run).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import harness
import pytest
from harness import DRAIN_WAIT, START_WAIT, OverlappingReaders, Processes

from omniq_nb import AsyncOmniQ
from omniq_nb.storage.sqlite_schema import JOURNAL_SIZE_LIMIT

SMALL, LARGE = 1_000, 100_000
MIB = 1024


class Footprint(NamedTuple):
    enqueuer_kib: int
    worker_kib: int
    wal_max: int  # bytes


def _drain(procs: Processes, folder: Path, n: int, wait_until_sync: Any, *, readers: bool = False) -> Footprint:
    folder.mkdir()
    db = folder / "jobs.db"
    url = f"sqlite:///{db}"
    enqueuer = procs.script("enqueue", url, str(n), "--batch", "1000", name=f"enqueue-{n}")
    wait_until_sync(lambda: enqueuer.says("^VmHWM"), timeout=START_WAIT + 120)
    assert enqueuer.process.wait(timeout=60) == 0, enqueuer.text()
    enqueuer_kib = int(enqueuer.text().split("VmHWM ")[1].split()[0])
    assert harness.counts(db) == {"pending": n}

    wal, wal_max, checked = Path(f"{db}-wal"), [0], [0.0]

    def drained() -> bool:
        if wal.exists():
            wal_max[0] = max(wal_max[0], wal.stat().st_size)
        if time.monotonic() - checked[0] < 0.25:
            return False
        checked[0] = time.monotonic()
        sql = "SELECT EXISTS (SELECT 1 FROM tasks WHERE status IN ('pending', 'running'))"
        return harness.query(db, sql) == [(0,)]

    worker = procs.worker(url, concurrency=16, lease=30, kind="async")
    with OverlappingReaders(db) if readers else contextlib.nullcontext():
        wait_until_sync(drained, timeout=DRAIN_WAIT)
    worker_kib = harness.vm_hwm_kib(worker.pid)
    assert worker.terminate() == 0
    assert harness.counts(db) == {"succeeded": n}
    assert harness.healthy(db) == "ok"
    return Footprint(enqueuer_kib, worker_kib, wal_max[0])


async def _get_statements(url: str, task_id: str) -> list[str]:
    """Return the SQL statements ``get(task_id)`` runs (traced on the store's own connection)."""
    async with AsyncOmniQ(db_url=url) as q:
        statements: list[str] = []
        connection = q.storage._db  # type: ignore[attr-defined]  # the real connection: trace, do not replace
        inline = q.storage._inline._conn  # type: ignore[attr-defined]  # where lone quick statements run
        await connection.set_trace_callback(statements.append)
        inline.set_trace_callback(statements.append)
        handle = await q.get(task_id)
        inline.set_trace_callback(None)
        await connection.set_trace_callback(None)
    assert handle.id == task_id
    return statements


@pytest.mark.slow
def test_hundred_thousand_tasks_keep_memory_lookups_and_wal_bounded(
    procs: Processes, tmp_path: Path, wait_until_sync
) -> None:
    small = _drain(procs, tmp_path / "small", SMALL, wait_until_sync)
    large = _drain(procs, tmp_path / "large", LARGE, wait_until_sync)
    print(f"footprints: {SMALL} tasks {small}, {LARGE} tasks {large}")
    assert large.enqueuer_kib <= 1.5 * small.enqueuer_kib, (small, large)  # ~330 B per task leaked before the fix
    assert large.worker_kib <= 1.5 * small.worker_kib, (small, large)
    assert 0 < large.wal_max <= JOURNAL_SIZE_LIMIT, (small, large)

    db = tmp_path / "large" / "jobs.db"
    [(task_id,)] = harness.query(db, "SELECT id FROM tasks ORDER BY random() LIMIT 1")
    statements = [s for s in asyncio.run(_get_statements(f"sqlite:///{db}", task_id)) if task_id in s]
    assert statements, "get ran no statement naming the id"
    for statement in statements:
        plan = " / ".join(row[3] for row in harness.query(db, f"EXPLAIN QUERY PLAN {statement}"))
        assert "SCAN" not in plan and "USING" in plan and "INDEX" in plan, f"{statement}: {plan}"
    assert os.path.getsize(db) > 0


@pytest.mark.slow
def test_wal_stays_bounded_while_readers_overlap(procs: Processes, tmp_path: Path, wait_until_sync) -> None:
    """Promise: the WAL stays under journal_size_limit while a worker drains and short reads overlap."""
    footprint = _drain(procs, tmp_path / "readers", 30_000, wait_until_sync, readers=True)
    print(f"footprint with overlapping readers: {footprint}")
    assert footprint.wal_max <= JOURNAL_SIZE_LIMIT, footprint
