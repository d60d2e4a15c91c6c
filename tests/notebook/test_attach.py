"""``%omniq attach``: a new kernel of a notebook takes back the tasks its earlier kernels launched."""

from __future__ import annotations

from kernel_driver import LOAD, KernelFactory

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
    assert attached.stdout.splitlines() == [
        "attached 2 tasks of a.ipynb from 1 earlier kernel; bound: job",
        "double: source changed since submitted",
    ]
    assert attached.view_model_id is not None, attached.describe()  # one group view
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


def test_attach_finds_nothing_in_a_first_kernel(start_kernel: KernelFactory) -> None:
    kernel = start_kernel(OMNIQ_AUTOSTART="0")
    kernel.run(LOAD)
    kernel.run('%%omniq enqueue --as mine\n"here"')
    found = kernel.run("%omniq attach --all")
    assert found.stdout.startswith("no tasks of ") and found.stdout.endswith(" from earlier kernels in this store\n")
    assert found.result is None
    assert kernel.value("type(mine).__name__") == "TaskHandle"
