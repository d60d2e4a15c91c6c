"""A kernel interrupt stops the wait, not the task; process workers survive it."""

from __future__ import annotations

import re

from kernel_driver import LOAD, Kernel
from processes import pid_alive

SLOW_VALUE = """\
@omniq.task
def slow_value():
    import os, time
    deadline = time.time() + 60
    while not os.path.exists("go") and time.time() < deadline:
        time.sleep(0.02)
    return 7
"""


def test_interrupting_a_blocking_result_stops_the_wait_not_the_task(kernel: Kernel) -> None:
    kernel.run(LOAD)
    kernel.run(SLOW_VALUE)
    kernel.run("h = slow_value.submit()")
    # a few interrupts: each lands wherever the kernel's loop happens to be during the wait
    for _ in range(3):
        waiting = kernel.send("print('waiting', flush=True)\nh.result(timeout=60)")
        kernel.wait_for(lambda cell=waiting: "waiting" in cell.stdout, 30, "the cell to start waiting")
        kernel.interrupt()
        waiting.wait()
        assert waiting.status == "error", waiting.describe()
        assert [error["ename"] for error in waiting.errors] == ["KeyboardInterrupt"]
        assert kernel.value("h.done()") is False  # the task goes on

    (kernel.cwd / "go").touch()
    assert kernel.run("h.result(timeout=30)").result == "7"
    assert kernel.value("[h.status.value, h.attempt]") == ["succeeded", 1]
    assert kernel.run("'next cell'").result == "'next cell'"
    # the pool survived the interrupts: it still runs new tasks
    assert kernel.run("slow_value.submit().result(timeout=30)").result == "7"


CHILD_TASK = """\
@omniq.task
def child_task(i):
    import os, time
    print("pid", os.getpid(), flush=True)
    deadline = time.time() + 60
    while not os.path.exists("go") and time.time() < deadline:
        time.sleep(0.02)
    return os.getpid()
"""


def test_an_interrupt_leaves_process_workers_and_their_tasks_running(kernel: Kernel) -> None:
    kernel.run(LOAD)
    assert kernel.run("%omniq workers start -n 2 --kind process").stdout.startswith("started 2 process workers")
    kernel.run(CHILD_TASK)
    launch = kernel.run("hs = child_task.map(range(2))")
    kernel.wait_for(lambda: len(re.findall(r"pid \d+", launch.stdout)) == 2, 60, "both tasks to start")
    pids = sorted(int(pid) for pid in re.findall(r"pid (\d+)", launch.stdout))
    assert len(set(pids)) == 2
    assert kernel.pid not in pids

    waiting = kernel.send("print('waiting', flush=True)\nhs.result(timeout=60)")
    kernel.wait_for(lambda: "waiting" in waiting.stdout, 30, "the cell to start waiting")
    kernel.interrupt()
    waiting.wait()
    assert [error["ename"] for error in waiting.errors] == ["KeyboardInterrupt"], waiting.describe()

    assert [pid_alive(pid) for pid in pids] == [True, True]
    assert kernel.value("[x.status.value for x in hs.handles]") == ["running", "running"]
    (kernel.cwd / "go").touch()
    assert sorted(kernel.value("hs.result(timeout=30)")) == pids
    assert kernel.value("[[x.status.value, x.attempt] for x in hs.handles]") == [["succeeded", 1]] * 2
    assert [pid_alive(pid) for pid in pids] == [True, True]  # the pool keeps its children
