"""What a task prints or displays goes to the cell that launched it, even after other cells ran."""

from __future__ import annotations

from kernel_driver import LOAD, Kernel

TASKS = """\
import os, time

def wait_for_go():
    deadline = time.time() + 60
    while not os.path.exists("go") and time.time() < deadline:
        time.sleep(0.02)

@omniq.task(kind="thread")
def thread_prints():
    wait_for_go()
    print("printed by the thread task")
    return "thread"

@omniq.task(kind="process")
def process_prints():
    wait_for_go()
    print("printed by the process task")
    return "process"

@omniq.task(kind="thread")
def thread_prints_to_view():
    wait_for_go()
    print("printed into the view")
    return "view"

@omniq.task(kind="thread")
def thread_displays():
    from IPython.display import display
    wait_for_go()
    display("displayed by the thread task")
    return "display"
"""


def test_task_output_goes_to_the_launching_cell_not_the_executing_one(kernel: Kernel) -> None:
    kernel.run(LOAD)
    kernel.run(TASKS)
    launch_thread = kernel.run("t = thread_prints.submit()")
    launch_process = kernel.run("p = process_prints.submit()")
    launch_display = kernel.run("d = thread_displays.submit()")
    launch_view = kernel.run("v = thread_prints_to_view.submit()\nv")  # the handle shows as a live view
    second = kernel.run("2 + 2")
    third = kernel.run("print('cell three')")
    # the tasks print while this cell executes
    last = kernel.run(
        "open('go', 'w').close()\n"
        "print([t.result(timeout=60), p.result(timeout=60), d.result(timeout=60), v.result(timeout=60)])"
    )
    assert last.stdout == "['thread', 'process', 'display', 'view']\n"

    kernel.wait_for(lambda: launch_thread.stdout, 30, "the thread task's print")
    kernel.wait_for(lambda: launch_process.stdout, 30, "the process task's print")
    kernel.wait_for(lambda: launch_display.displays, 30, "the thread task's display")
    view = launch_view.view_model_id
    assert view is not None, launch_view.describe()
    kernel.wait_for(lambda: kernel.widget_text(view), 30, "the print in the task's view")
    kernel.run("'barrier'")  # anything sent elsewhere would have arrived by now

    assert launch_thread.stdout == "printed by the thread task\n"
    assert set(kernel.texts_with("printed by the thread task")) == {launch_thread.msg_id}

    assert launch_process.stdout == "printed by the process task\n"
    assert set(kernel.texts_with("printed by the process task")) == {launch_process.msg_id}

    assert [data["text/plain"] for data in launch_display.displays] == ["'displayed by the thread task'"]
    shown_in = {cell.msg_id for cell in kernel.cells.values() if cell.displays}
    assert shown_in == {launch_display.msg_id}

    assert kernel.widget_text(view) == "printed into the view\n"
    assert kernel.texts_with("printed into the view") == {}  # in the view only, not as a cell stream

    for cell in (second, third, last):
        assert "task" not in cell.stdout + cell.stderr, cell.describe()
    assert second.result == "4"
    assert third.stdout == "cell three\n"
