"""``%omniq attach`` takes back the tasks of a notebook's earlier kernels; old origins still route output."""

from __future__ import annotations

from kernel_driver import LOAD, Kernel, KernelFactory

WAITS_FOR_GO = """\
%%omniq enqueue --as job --retries 1
import os, time
deadline = time.time() + 60
while not os.path.exists("go") and time.time() < deadline:
    time.sleep(0.02)
"job done"
"""

DOUBLE = "@omniq.task\ndef double(x):\n    return 2 * x\n"


def test_a_new_kernel_of_the_notebook_attaches_its_tasks_and_binds_job(start_kernel: KernelFactory) -> None:
    first = start_kernel(JPY_SESSION_NAME="a.ipynb", OMNIQ_LEASE_SECONDS="1")
    first.run(LOAD)
    first.run(WAITS_FOR_GO)
    first.run(DOUBLE + "quick = double.submit(21)")
    job_id, quick_id = first.value("[job.id, quick.id]")
    first.wait_for(
        lambda: first.value("[job.status.value, quick.status.value]") == ["running", "succeeded"], 30, "job to run"
    )

    other = start_kernel(JPY_SESSION_NAME="b.ipynb", OMNIQ_AUTOSTART="0")  # another notebook, same folder
    other.run(LOAD)
    other.run('%%omniq enqueue --as job\n"b"')
    other_id = other.value("job.id")
    other.close()
    first.sigkill()

    again = start_kernel(JPY_SESSION_NAME="a.ipynb", OMNIQ_LEASE_SECONDS="1")
    again.run(LOAD)
    assert again.run("%omniq attach --since 1h").stdout.splitlines()[0] == (
        "attached 2 tasks of a.ipynb from 1 earlier kernel; bound: job"
    )
    again.run(DOUBLE.replace("2 * x", "x + x"))  # redefined since it was submitted
    attached = again.run("%omniq attach")
    lines = attached.stdout.splitlines()
    assert lines[:2] == [
        "attached 2 tasks of a.ipynb from 1 earlier kernel; bound: job",
        "double: source changed since submitted",
    ]
    assert lines[2].split()[0] == "ID"  # then the tasks, as %omniq list shows them
    assert [[row.split()[0], row.split()[-1]] for row in lines[3:]] == [[job_id, "job"], [quick_id, "double"]]
    view = attached.view_model_id
    assert view is not None, attached.describe()  # one group view, its rows naming both tasks
    rows = "".join(again.html_of(view))
    assert job_id in rows and quick_id in rows and "cell job" in rows and "double" in rows
    assert again.value("[type(_).__name__, _.ids, type(job).__name__, job.id]") == [
        "GroupHandle",
        [job_id, quick_id],
        "TaskHandle",
        job_id,
    ]
    assert other_id not in again.value("_.ids")

    (again.cwd / "go").touch()  # the first kernel is gone: this kernel's pool runs job again
    assert again.run("job.result(timeout=60)").result == "'job done'"
    assert again.value("[job.status.value, job.attempt]") == ["succeeded", 2]


def test_after_a_restart_without_a_notebook_path_the_folder_names_the_notebook(kernel: Kernel) -> None:
    kernel.run(LOAD)
    kernel.run(WAITS_FOR_GO)
    kernel.run(DOUBLE + "quick = double.submit(21)")
    ids = kernel.value("[job.id, quick.id]")
    found = kernel.run("%omniq attach --all")  # nothing from an earlier kernel yet
    assert found.stdout == f"no tasks of notebooks in {kernel.cwd} from earlier kernels in this store\n"
    assert found.result is None

    kernel.restart()  # gracefully: job, still running, goes back to the queue
    kernel.run(LOAD)
    attached = kernel.run("%omniq attach")
    lines = attached.stdout.splitlines()
    assert lines[0] == f"attached 2 tasks of notebooks in {kernel.cwd} from 1 earlier kernel; bound: job"
    assert [row.split()[0] for row in lines[2:]] == ids
    assert kernel.value("[_.ids, job.id]") == [ids, ids[0]]
    (kernel.cwd / "go").touch()
    assert kernel.run("job.result(timeout=60)").result == "'job done'"


OLD_ORIGIN = """\
import os, time
from omniq_nb.context import set_origin
from omniq_nb.notebook.origin import parse
from omniq_nb.notebook.runner import KernelRunner

@omniq.task
def prints_on_go():
    while not os.path.exists("go"):
        time.sleep(0.02)
    print("routed by an old origin")

outputs = KernelRunner.current.outputs
_ = set_origin(f"{outputs.kernel}:{parse(outputs.remember_current_cell()).cell}")  # as tasks said before
h = prints_on_go.submit()
"""


def test_a_task_whose_origin_has_the_old_format_prints_into_its_cell(kernel: Kernel) -> None:
    kernel.run(LOAD)
    launching = kernel.run(OLD_ORIGIN)
    assert kernel.value("h.task.origin.count(':')") == 1
    (kernel.cwd / "go").touch()
    waiting = kernel.run("h.result(timeout=60)")  # the executing cell meanwhile
    kernel.wait_for(lambda: "routed by an old origin" in launching.stdout, 30, "the print in the launching cell")
    assert "routed by an old origin" not in waiting.stdout
