"""``INTERRUPT=cancel``: a kernel interrupt cancels the unfinished tasks of the interrupted cell, and only those."""

from __future__ import annotations

import re
import time

from kernel_driver import LOAD, Cell, Kernel, strip_ansi
from processes import pid_alive

NAP = """\
@omniq.task
def nap(i):
    import os, time
    print("pid", i, os.getpid(), flush=True)
    deadline = time.time() + 30
    while not os.path.exists("go") and time.time() < deadline:
        if omniq.current() is not None and omniq.current().cancelled:  # a cancelled thread task stops
            return "stopped"
        time.sleep(0.02)
    return i
"""
# the pool shares the loop that a sleeping cell blocks: let the tasks start in a short wait first
SUBMIT_THEN_SLEEP = """\
{name} = nap.map(range(2))
with contextlib.suppress(TimeoutError):
    {name}.result(timeout=2)
print("sleeping", flush=True)
time.sleep(60)
"""
CANCELLED_LINE = re.compile(r"^interrupted: cancelled (\d+) tasks? launched by this cell \((.+)\)$", re.MULTILINE)


def started(cell: Cell) -> dict[int, int]:
    """Return ``{task argument: pid}`` of the nap tasks that printed they started in ``cell``."""
    return {int(i): int(pid) for i, pid in re.findall(r"pid (-?\d+) (\d+)", cell.stdout)}


def statuses(kernel: Kernel, handles: str) -> list[str]:
    return list(kernel.value(f"[x.status.value for x in {handles}.handles]"))


def usage_error(kernel: Kernel, words: str) -> str:
    """Return the one-line usage error of ``%omniq config words``."""
    cell = kernel.execute(f"%omniq config {words}")
    assert cell.errors == [] and cell.stdout == "", cell.describe()
    (line,) = strip_ansi(cell.stderr).strip().splitlines()
    assert line.startswith("UsageError: %omniq config"), line
    return line


def test_an_interrupt_cancels_the_process_tasks_of_the_cell_not_an_earlier_cells(kernel: Kernel) -> None:
    kernel.run(LOAD)
    assert kernel.run("%omniq config interrupt=cancel").stdout == "interrupt=cancel\n"
    assert kernel.run("%omniq workers start -n 3 --kind process").stdout.startswith("started 3 process workers")
    kernel.run(NAP)
    earlier = kernel.run("early = nap.submit(-1)")
    kernel.wait_for(lambda: -1 in started(earlier), 60, "the earlier cell's task to start")

    cell = kernel.send("hs = nap.map(range(10))\nhs.result(timeout=120)")
    kernel.wait_for(lambda: len(started(cell)) == 2, 60, "two of the cell's tasks to start")
    kernel.interrupt()
    cell.wait()
    assert [error["ename"] for error in cell.errors] == ["KeyboardInterrupt"], cell.describe()
    lines = CANCELLED_LINE.findall(cell.stdout)
    assert len(lines) == 1 and lines[0][0] == "10", cell.stdout
    ids = kernel.value("hs.ids")
    assert lines[0][1] == ", ".join(ids[:3]) + ", ..."

    deadline = time.monotonic() + 10  # all cancelled, their children gone, within a few seconds
    kernel.wait_for(lambda: statuses(kernel, "hs") == ["cancelled"] * 10, 10, "the cell's tasks to be cancelled")
    pids = list(started(cell).values())
    kernel.wait_for(lambda: not any(map(pid_alive, pids)), deadline - time.monotonic(), "the children to end")
    assert kernel.value("early.status.value") == "running"  # an earlier cell's task goes on
    assert pid_alive(started(earlier)[-1])

    # the kernel is healthy: a next cell runs, new tasks run, the earlier task ends well
    assert kernel.run("'next cell'").result == "'next cell'"
    (kernel.cwd / "go").touch()
    assert kernel.value("nap.submit(5).result(timeout=60)") == 5
    assert kernel.value("early.result(timeout=60)") == -1


def test_wait_keeps_the_tasks_and_cancel_also_stops_a_cell_that_sleeps_or_awaits(kernel: Kernel) -> None:
    kernel.run(LOAD)
    assert kernel.run("%omniq config").stdout == (
        "interrupt=wait\nkeepalive=60\noutput_limit=1048576\noutput_lines=10000\n"
    )
    kernel.run(NAP)
    # the default, wait: the interrupt stops the cell, its tasks go on
    kernel.run("import contextlib, time")
    kept = kernel.send(SUBMIT_THEN_SLEEP.format(name="kept"))
    kernel.wait_for(lambda: "sleeping" in kept.stdout, 60, "the first cell to sleep")
    assert len(started(kept)) == 2, kept.stdout
    kernel.interrupt()
    kept.wait()
    assert [error["ename"] for error in kept.errors] == ["KeyboardInterrupt"], kept.describe()
    assert "interrupted:" not in kept.stdout
    assert statuses(kernel, "kept") == ["running", "running"]

    # cancel: interrupting a cell that sleeps after submitting (thread tasks are flagged and stop)
    assert kernel.run("%omniq config interrupt=CANCEL").stdout == "interrupt=cancel\n"
    cell = kernel.send(SUBMIT_THEN_SLEEP.format(name="hs"))
    kernel.wait_for(lambda: "sleeping" in cell.stdout, 60, "the second cell to sleep")
    assert len(started(cell)) == 2, cell.stdout
    kernel.interrupt()
    cell.wait()
    assert [error["ename"] for error in cell.errors] == ["KeyboardInterrupt"], cell.describe()
    assert len(CANCELLED_LINE.findall(cell.stdout)) == 1, cell.stdout
    kernel.wait_for(lambda: statuses(kernel, "hs") == ["cancelled"] * 2, 10, "the second cell's tasks to be cancelled")
    assert statuses(kernel, "kept") == ["running", "running"]

    # a cell that awaits its tasks (ipykernel cancels the cell's coroutine)
    awaiting = kernel.send("aw = nap.map(range(2))\nawait aw")
    kernel.wait_for(lambda: len(started(awaiting)) == 2, 60, "the awaiting cell's tasks to start")
    kernel.interrupt()
    awaiting.wait()
    assert len(CANCELLED_LINE.findall(awaiting.stdout)) == 1, awaiting.describe()
    kernel.wait_for(lambda: statuses(kernel, "aw") == ["cancelled"] * 2, 10, "the awaiting cell's tasks cancelled")
    assert statuses(kernel, "kept") == ["running", "running"]
    (kernel.cwd / "go").touch()
    assert kernel.value("kept.result(timeout=60)") == [0, 1]

    # bad settings say which setting and what it accepts; nothing changes
    assert "interrupt='stop' is not valid: expected one of wait, cancel" in usage_error(kernel, "interrupt=stop")
    assert "unknown setting 'colour'; the settings here are interrupt, keepalive" in usage_error(kernel, "colour=red")
    negative = usage_error(kernel, "keepalive=-1")
    assert "keepalive='-1' is not valid: expected seconds > 0 such as 60, or 0 or none" in negative
    assert "takes nothing or one KEY=VALUE" in usage_error(kernel, "interrupt")
    assert kernel.run("%omniq config keepalive=none").stdout == "keepalive=none\n"
    assert kernel.run("%omniq config").stdout == (
        "interrupt=cancel\nkeepalive=none\noutput_limit=1048576\noutput_lines=10000\n"
    )
