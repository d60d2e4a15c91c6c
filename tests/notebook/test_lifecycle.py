"""Kernel restart, kernel death and kernel shutdown: nothing is lost, nothing hangs, nothing lingers."""

from __future__ import annotations

import re
import time

from kernel_driver import LOAD, Kernel, KernelFactory, wait_until
from processes import pid_alive

WAIT_FOR_GO = """\
import os, time

def wait_for_go():
    deadline = time.time() + 60
    while not os.path.exists("go") and time.time() < deadline:
        time.sleep(0.02)
"""


def test_a_result_survives_a_kernel_restart(kernel: Kernel) -> None:
    kernel.run(LOAD)
    kernel.run("@omniq.task\ndef later(x):\n    import time\n    time.sleep(1)\n    return x + 1")
    task_id = kernel.value("later.submit(41).id")

    kernel.restart()
    assert kernel.value("'omniq' in globals()") is False  # a new interpreter
    kernel.run(LOAD)
    assert kernel.run(f"omniq.get({task_id!r}).result(timeout=60)").result == "42"
    assert kernel.value(f"[omniq.get({task_id!r}).status.value, omniq.get({task_id!r}).attempt]") == [
        "succeeded",
        1,
    ]


def test_a_task_running_at_a_kernel_restart_is_handed_back_and_runs_again_without_using_an_attempt(
    kernel: Kernel,
) -> None:
    kernel.km.shutdown_wait_time = 5.0  # jupyter_client's default, as JupyterLab restarts: SIGTERM after 2.5 s
    kernel.run(LOAD)
    kernel.run(
        WAIT_FOR_GO + "@omniq.task(retries=0)\ndef long():\n    wait_for_go()\n    return omniq.current().attempt\n"
    )
    task_id = kernel.value("long.submit().id")
    kernel.wait_for(lambda: kernel.value(f"omniq.get({task_id!r}).status.value") == "running", 30, "the task to run")

    kernel.restart()
    (kernel.cwd / "go").touch()
    kernel.run(LOAD)
    assert kernel.run(f"omniq.get({task_id!r}).result(timeout=60)").result == "1"  # run again, at attempt 1


LOST_TASKS = (
    WAIT_FOR_GO
    + """
@omniq.task(retries=1)
def rerun():
    wait_for_go()
    return omniq.current().attempt

@omniq.task(retries=0)
def once():
    wait_for_go()
    return "ran to the end"

a, b = rerun.submit(), once.submit()
"""
)


def test_tasks_running_when_the_kernel_died_are_rescued_by_the_next_kernel(start_kernel: KernelFactory) -> None:
    kernel = start_kernel(OMNIQ_LEASE_SECONDS="2")
    kernel.run(LOAD)
    kernel.run(LOST_TASKS)
    ids = kernel.value("[a.id, b.id]")
    kernel.wait_for(
        lambda: kernel.value("[a.status.value, b.status.value]") == ["running", "running"], 30, "both tasks to run"
    )
    kernel.sigkill()
    (kernel.cwd / "go").touch()

    again = start_kernel(cwd=kernel.cwd, OMNIQ_LEASE_SECONDS="2")
    again.run(LOAD)
    again.run(f"a, b = omniq.get({ids[0]!r}), omniq.get({ids[1]!r})")
    assert again.run("a.result(timeout=60)").result == "2"  # re-run: attempt 2 of 2
    lost = again.run(
        "try:\n"
        "    b.result(timeout=60)\n"
        "except omniq.WorkerLost as exc:\n"
        "    print(type(exc).__name__, 'lost' in str(exc), b.error.type)\n"
    )
    assert lost.stdout == "WorkerLost True omniq_nb.errors.WorkerLost\n"
    assert again.value("[[a.status.value, a.attempt], [b.status.value, b.attempt]]") == [
        ["succeeded", 2],
        ["failed", 1],
    ]
    listing = again.run("%omniq list --status running")
    assert listing.stdout.strip().splitlines()[1:] == []  # nothing stays running


CHILD_WAITS = (
    WAIT_FOR_GO
    + """
@omniq.task
def child_waits(i):
    print("pid", os.getpid(), flush=True)
    wait_for_go()
    return i
"""
)


def test_child_processes_die_with_a_killed_kernel(kernel: Kernel) -> None:
    kernel.run(LOAD)
    kernel.run("%omniq workers start -n 2 --kind process")
    kernel.run(CHILD_WAITS)
    launch = kernel.run("hs = child_waits.map(range(2))")
    kernel.wait_for(lambda: len(re.findall(r"pid \d+", launch.stdout)) == 2, 60, "both tasks to start")
    pids = [int(pid) for pid in re.findall(r"pid (\d+)", launch.stdout)]
    assert [pid_alive(pid) for pid in pids] == [True, True]

    kernel.sigkill()
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), 30, "the children to exit after the kernel died")


def test_shutdown_with_an_idle_pool_is_quick_and_leaves_no_processes(kernel: Kernel) -> None:
    kernel.run(LOAD)
    kernel.run("%omniq workers start -n 2 --kind process")
    kernel.run(
        "import os\n"
        "@omniq.task\ndef child_pid():\n    return os.getpid()\n"
        "@omniq.task(kind='thread')\ndef on_thread():\n    return 'thread'\n"
    )
    child = kernel.value("child_pid.submit().result(timeout=60)")
    assert kernel.value("on_thread.submit().result(timeout=60)") == "thread"
    assert child != kernel.pid
    assert pid_alive(child)  # an idle child kept by the pool
    status = kernel.run("%omniq workers status").stdout
    assert status.splitlines()[0] == "2 process workers, 0 busy, queues default"

    process = kernel.km.provisioner.process  # type: ignore[attr-defined]
    kernel.kc.stop_channels()
    assert kernel.km.shutdown_wait_time == 15.0  # SIGTERM after 7.5 s, SIGKILL after 15 s
    started = time.monotonic()
    kernel.km.shutdown_kernel(now=False)
    took = time.monotonic() - started

    assert process.returncode == 0  # it exited by itself: not terminated, not killed
    assert took < 7.0
    wait_until(lambda: not pid_alive(child), 5, "the pool's child to be gone")
