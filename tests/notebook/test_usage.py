"""The two blocks of DESIGN.md "Who uses it and how", run as shown in a real kernel."""

from __future__ import annotations

from kernel_driver import LOAD, Kernel, KernelFactory, strip_ansi

SLOW_SQUARE = """\
@omniq.task(retries=2, timeout=60)
def slow_square(x):
    import time; time.sleep(1); print("working on", x); return x * x

@omniq.task
def quick_square(x):
    return x * x
"""


def test_task_decorator_submit_map_result_await_and_get_from_a_new_kernel(
    kernel: Kernel, start_kernel: KernelFactory
) -> None:
    kernel.run(LOAD)
    kernel.run(SLOW_SQUARE)

    inline = kernel.run("slow_square(3)")
    assert inline.result == "9"
    assert inline.stdout == "working on 3\n"

    submitted = kernel.run(
        "import time as _t\n_t0 = _t.perf_counter()\nh = slow_square.submit(4)\n_took = _t.perf_counter() - _t0\n"
        "print(type(h).__name__, h.done(), h.status.value in ('pending', 'running'), _took < 0.9)\n"
        "print(h.task.retries, h.task.timeout, h.task.name)"
    )
    assert submitted.stdout.splitlines()[:2] == ["TaskHandle False True True", "2 60.0 slow_square"]

    mapped = kernel.run(
        "hs = slow_square.map(range(100))\n"
        "print(type(hs).__name__, len(hs.ids), len(set(hs.ids)), h.id in hs.ids, len(hs.handles))"
    )
    assert mapped.stdout.splitlines()[0] == "GroupHandle 100 100 False 100"

    assert kernel.run("h.result()").result == "16"
    assert kernel.run("await h").result == "16"
    assert kernel.run("hs.handles[1].result(timeout=60)").result == "1"
    # the rest of the slow map would take ~25 s: cancel what has not finished
    kernel.run("_ = [x.cancel() for x in hs.handles if not x.done()]")
    assert kernel.value("all(x.done() for x in hs.handles)") is True

    # what a task prints goes to the cell that launched it
    kernel.wait_for(lambda: "working on 4\n" in submitted.stdout, 30, "the submitted task's print")
    assert "working on 4" not in "".join(c.stdout for c in kernel.cells.values() if c is not submitted)

    squares = kernel.value("quick_square.map(range(100)).result(timeout=120)")
    assert squares == [x * x for x in range(100)]

    task_id = kernel.value("h.id")
    assert kernel.run("omniq.get(h.id).result()").result == "16"

    again = start_kernel(cwd=kernel.cwd)  # a new kernel on the same store
    again.run(LOAD)
    assert again.run(f"omniq.get({task_id!r}).result(timeout=60)").result == "16"
    assert again.value(f"omniq.get({task_id!r}).status.value") == "succeeded"


ENQUEUE = """\
%%omniq enqueue --as job --retries 1 --timeout 600 --queue default --priority 5 --kind thread
total = sum(data)
print("done")
total"""


def test_cell_magic_captures_at_enqueue_and_prints_into_its_own_cell(kernel: Kernel) -> None:
    kernel.run(LOAD)
    kernel.run("%omniq workers stop")  # the task waits until other cells have run
    kernel.run("data = [1,2,3]")
    enqueue = kernel.run(ENQUEUE)
    assert kernel.value("[type(job).__name__, job is _]") == ["TaskHandle", True]  # the cell's value is the handle
    options = kernel.value("[job.task.retries, job.task.timeout, job.task.queue, job.task.priority, job.task.kind]")
    assert options == [1, 600.0, "default", 5, "thread"]
    assert kernel.value("job.status.value") == "pending"

    kernel.run("data.append(100)")  # after enqueue: must not change the result
    kernel.run("data = [7]")
    kernel.run("2 + 2")
    kernel.run("%omniq workers start")
    waited = kernel.run("job.result(timeout=60)")
    assert waited.result == "6"

    # the cell's value is the task's live view: what the task prints goes there, and nowhere else
    view = enqueue.view_model_id
    assert view is not None, enqueue.describe()
    kernel.wait_for(lambda: "done" in kernel.widget_text(view), 30, "the cell task's print in its cell's view")
    kernel.run("'barrier'")
    assert kernel.widget_text(view) == "done\n"
    assert enqueue.stdout == ""
    assert kernel.texts_with("done") == {}  # not printed into any cell as a plain stream
    assert kernel.value("data") == [7]


def test_an_error_in_an_enqueued_cell_has_the_cells_line_in_its_traceback(kernel: Kernel) -> None:
    kernel.run(LOAD)
    kernel.run("%%omniq enqueue --as bad\nx = 1\ny = 1/0\nx")
    failed = kernel.run(
        "try:\n"
        "    bad.result(timeout=60)\n"
        "except omniq.TaskFailed as exc:\n"
        "    caught = exc\n"
        "print(type(caught).__name__, caught.error.type, bad.status.value)\n"
        "print(caught.error.traceback)"
    )
    first, _, traceback = failed.stdout.partition("\n")
    assert first == "TaskFailed ZeroDivisionError failed"
    traceback = strip_ansi(traceback)
    assert "y = 1/0" in traceback
    assert "omniq cell" in traceback
    assert "ZeroDivisionError" in traceback
