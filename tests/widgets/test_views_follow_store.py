"""Views and handles follow what the store says, whoever wrote it (issue 13).

A task finished by a standalone worker process, a task retried or cancelled with ``%omniq``,
a group that finished, a dashboard that was closed: each is checked in a real kernel,
through the widget state a frontend rebuilds from the comm messages. Every wait is bounded
polling on a condition.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from pathlib import Path

from kernel_driver import Kernel
from processes import Child
from test_views_kernel import show_task

_DURATION = re.compile(r"<small>[^<]*\b\d+\.\d s")
_ELAPSED = re.compile(r"· (\d+\.\d) s</small>")

MULTIPLY = """
@omniq.task
def multiply(a, b):
    time.sleep(0.3)
    return a * b
"""

FLAKY = """
@omniq.task
def flaky():
    context = omniq.current()
    if context.attempt == 1:
        raise ValueError("the first attempt fails")
    if context.attempt == 2:
        deadline = time.monotonic() + 30
        while not context.cancelled and time.monotonic() < deadline:
            time.sleep(0.02)
    return f"attempt {context.attempt} done"
"""

_DASHBOARD_POLLERS = (
    "sum(1 for t in asyncio.all_tasks() if getattr(t.get_coro(), '__qualname__', '') == 'Dashboard._keep_updating')"
)


def test_view_shows_result_and_duration_of_a_task_another_process_ran(
    start_widget_kernel: Callable[..., Kernel], cli_worker: Callable[..., Child], tmp_path: Path
) -> None:
    kernel = start_widget_kernel(OMNIQ_AUTOSTART="0")
    kernel.run("%load_ext omniq_nb\nimport time\nimport omniq_nb as omniq\n" + MULTIPLY)
    view = show_task(kernel, "h = multiply.submit(6, 7)\nh")
    assert ">pending</span>" in view.status_html()
    worker = cli_worker()

    kernel.wait_for(lambda: ">succeeded</span>" in view.status_html(), 60, "the view to show succeeded")
    kernel.wait_for(lambda: "42" in view.outcome_html(), 10, "the view to show the result")
    assert "None" not in view.outcome_html()
    kernel.wait_for(lambda: _DURATION.search(view.status_html()), 10, "the view to show a duration")
    assert kernel.evaluate("(h.status.value, h.task.finished_at is not None)") == ("succeeded", True)
    assert kernel.evaluate("h.task.worker") is not None
    assert kernel.evaluate("h.result()") == 42
    assert worker.alive(), worker.text()


def test_retry_and_cancel_update_handles_and_views(widget_kernel: Kernel) -> None:
    kernel = widget_kernel
    kernel.run(FLAKY)
    view = show_task(kernel, "h = flaky.submit()\nh")
    kernel.wait_for(lambda: "ValueError" in view.outcome_html(), 60, "the first attempt's error")

    kernel.run("%omniq retry {h.id}")
    kernel.wait_for(lambda: ">running" in view.status_html(), 60, "the view to show the second attempt running")
    assert kernel.evaluate("h.status.value") == "running", "the handle should follow the retried task"
    kernel.wait_for(lambda: "ValueError" not in view.outcome_html(), 10, "the old error to go from the view")
    assert view.state(view.cancel)["disabled"] is False

    kernel.run("%omniq cancel {h.id}")
    kernel.wait_for(lambda: ">cancelled</span>" in view.status_html(), 30, "the view to show cancelled")
    assert kernel.evaluate("h.status.value") == "cancelled"
    kernel.wait_for(lambda: "cancelled" in view.outcome_html(), 10, "the outcome to say cancelled")
    assert "ValueError" not in view.outcome_html(), "a cancelled task's view shows an earlier attempt's error"

    kernel.run("%omniq retry {h.id}")
    kernel.wait_for(lambda: ">succeeded</span>" in view.status_html(), 60, "the view to show the third attempt")
    kernel.wait_for(lambda: "attempt 3 done" in view.outcome_html(), 10, "the third attempt's result")
    assert kernel.evaluate("(h.status.value, omniq.get(h.id).status.value)") == ("succeeded", "succeeded")
    assert kernel.evaluate("h.result()") == "attempt 3 done"


def test_group_clock_stops_when_its_last_task_finishes(widget_kernel: Kernel) -> None:
    kernel = widget_kernel
    kernel.run(MULTIPLY + "\n@omniq.task\ndef double(x):\n    return multiply.fn(x, 2)")
    roots = kernel.run("g = double.map(range(3))\ng").widget_roots()
    assert len(roots) == 1
    summary, toggle, rows = kernel.children(roots[0])

    def summary_html() -> str:
        return str(kernel.widget_states()[summary]["value"])

    kernel.wait_for(lambda: "3/3 done" in summary_html(), 60, "the group to finish")
    finished = summary_html()
    elapsed = float(_ELAPSED.findall(finished)[0])
    task_span = kernel.evaluate(
        "(max(t.finished_at for t in (h.task for h in g)) - min(t.created_at for t in (h.task for h in g)))"
        ".total_seconds()"
    )
    assert abs(elapsed - task_span) < 0.2, f"the group's clock says {elapsed} s, its tasks took {task_span} s"

    kernel.run("await asyncio.sleep(1.2)")  # time passes in the kernel; the group stays finished
    layout = kernel.widget_states()[rows]["layout"].removeprefix("IPY_MODEL_")
    for shown in (True, False, True):
        kernel.send_comm_msg(toggle, {"method": "update", "state": {"value": shown}, "buffer_paths": []})
        display = None if shown else "none"
        kernel.wait_for(
            lambda display=display: kernel.widget_states()[layout].get("display") == display,
            10,
            f"the task list to be {'shown' if shown else 'hidden'}",
        )
        assert summary_html() == finished, "a finished group's elapsed time or rate changed"
    assert "double" in str(kernel.widget_states()[rows]["value"])


def test_dashboard_pollers_stop_with_their_view(widget_kernel: Kernel) -> None:
    kernel = widget_kernel
    kernel.run("d = omniq.dashboard()\nd")
    second = kernel.run("%omniq dashboard").widget_roots()[0]
    kernel.run("%omniq dashboard")
    kernel.wait_for(lambda: kernel.evaluate(_DASHBOARD_POLLERS) == 3, 10, "three dashboards polling")

    kernel.run("d.close()")
    kernel.wait_for(lambda: kernel.evaluate(_DASHBOARD_POLLERS) == 2, 10, "close() to stop its poller")

    kernel.kc.shell_channel.send(kernel.kc.session.msg("comm_close", {"comm_id": second, "data": {}}))
    kernel.wait_for(lambda: kernel.evaluate(_DASHBOARD_POLLERS) == 1, 10, "closing the comm to stop its poller")

    kernel.run("%unload_ext omniq_nb")  # what the kernel's shutdown does too
    kernel.wait_for(lambda: kernel.evaluate(_DASHBOARD_POLLERS) == 0, 10, "closing the queue to stop the last poller")


def test_dashboard_filter_starts_on_all(widget_kernel: Kernel) -> None:
    kernel = widget_kernel
    root = kernel.run("%omniq dashboard").widget_roots()[0]
    states = kernel.widget_states()
    dropdown = next(m for m in kernel.tree(root, states) if states[m]["_model_name"] == "DropdownModel")
    assert states[dropdown]["index"] == 0, "the status filter should start on 'all', not blank"
    assert states[dropdown]["_options_labels"][0] == "all"
    kernel.run("from omniq_nb.notebook.runner import KernelRunner\nq = KernelRunner.current.queue")
    kernel.run("h = q.enqueue(sum, [20, 22])\nh.result(timeout=60)")
    kernel.wait_for(
        lambda: kernel.evaluate("h.id") in "".join(kernel.html_of(root)),
        10,
        "the dashboard to list the task under 'all'",
    )


def test_dashboard_lists_the_kernels_pool_and_a_cli_worker(
    widget_kernel: Kernel, cli_worker: Callable[..., Child], tmp_path: Path
) -> None:
    kernel = widget_kernel
    worker = cli_worker()
    kernel.run("from omniq_nb.notebook.runner import KernelRunner\npool = KernelRunner.current.pool")
    mine = kernel.evaluate("pool.id")
    root = kernel.run("%omniq dashboard").widget_roots()[0]
    pools = kernel.children(root)[2]  # controls, message, workers, tasks

    def pools_html() -> str:
        return str(kernel.widget_states()[pools]["value"])

    kernel.wait_for(lambda: f":{worker.pid}</td>" in pools_html(), 60, "the CLI worker listed")
    assert worker.alive(), worker.text()
    shown = pools_html()
    assert "2 live" in shown
    assert f"<code>{mine}</code>" in shown
    assert "(this kernel)" in shown
    assert "all tasks" in shown, "the CLI worker serves every task"
    assert f"0/{kernel.evaluate('pool.concurrency')}" in shown
    assert re.search(r"\d+ s ago", shown), "the last heartbeat's age"

    worker.signal(signal.SIGTERM)  # graceful: it leaves the registry, and the next refresh drops it
    worker.process.wait(30)
    kernel.wait_for(lambda: "1 live" in pools_html(), 30, "the stopped CLI worker to leave the dashboard")
    assert f"<code>{mine}</code>" in pools_html()
