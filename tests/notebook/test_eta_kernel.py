"""Issue 19 in a real kernel: after a few runs of a task, a new run's view shows how long it should take.

The view is read as a frontend sees it, from the comm messages the kernel sent; its text/plain
summary and ``omniq.stats`` are read in the kernel. Every wait is bounded polling.
"""

from __future__ import annotations

import re

from kernel_driver import LOAD, KernelFactory

NAP = """\
import os, time

@omniq.task
def nap(seconds, gate=None):
    deadline = time.time() + (60 if gate else seconds)
    while time.time() < deadline and not (gate and os.path.exists(gate)):
        time.sleep(0.01)
    return seconds
"""
_ETA = re.compile(r"ETA (\d+\.\d) s")
_EXPECTED = re.compile(r"expected ~(\d+\.\d) s")


def test_a_new_tasks_view_shows_the_expected_duration_and_an_eta_before_any_progress(
    start_kernel: KernelFactory,
) -> None:
    kernel = start_kernel(OMNIQ_MAX_WORKERS="5")  # the five runs at once: about a second in all
    kernel.run(LOAD)
    kernel.run(NAP)
    assert kernel.value("nap.map([1.0] * 5).result(timeout=60)") == [1.0] * 5

    stats = kernel.evaluate("(lambda s: (s.count, s.median, s.p90))(omniq.stats(nap))")
    assert stats[0] == 5 and 1.0 <= stats[1] <= stats[2] < 2.0, stats

    cell = kernel.run("h = nap.submit(0, 'gate')\nh")
    root = cell.view_model_id
    assert root is not None, cell.describe()
    status = kernel.children(root)[0]

    def frames() -> list[str]:
        states = (m.content["data"].get("state", {}) for m in kernel.updates([status]))
        return [str(state["value"]) for state in states if "value" in state]

    kernel.wait_for(lambda: any(_ETA.search(f) for f in frames()), 30, "the view to show an ETA")
    first = next(f for f in frames() if _ETA.search(f))
    assert ">running</span>" in first and "<small>0%" in first, first
    expected, eta = _EXPECTED.search(first), _ETA.search(first)
    assert expected is not None and eta is not None, first
    assert float(expected.group(1)) == round(stats[1], 1), first  # the median of the five runs
    assert 0.5 <= float(eta.group(1)) <= float(expected.group(1)), first  # counted down from it

    summary = kernel.evaluate(
        "str(__import__('omniq_nb.notebook.runner', fromlist=['KernelRunner']).KernelRunner.current.views[h.id])"
    )
    assert summary.startswith("nap [") and expected.group(0) in summary, summary

    kernel.run("open('gate', 'w').close()\nh.result(timeout=60)")
    kernel.wait_for(lambda: ">succeeded</span>" in frames()[-1], 30, "the view to show succeeded")
    assert "ETA" not in frames()[-1] and "expected" not in frames()[-1]
