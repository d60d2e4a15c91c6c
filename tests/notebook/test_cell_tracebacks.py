"""A failed task's traceback, as a notebook user reads it (issue 13): their frames, with source.

Library frames (omniq_nb, asyncio, threads, nest_asyncio2, ipykernel) are collapsed into one
"hidden" line; a cell task is named by its cell's prompt number; a function defined in a cell
shows its source line on every worker kind, a child process included.
"""

from __future__ import annotations

import re

from kernel_driver import LOAD, Kernel, strip_ansi

LIBRARY = re.compile(r"/(omniq_nb|asyncio|concurrent|ipykernel|IPython)/|/(threading|nest_asyncio2)\.py")
HIDDEN = re.compile(r"^  \[\.\.\. \d+ library frames? hidden \.\.\.\]$", re.MULTILINE)

TASKS = """\
@omniq.task
def divide(a, b):
    ratio = a / b  # the line that fails
    return ratio

@omniq.task
async def divide_later(a, b):
    ratio = a / b  # the awaited line that fails
    return ratio

def failure(h):
    try:
        h.result(timeout=60)
    except omniq.TaskFailed as exc:
        return exc.error.traceback
"""


def assert_users_frames_only(traceback: str, source: str) -> None:
    """Assert ``traceback`` shows ``source`` and the exception, and hides every library frame."""
    lines = traceback.rstrip("\n").splitlines()
    assert lines[0] == "Traceback (most recent call last):", traceback
    assert lines[-1] == "ZeroDivisionError: division by zero", traceback
    assert f"    {source}" in lines, traceback
    assert HIDDEN.search(traceback), traceback
    assert not LIBRARY.search(traceback), traceback


def test_a_cell_functions_traceback_shows_its_frames_with_source_on_every_kind(kernel: Kernel) -> None:
    kernel.run(LOAD)
    kernel.run(TASKS)
    for kind in ("thread", "async", "process"):
        traceback = kernel.value(f"failure(divide.options(kind={kind!r}).submit(1, 0))")
        assert_users_frames_only(traceback, "ratio = a / b  # the line that fails")
    traceback = kernel.value("failure(divide_later.submit(1, 0))")
    assert_users_frames_only(traceback, "ratio = a / b  # the awaited line that fails")


def test_an_enqueued_cells_traceback_names_the_cell_by_its_prompt_and_shows_its_lines(kernel: Kernel) -> None:
    kernel.run(LOAD)
    kernel.run(TASKS)
    for kind in ("thread", "process"):
        cell = kernel.run(f"%%omniq enqueue --as bad --kind {kind}\nx = 1\ny = x / 0\nx")
        assert cell.reply is not None
        prompt = cell.reply["execution_count"]
        traceback = kernel.value("failure(bad)")
        assert f'  File "<omniq cell {prompt}>", line 2, in <module>\n' in traceback, traceback
        assert_users_frames_only(traceback, "y = x / 0")


def test_the_error_a_cell_shows_for_a_failed_result_is_the_remote_traceback_not_the_waits_frames(
    kernel: Kernel,
) -> None:
    kernel.run(LOAD)
    kernel.run(TASKS)
    waited = kernel.execute("h = divide.submit(1, 0)\nh.result(timeout=60)")
    assert waited.status == "error"
    shown = strip_ansi("\n".join(line for error in waited.errors for line in error["traceback"]))
    assert "----> 2 h.result(timeout=60)" in shown
    assert "Remote traceback:" in shown
    assert "ratio = a / b  # the line that fails" in shown
    for waiting in ("nest_asyncio2", "asyncio/", "omniq_nb/results.py", "omniq_nb/events.py"):
        assert waiting not in shown, shown
