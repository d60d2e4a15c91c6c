"""Live views in a real kernel, observed the way a frontend sees them: through iopub comm messages.

Each test starts an ipykernel 7 kernel in ``tmp_path`` (``OMNIQ_POLL_INTERVAL=0.05``),
records every iopub message, and rebuilds the widgets' state from ``comm_open`` and
``update`` messages. Rates are judged against the time the test observed, with slack for
a slow, busy machine; every wait is bounded polling on a condition.
"""

from __future__ import annotations

import json
import operator
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kernel_driver import Kernel

from omniq_nb import OmniQ, WorkerPool

STEPS = """
@omniq.task
def steps(n, pause=0.002, say_every=0):
    total = 0
    for i in omniq.track(range(n)):
        time.sleep(pause)
        total += i
        if say_every and i % say_every == 0:
            print("step", i)
    return (n, total)
"""

SLOW = """
@omniq.task
def slow():
    context = omniq.current()
    deadline = time.monotonic() + 30
    while not context.cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    return "ran to the end"
"""

FAILING = """
@omniq.task
def divide(a, b):
    ratio = a / b  # the line that fails
    return ratio
"""

UPDATES_PER_SECOND = 12  # the design says about 10 a second; slack for timer jitter
UPDATES_SLACK = 6  # first frame, final frame, output flushes, clock ticks
_PERCENT = re.compile(r"<small>(\d+)%")
_ROW = re.compile(r"<tr>(.*?)</tr>")
_SHOWN_ID = re.compile(r"<code>(.*?)</code>")


class TaskViewParts:
    """The comm ids of a ``TaskView``'s widgets, found from the displayed root (a VBox)."""

    def __init__(self, kernel: Kernel, root: str) -> None:
        self.kernel, self.root = kernel, root
        self.status, _, self.outputs, self.outcome = kernel.children(root)
        self.output = kernel.children(self.outputs)[0]
        states = kernel.widget_states()
        buttons = {
            states[m].get("description"): m
            for m in kernel.tree(root, states)
            if states[m]["_model_name"] == "ButtonModel"
        }
        self.cancel, self.retry = buttons["Cancel"], buttons["Retry"]

    def state(self, part: str) -> dict:
        return self.kernel.widget_states()[part]

    def status_html(self) -> str:
        return str(self.state(self.status)["value"])

    def outcome_html(self) -> str:
        return str(self.state(self.outcome)["value"])

    def all_ids(self) -> list[str]:
        return self.kernel.tree(self.root)


def show_task(kernel: Kernel, code: str) -> TaskViewParts:
    """Run a cell whose value is a task handle; return the view it displayed."""
    roots = kernel.run(code).widget_roots()
    assert len(roots) == 1, f"expected one live view, got {len(roots)}"
    return TaskViewParts(kernel, roots[0])


def test_task_view_is_throttled_and_its_final_frame_is_exact(widget_kernel: Kernel) -> None:
    kernel = widget_kernel
    kernel.run(STEPS)
    start, began = kernel.mark(), time.monotonic()
    view = show_task(kernel, "h = steps.submit(1000)\nh")
    kernel.wait_for(lambda: "succeeded" in view.status_html(), 90, "the view to show succeeded")
    kernel.wait_for(lambda: "(1000, 499500)" in view.outcome_html(), 10, "the view to show the result")
    end, observed = kernel.mark(), time.monotonic() - began

    task_seconds = kernel.evaluate("(h.task.finished_at - h.task.started_at).total_seconds()")
    assert task_seconds >= 1.5, "the task should report 1,000 steps over about 2 s"
    sent = kernel.updates(start=start, stop=end)
    assert len(sent) <= UPDATES_PER_SECOND * observed + UPDATES_SLACK, (
        f"{len(sent)} widget updates in {observed:.1f} s ({len(sent) / observed:.1f}/s) for 1,000 progress reports"
    )
    shown = [int(p) for m in kernel.updates([view.status], start, end) for p in _PERCENT.findall(str(m.content))]
    assert any(0 < p < 100 for p in shown), f"the view never showed progress on the way: {shown}"

    status = view.status_html()
    assert "<small>100%" in status
    assert "width:100.0%" in status
    assert ">succeeded</span>" in status
    kernel.run("from omniq_nb.notebook.runner import KernelRunner\nview = KernelRunner.current.views[h.id]")
    summary = kernel.evaluate("str(view)")
    assert summary.startswith("steps [")
    assert summary.endswith("] succeeded 100%")
    # the frontend's state is the kernel's: the last frame landed
    assert kernel.evaluate("view.widget.children[0].value") == status
    assert kernel.evaluate("view.widget.children[3].value") == view.outcome_html()
    assert view.state(view.cancel)["disabled"] is True
    assert view.state(view.retry)["disabled"] is True


