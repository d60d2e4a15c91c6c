"""Promise: a kernel refuses a gevent pool and keeps its own; its ``kind="gevent"`` tasks wait for a gevent CLI worker.

In a real kernel (ipykernel 7 and 6): ``%omniq workers start --kind gevent`` is a one-line
usage error naming ``omniq-nb worker --kind gevent``, and the kernel's running pool is left
as it was; a task submitted with ``kind="gevent"`` is queued, stays pending (its view says
it waits for a gevent worker) while the kernel's pool runs other tasks, and is run by an
``omniq-nb worker --kind gevent`` started afterwards on the kernel's store.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from kernel_driver import LOAD, KernelFactory, strip_ansi
from polling import wait_until_sync
from processes import Processes

pytestmark = pytest.mark.slow

WAIT = 60.0
TASKS = """
import threading, time
from omniq_nb.notebook.runner import KernelRunner

@omniq.task(kind="gevent")
def fetch(n):
    time.sleep(0.1)
    return n, threading.current_thread().name

@omniq.task
def add(a, b):
    return a + b
"""


def test_a_kernel_refuses_gevent_and_its_gevent_tasks_wait_for_a_cli_worker(
    start_kernel: KernelFactory, tmp_path: Path
) -> None:
    kernel = start_kernel()
    kernel.run(LOAD)
    kernel.run(TASKS)
    kernel.run("%omniq workers start -n 2 --kind thread")
    kernel.run("old = KernelRunner.current.pool")

    refused = kernel.execute("%omniq workers start --kind gevent")
    assert refused.errors == [], refused.describe()
    text = strip_ansi(refused.stderr).strip()
    assert text.startswith("UsageError: ") and len(text.splitlines()) == 1, text
    assert "omniq-nb worker --kind gevent" in text
    assert kernel.value("[KernelRunner.current.pool is old, old.running, old.kind]") == [True, True, "thread"]

    kernel.run("h = fetch.submit(7)")
    assert kernel.value("add.submit(1, 2).result(timeout=60)") == 3  # the kernel's pool serves on
    assert kernel.value("[h.task.kind, h.status.value, h.task.attempt]") == ["gevent", "pending", 0]
    view = kernel.value("str(KernelRunner.current.view(h))")
    assert "waits for a gevent worker (omniq-nb worker --kind gevent)" in view

    workers = Processes(tmp_path, wait_until_sync)
    try:
        url = f"sqlite:///{tmp_path / '.omniq' / 'omniq.db'}"
        workers.worker(url, concurrency=50, kind="gevent", program=(sys.executable, "-m", "omniq_nb"))
        assert kernel.value(f"h.result(timeout={WAIT})", timeout=WAIT * 2) == [7, "omniq-gevent-hub"]
    finally:
        workers.close()


def test_default_worker_gevent_leaves_a_kernel_a_thread_pool(start_kernel: KernelFactory) -> None:
    kernel = start_kernel(OMNIQ_DEFAULT_WORKER="gevent")  # meant for omniq-nb worker: %load_ext still works
    loaded = kernel.run(LOAD)
    assert "DEFAULT_WORKER=gevent applies to omniq-nb worker only" in strip_ansi(loaded.stderr)
    kernel.run(TASKS)
    kernel.run("g = fetch.submit(1)")  # before the next task, which the pool runs: it skipped this one
    assert kernel.value("[KernelRunner.current.pool.kind, add.submit(2, 3).result(timeout=60)]") == ["thread", 5]
    assert kernel.value("[g.status.value, g.task.attempt]") == ["pending", 0]
