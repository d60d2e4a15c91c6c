"""Promise: a kernel and the ``omniq-nb`` command share ``.omniq/omniq.db`` without losing a task.

The durability report's reproduction in a real kernel: the kernel's pool runs (its lease
thread has a connection of its own), the kernel opens a second store object, ``omniq-nb
list`` runs from outside and exits; the kernel's later tasks are visible to other
processes while it lives, and every task whose ``submit`` returned survives ``kill -9``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

from kernel_driver import LOAD, Kernel

OMNIQ_NB = str(Path(sys.executable).parent / "omniq-nb")


def stored_ids(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:  # a fresh connection each time, as `list` opens
        return {row[0] for row in conn.execute("SELECT id FROM tasks")}


def test_a_listing_from_outside_loses_none_of_the_kernels_tasks(kernel: Kernel) -> None:
    db = kernel.cwd / ".omniq" / "omniq.db"
    kernel.run(LOAD)
    kernel.run("@omniq.task\ndef sq(x):\n    return x * x")
    acknowledged = [kernel.value("sq.submit(3).id")]
    kernel.run("omniq.OmniQ(db_url='sqlite:///.omniq/omniq.db').close()")  # a second store object

    listing = subprocess.run([OMNIQ_NB, "list"], cwd=kernel.cwd, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert acknowledged[0] in listing.stdout
    assert Path(f"{db}-wal").exists(), "the live WAL was deleted by the listing process"

    acknowledged += kernel.value("[sq.submit(i).id for i in range(5)]")
    assert set(acknowledged) <= stored_ids(db), "tasks of the live kernel are invisible to other processes"
    kernel.sigkill()
    assert set(acknowledged) <= stored_ids(db)
