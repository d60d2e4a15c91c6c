"""Promise: kernels sharing one folder's store run their own tasks, and every pool is visible and stoppable.

Two real kernels in one folder (and, for a while, a standalone ``omniq-nb worker``) share
``.omniq/omniq.db``. Each kernel's tasks run in that kernel (or on the standalone worker);
``omniq-nb workers`` lists the three pools; ``%omniq workers stop ID`` in a kernel makes the
worker process exit 0; the pending tasks of a kernel killed with SIGKILL are run by the other
kernel within a few lease periods.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kernel_driver import LOAD, Kernel, KernelFactory, strip_ansi, wait_until

OMNIQ_NB = str(Path(sys.executable).parent / "omniq-nb")
WAIT = 60.0
TASKS = """
import os, pathlib, time

@omniq.task
def runner_pid():
    return os.getpid()

@omniq.task(retries=1)  # a lost lease uses an attempt
def gated(gate):
    deadline = time.monotonic() + 120
    while not pathlib.Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()
"""


def pools(cwd: Path) -> list[dict[str, Any]]:
    done = subprocess.run([OMNIQ_NB, "workers", "--json"], cwd=cwd, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    listed: list[dict[str, Any]] = json.loads(done.stdout)
    return listed


def ran_on(kernel: Kernel, handles: str) -> set[int]:
    """Return the pids that ran the tasks of the handles named by ``handles`` (waiting in ``kernel``)."""
    return set(kernel.value(f"[omniq.get(i).result(timeout={WAIT}) for i in {handles}]", timeout=WAIT * 2))


def test_each_kernel_runs_its_own_tasks_and_a_dead_kernels_tasks_move(
    start_kernel: KernelFactory, tmp_path: Path
) -> None:
    a, b = start_kernel(OMNIQ_LEASE_SECONDS="1"), start_kernel(OMNIQ_LEASE_SECONDS="1")
    for kernel in (a, b):
        kernel.run(LOAD)
        kernel.run(TASKS)

    a.run("%%omniq enqueue --shared --as anyone\n1 + 1")
    assert a.value("[anyone.task.owner, runner_pid.submit().task.owner is not None]") == [None, True]
    refused = strip_ansi(a.execute("%omniq workers stop nosuchid").stderr).strip()
    assert refused == "UsageError: no live worker pool with id 'nosuchid'; %omniq workers status lists them"

    a_ids = a.value("[runner_pid.submit().id for _ in range(20)]")
    b_ids = b.value("[runner_pid.submit().id for _ in range(20)]")
    assert ran_on(a, repr(a_ids)) == {a.pid}
    assert ran_on(a, repr(b_ids)) == {b.pid}  # read from A, run by B
    assert {p["pid"] for p in pools(tmp_path)} == {a.pid, b.pid}

    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    worker = subprocess.Popen(
        [OMNIQ_NB, "worker", "--lease", "1", "--concurrency", "2"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        listed = wait_until(lambda: len(pools(tmp_path)) == 3 and pools(tmp_path), WAIT, "the worker to register")
        [cli] = [p for p in listed if p["pid"] == worker.pid]
        assert cli["kernel"] is None
        assert {p["pid"] for p in listed if p["kernel"]} == {a.pid, b.pid}
        status = a.run("%omniq workers status").stdout
        assert all(p["id"] in status for p in listed)

        more = a.value("[runner_pid.submit().id for _ in range(20)]")
        assert ran_on(a, repr(more)) <= {a.pid, worker.pid}

        stopped = a.run(f"%omniq workers stop {cli['id']}")
        assert stopped.stdout.startswith(f"asked worker pool {cli['id']} to drain and stop"), stopped.describe()
        _, err = worker.communicate(timeout=WAIT)
        assert worker.returncode == 0, err
        assert {p["pid"] for p in pools(tmp_path)} == {a.pid, b.pid}
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()

    gate = tmp_path / "gate"
    b.run("%omniq workers start -n 1")
    blocker = b.value(f"gated.submit({str(gate)!r}).id")
    wait_until(lambda: b.value(f"omniq.get({blocker!r}).status.value") == "running", WAIT, "B to run the gated task")
    pending = b.value("[runner_pid.submit().id for _ in range(5)]")
    assert set(b.value(f"[omniq.get(i).status.value for i in {pending!r}]")) == {"pending"}
    b.sigkill()
    gate.touch()
    assert ran_on(a, repr(pending)) == {a.pid}
    assert ran_on(a, repr([blocker])) == {a.pid}  # its lease ran out with B: rescued, then run by A
    assert {p["pid"] for p in pools(tmp_path)} == {a.pid}
