"""Promise: a full disk loses nothing: enqueue raises a ``StorageError`` that says so and names
the file, every acknowledged task is kept, and a result that could not be written is written
once space is freed, so the task completes.

The store lives on a real, small tmpfs (mounted for the test; CI runs as root).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import worker_tasks as wt

from omniq_nb import OmniQ, StorageError, WorkerPool

RESULT_WAIT = 60.0
BLOB = b"x" * 64_000  # an argument that needs fresh pages of the file


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Write a filler file until the disk is full; return it."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 4096)
    assert os.statvfs(disk).f_bavail == 0
    return filler


def stored_ids(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM tasks")}


def test_enqueue_on_a_full_disk_says_so_and_keeps_every_acknowledged_task(small_disk: Path) -> None:
    db = small_disk / "omniq.db"
    with OmniQ(db_url=f"sqlite:///{db}") as q:
        acknowledged = {q.enqueue(wt.add, n, n).id for n in range(5)}
        filler = fill(small_disk)
        with pytest.raises(StorageError) as refused:
            for _ in range(50):  # the WAL may still have room for a few pages
                acknowledged.add(q.enqueue(len, BLOB).id)
        message = str(refused.value)
        assert "full" in message and str(db) in message and "\n" not in message
        assert acknowledged <= stored_ids(db)
        filler.unlink()
        acknowledged.add(q.enqueue(wt.add, 1, 1).id)  # space is back: enqueue works again
    assert acknowledged <= stored_ids(db)


def test_a_result_write_that_hits_a_full_disk_is_retried_until_space_is_freed(
    small_disk: Path, tmp_path: Path, wait_until_sync: Callable[..., None]
) -> None:
    db = small_disk / "omniq.db"
    folder, gate = tmp_path / "runs", tmp_path / "gate"
    with OmniQ(db_url=f"sqlite:///{db}", poll_interval=0.05) as q, WorkerPool(q, concurrency=1, lease=5):
        h = q.enqueue(wt.gated, str(folder), "job", str(gate))
        wait_until_sync(lambda: (folder / "job.start").exists(), timeout=RESULT_WAIT)
        filler = fill(small_disk)
        gate.touch()  # the task ends while the disk is full
        wait_until_sync(lambda: (folder / "job.end").exists(), timeout=RESULT_WAIT)
        assert q.get(h.id).status == "running"
        filler.unlink()
        assert h.result(timeout=RESULT_WAIT) == "job"
        assert q.get(h.id).task.attempt == 1


def test_the_errno_of_a_full_tmpfs_is_enospc(small_disk: Path) -> None:
    """The scenario above relies on a real ENOSPC, not on a quota or a size limit."""
    fill(small_disk)
    with pytest.raises(OSError) as full:
        (small_disk / "more").write_bytes(b"x" * 8192)
    assert full.value.errno == errno.ENOSPC
