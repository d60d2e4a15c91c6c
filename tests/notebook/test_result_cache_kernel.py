"""Promise: a restarted kernel that submits the same cached cells gets every result at once.

The pipeline of issue 18 with ``cache=True`` on every step: after a kernel restart, the
same cells give handles that are done before any pool runs them (nothing runs, no task is
added); editing ``fit`` reruns ``fit``, ``compare`` and ``render``, not ``load`` and
``preprocess``. A ``%%omniq enqueue --cache`` cell is reused the same way.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from kernel_driver import LOAD, Kernel, KernelFactory
from processes import Processes

pytestmark = [pytest.mark.slow]

STEPS = """\
def counted(step):
    with open(f"{{step}}.count", "a") as f:
        f.write("x")

@omniq.task(cache=True)
def load(path):
    counted("load")
    return list(range(10))

@omniq.task(cache=True)
def preprocess(raw):
    counted("preprocess")
    return [x * 2 for x in raw]

@omniq.task(cache=True)
def fit(data, alpha):
    counted("fit")
    return sum(data) * alpha{edit}

@omniq.task(cache=True)
def compare(fits):
    counted("compare")
    return max(fits)

def render(best):
    counted("render")
    return f"best={{best}}"
"""

PIPELINE = """\
raw = load.submit("data.csv")
clean = preprocess.submit(raw)
fits = fit.starmap([(clean, a) for a in (0.1, 1, 10)])
best = compare.submit(fits)
report = best.then(render, cache=True)
"""

DONE = "[h.done() for h in (raw, clean, *fits, best, report)]"
TASKS = "len(omniq.default_queue().list(limit=1000))"


def counts(kernel: Kernel) -> dict[str, int]:
    steps = ("load", "preprocess", "fit", "compare", "render")
    return {s: len(p.read_text()) if (p := kernel.cwd / f"{s}.count").exists() else 0 for s in steps}


def test_a_restarted_kernel_gets_cached_results_and_an_edit_reruns_from_there(kernel: Kernel) -> None:
    kernel.run(LOAD)
    kernel.run(STEPS.format(edit=""))
    kernel.run(PIPELINE)
    assert kernel.value("report.result(timeout=60)") == "best=900"
    assert counts(kernel) == {"load": 1, "preprocess": 1, "fit": 3, "compare": 1, "render": 1}
    tasks = kernel.value(TASKS)

    kernel.restart()
    kernel.run("%load_ext omniq_nb\nimport omniq_nb as omniq\n%omniq workers stop")  # no pool could run a thing
    kernel.run(STEPS.format(edit=""))
    kernel.run(PIPELINE)
    assert kernel.value(DONE) == [True] * 7
    assert kernel.value("report.result(timeout=0)") == "best=900"
    assert kernel.value(TASKS) == tasks
    assert counts(kernel) == {"load": 1, "preprocess": 1, "fit": 3, "compare": 1, "render": 1}

    kernel.run("%omniq workers start")
    kernel.run(STEPS.format(edit=" + 1"))
    kernel.run(PIPELINE)
    assert kernel.value("report.result(timeout=60)") == "best=901"
    assert counts(kernel) == {"load": 1, "preprocess": 1, "fit": 6, "compare": 2, "render": 2}


def test_a_cached_cell_is_reused_with_the_same_values_and_rerun_with_others(kernel: Kernel) -> None:
    kernel.run(LOAD)
    cell = "%%omniq enqueue --as total --cache\nwith open('cell.count', 'a') as f:\n    f.write('x')\nsum(data)"
    kernel.run("data = [1, 2, 3]")
    kernel.run(cell)
    assert kernel.value("total.result(timeout=60)") == 6
    kernel.run("first = total.id")
    kernel.run(cell)
    assert kernel.value("(total.id == first, total.done(), total.result(timeout=0))") == [True, True, 6]
    kernel.run("data = [1, 2, 3, 4]")
    kernel.run(cell)
    assert kernel.value("(total.id != first, total.result(timeout=60))") == [True, 10]
    assert (kernel.cwd / "cell.count").read_text() == "xx"
    assert "forgot 2 cache entries" in kernel.run("%omniq purge --cache").stdout


def test_cached_steps_run_by_cli_workers_are_reused_by_a_restarted_kernel(
    start_kernel: KernelFactory, workers: Processes, tmp_path: Path
) -> None:
    """A kernel with no pool, two CLI workers and ``omniq-nb list`` on one SQLite file."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    first, second = workers.worker(url, concurrency=2), workers.worker(url, concurrency=2)
    kernel = start_kernel(OMNIQ_DB_URL=url, OMNIQ_AUTOSTART="0")  # the CLI workers run every step
    kernel.run(LOAD)
    kernel.run(STEPS.format(edit=""))
    kernel.run(PIPELINE)
    assert kernel.value("report.result(timeout=60)") == "best=900"
    assert counts(kernel) == {"load": 1, "preprocess": 1, "fit": 3, "compare": 1, "render": 1}
    listed = subprocess.run(
        [sys.executable, "-m", "omniq_nb", "list", "--db-url", url, "--limit", "100"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 1 + 7  # a header, then the 7 tasks

    kernel.restart()
    kernel.run(LOAD)
    kernel.run(STEPS.format(edit=""))
    kernel.run(PIPELINE)
    assert kernel.value(DONE) == [True] * 7
    assert kernel.value(TASKS) == 7
    assert counts(kernel) == {"load": 1, "preprocess": 1, "fit": 3, "compare": 1, "render": 1}
    assert first.alive() and second.alive(), first.text() + second.text()