def test_failed_task_view_shows_the_remote_traceback(widget_kernel: Kernel) -> None:
    kernel = widget_kernel
    kernel.run(FAILING)
    view = show_task(kernel, "h = divide.submit(1, 0)\nh")
    kernel.wait_for(lambda: "ZeroDivisionError" in view.outcome_html(), 60, "the view to show the error")

    outcome = view.outcome_html()
    assert "ZeroDivisionError: division by zero" in outcome
    assert "ratio = a / b  # the line that fails" in outcome
    assert "in divide" in outcome
    assert "[... 1 library frame hidden ...]" in outcome  # the thread pool's frame
    assert "omniq_nb" not in outcome
    assert ">failed</span>" in view.status_html()
    assert view.state(view.cancel)["disabled"] is True
    assert view.state(view.retry)["disabled"] is False


def test_map_shows_one_group_view_not_a_widget_per_task(widget_kernel: Kernel) -> None:
    kernel = widget_kernel
    kernel.run(STEPS)
    start, began = kernel.mark(), time.monotonic()
    cell = kernel.run("g = steps.map([5] * 300)\ng")
    roots = cell.widget_roots()
    assert len(roots) == 1, f"a map should display one group view, got {len(roots)} views"
    summary = kernel.tree(roots[0])[1]  # the VBox, then its first child: the summary line
    assert kernel.widget_states()[summary]["_model_name"] == "HTMLModel"

    def summary_html() -> str:
        return str(kernel.widget_states()[summary]["value"])

    kernel.wait_for(lambda: "300 succeeded" in summary_html(), 120, "the group view to count 300 succeeded")
    end, observed = kernel.mark(), time.monotonic() - began

    assert "300/300 done" in summary_html()
    opened = kernel.opened(start, end)
    assert len(opened) < 30, f"{len(opened)} widgets were created for one map of 300 tasks"
    sent = kernel.updates(start=start, stop=end)
    assert len(sent) <= UPDATES_PER_SECOND * observed + UPDATES_SLACK, (
        f"{len(sent)} widget updates in {observed:.1f} s ({len(sent) / observed:.1f}/s) for a map of 300"
    )
    assert kernel.evaluate("g.counts[omniq.TaskStatus.SUCCEEDED]") == 300


def test_dashboard_lists_tasks_run_by_another_process(
    start_widget_kernel: Callable[..., Kernel], tmp_path: Path
) -> None:
    kernel = start_widget_kernel()
    kernel.run("%load_ext omniq_nb\nimport omniq_nb as omniq")
    dashboards = kernel.run("omniq.dashboard()").widget_roots() + kernel.run("%omniq dashboard").widget_roots()
    assert len(dashboards) == 2, "omniq.dashboard() and %omniq dashboard should each display a live dashboard"
    store = tmp_path / ".omniq" / "omniq.db"
    assert store.exists(), "the kernel should have opened its store in its working folder"

    worker = f"test-process:{os.getpid()}"
    with (
        OmniQ(db_url=f"sqlite:///{store}", poll_interval=0.05) as queue,
        WorkerPool(queue, queues=["elsewhere"], concurrency=2, name=worker),
    ):
        handles = [
            queue.enqueue_call(operator.mul, args=(i, 7), queue="elsewhere", name=f"elsewhere-{i}") for i in range(3)
        ]
        assert [h.result(timeout=60) for h in handles] == [0, 7, 14]

    def rows(root: str) -> dict[str, str]:
        found = {}
        for row in _ROW.findall("".join(kernel.html_of(root))):
            for i in range(3):
                if f">elsewhere-{i}<" in row:
                    found[f"elsewhere-{i}"] = row
        return found

    for root in dashboards:
        kernel.wait_for(
            lambda root=root: len(rows(root)) == 3 and all("succeeded" in r for r in rows(root).values()),
            30,
            "the dashboard to list the other process's 3 tasks as succeeded",
        )
        assert all(worker in row for row in rows(root).values()), "the rows should name the other process's worker"
    for root in dashboards:
        text = "".join(kernel.html_of(root))
        missing = [h.id for h in handles if h.id not in text]
        assert not missing, (
            f"the dashboard does not show the ids of its tasks {missing} (its Cancel/Retry need them); "
            f"it shows only {sorted(set(_SHOWN_ID.findall(text)))}"
        )


