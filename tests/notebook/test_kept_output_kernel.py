"""Promise (issue 19): a task's output outlives the kernel that launched it.

A CLI ``omniq-nb worker`` runs a notebook task that prints; the kernel is restarted midway;
in the new kernel ``omniq.get(id)`` shows a view with every line printed so far (read from
the store), then the rest as it is printed, each line once. The view's Output widget holds
the lines in its state, which a reloaded browser fetches again. Real kernels (ipykernel 7
and 6), a real worker process, a SQLite file; every wait is bounded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kernel_driver import LOAD, Kernel, KernelFactory, wait_until
from processes import Processes

pytestmark = [pytest.mark.slow]

CHATTY = """
import os, time
@omniq.task
def chatty(first, then, gate):
    for i in range(first):
        print(f"line {i}")
    deadline = time.monotonic() + 120
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    for i in range(first, first + then):
        print(f"line {i}")
        time.sleep(0.005)
    return first + then
"""
FIRST, THEN = 2500, 500
WAIT = 90.0  # seconds: a loaded 2-core machine


def lines(n: int, start: int = 0) -> str:
    return "".join(f"line {i}\n" for i in range(start, n))


def shown(kernel: Kernel, root: str) -> str:
    return kernel.widget_text(root)


def test_a_new_kernel_shows_the_kept_output_then_follows_it(
    start_kernel: KernelFactory, workers: Processes, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    gate = tmp_path / "gate"
    worker = workers.worker(url, concurrency=1)
    kernel = start_kernel(OMNIQ_DB_URL=url, OMNIQ_AUTOSTART="0")  # no pool here: the worker runs it
    kernel.run(LOAD + "\n" + CHATTY)
    first_view = kernel.run(f"h = chatty.submit({FIRST}, {THEN}, {str(gate)!r})\nh").widget_roots()[0]
    task_id = kernel.value("h.id")
    kernel.wait_for(lambda: shown(kernel, first_view) == lines(FIRST), WAIT, "the first kernel's view to follow it")

    kernel.restart()  # the task runs on in the worker
    kernel.run(LOAD)
    root = kernel.run(f"h = omniq.get({task_id!r})\nh").widget_roots()[0]
    kernel.wait_for(lambda: shown(kernel, root) == lines(FIRST), WAIT, "the new view to show the lines kept so far")
    assert kernel.value("h.status.value") == "running"

    gate.touch()
    seen = set()

    def complete() -> bool:
        text = shown(kernel, root)
        assert lines(FIRST + THEN).startswith(text), "the view shows a line twice, or out of order"
        seen.add(text.count("\n"))
        return text == lines(FIRST + THEN)

    kernel.wait_for(complete, WAIT, "the new view to follow the rest as it is printed")
    assert len(seen) >= 2, f"the rest came at once, not live: {sorted(seen)}"
    kernel.wait_for(lambda: kernel.value("h.status.value") == "succeeded", WAIT, "the task to finish")
    assert worker.alive(), worker.text()

    # what a reloaded browser gets: the Output widget's state, the kernel's own copy of it
    kernel.run("from omniq_nb.notebook.runner import KernelRunner\nview = KernelRunner.current.views[h.id]")
    held = kernel.value("''.join(o.get('text', '') for o in view._output.outputs)")
    assert held == lines(FIRST + THEN)
    assert kernel.widget_outputs(root) == kernel.value("list(view._output.outputs)")
    wait_until(lambda: f"line {FIRST + THEN - 1}" in worker.text(), WAIT, "the worker to print it too")