def test_views_of_different_tasks_show_different_ids(widget_kernel: Kernel) -> None:
    kernel = widget_kernel
    kernel.run(STEPS)
    roots = kernel.run("a, b = steps.submit(1), steps.submit(2)\ndisplay(a, b)").widget_roots()
    assert len(roots) == 2
    views = [TaskViewParts(kernel, root) for root in roots]
    for view in views:
        kernel.wait_for(lambda view=view: "succeeded" in view.status_html(), 60, "both views to show succeeded")
    shown = [_SHOWN_ID.findall(view.status_html()) for view in views]
    assert shown[0] != shown[1], f"two tasks' views show the same id {shown[0]}: ids {kernel.evaluate('[a.id, b.id]')}"
    kernel.run("from omniq_nb.notebook.runner import KernelRunner\nviews = KernelRunner.current.views")
    summaries = kernel.evaluate("[str(views[a.id]), str(views[b.id])]")
    assert summaries[0].split()[1] != summaries[1].split()[1], f"summaries do not tell tasks apart: {summaries}"


_NO_WIDGETS = """
import json, sys
before = "ipywidgets" in sys.modules
import omniq_nb as omniq
imported = "ipywidgets" in sys.modules
with omniq.OmniQ(db_url="memory://") as q:
    h = q.enqueue(sum, [1, 2])
    g = q.enqueue_many(sum, [([1],), ([2, 3],)])
    shown = {"task": h._repr_mimebundle_(), "group": g._repr_mimebundle_(), "task_repr": repr(h), "group_repr": repr(g)}
shown.update(before=before, imported=imported, after="ipywidgets" in sys.modules)
print(json.dumps(shown))
"""


def test_handles_show_as_text_in_plain_python() -> None:
    done = subprocess.run([sys.executable, "-c", _NO_WIDGETS], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    assert not shown["before"]
    assert not shown["imported"], "import omniq_nb must not import ipywidgets"
    assert not shown["after"], "showing a handle without the extension must not import ipywidgets"
    assert shown["task"] == {"text/plain": shown["task_repr"]}
    assert shown["group"] == {"text/plain": shown["group_repr"]}
    assert shown["task_repr"].startswith("<TaskHandle ")
    assert shown["group_repr"].startswith("<GroupHandle 2 tasks")


def test_handles_show_as_text_in_a_kernel_without_the_extension(
    start_widget_kernel: Callable[..., Kernel],
) -> None:
    kernel = start_widget_kernel()
    start = kernel.mark()
    kernel.run("import sys\nimport omniq_nb as omniq\nq = omniq.OmniQ(db_url='memory://')")
    assert kernel.evaluate("'ipywidgets' in sys.modules") is False, "import omniq_nb must not import ipywidgets"
    task = kernel.run("h = q.enqueue(sum, [1, 2])\nh").results()
    group = kernel.run("g = q.enqueue_many(sum, [([1],), ([2, 3],)])\ng").results()
    assert len(task) == 1 and set(task[0]) == {"text/plain"}
    assert task[0]["text/plain"].startswith("<TaskHandle ")
    assert len(group) == 1 and set(group[0]) == {"text/plain"}
    assert group[0]["text/plain"].startswith("<GroupHandle 2 tasks")
    assert kernel.evaluate("'ipywidgets' in sys.modules") is False, "showing a handle must not import ipywidgets"
    assert not kernel.opened(start), "no widget may be created without the extension"
    kernel.run("q.close()")


def test_cancel_button_cancels_the_task(widget_kernel: Kernel) -> None:
    kernel = widget_kernel
    kernel.run(SLOW)
    view = show_task(kernel, "h = slow.submit()\nh")
    kernel.wait_for(lambda: ">running" in view.status_html(), 60, "the view to show the task running")
    assert view.state(view.cancel)["disabled"] is False

    kernel.send_comm_msg(view.cancel, {"method": "custom", "content": {"event": "click"}})
    kernel.wait_for(lambda: ">cancelled</span>" in view.status_html(), 30, "the view to show cancelled after a click")
    assert kernel.evaluate("h.status.value") == "cancelled"
    kernel.wait_for(lambda: view.state(view.cancel)["disabled"] is True, 10, "Cancel to be disabled once cancelled")
    assert view.state(view.retry)["disabled"] is False


def test_finished_view_stops_sending(widget_kernel: Kernel) -> None:
    kernel = widget_kernel
    kernel.run(STEPS)
    view = show_task(kernel, "h = steps.submit(300, say_every=100)\nh")

    def final() -> bool:
        output = "".join(o.get("text", "") for o in view.state(view.output).get("outputs", []))
        return (
            "succeeded" in view.status_html()
            and "(300, 44850)" in view.outcome_html()
            and all(f"step {i}\n" in output for i in (0, 100, 200))
        )

    kernel.wait_for(final, 60, "the final frame (status, result, all output)")
    after = kernel.mark()
    kernel.run("await asyncio.sleep(1.5)")  # the kernel's loop runs freely meanwhile: timers would fire
    late = kernel.updates(view.all_ids(), start=after)
    assert not late, f"a finished view kept sending: {[m.content['data']['state'] for m in late]}"
