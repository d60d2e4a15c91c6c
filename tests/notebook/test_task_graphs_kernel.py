"""Promise: a notebook pipeline of tasks runs as a graph in the background, each step once.

Handles passed as arguments chain the steps (load -> preprocess -> three fits -> compare ->
render), ``after=`` orders a cleanup; the cell that builds the graph returns at once, and a
failing step stops the steps after it, naming it, while ``run_on="any"`` still runs.
"""

from __future__ import annotations

import pytest
from kernel_driver import LOAD, Kernel

pytestmark = [pytest.mark.slow]

STEPS = """\
import pathlib, time

@omniq.task
def load(path):
    with open("load.count", "a") as f:
        f.write("x")
    deadline = time.time() + 60
    while not pathlib.Path("go").exists() and time.time() < deadline:
        time.sleep(0.02)
    return list(range(10))

@omniq.task
def preprocess(raw):
    if pathlib.Path("break").exists():
        raise ValueError("bad rows")
    return [x * 2 for x in raw]

@omniq.task
def fit(data, alpha):
    return sum(data) * alpha

@omniq.task
def compare(fits):
    return max(fits)

def render(best):
    return f"best={best}"

@omniq.task
def cleanup():
    return "cleaned"
"""

PIPELINE = """\
raw = load.submit("data.csv")
clean = preprocess.submit(raw)
fits = fit.starmap([(clean, a) for a in (0.1, 1, 10)])
best = compare.submit(fits)
report = best.then(render)
h = cleanup.options(after=[report], run_on="any").submit()
print("built", flush=True)
"""


def test_a_pipeline_runs_in_the_background_each_step_once(kernel: Kernel) -> None:
    kernel.run(LOAD)
    kernel.run(STEPS)
    built = kernel.run(PIPELINE)  # returns while load still waits for its gate: no cell blocks
    assert "built" in built.stdout
    kernel.wait_for(lambda: (kernel.cwd / "load.count").exists(), 30, "load to start")
    statuses = "[x.status.value for x in (clean, *fits, best, report, h)]"
    assert kernel.value(statuses) == ["waiting"] * 7

    (kernel.cwd / "go").touch()
    assert kernel.value("report.result(timeout=60)") == "best=900"
    assert kernel.value("h.result(timeout=60)") == "cleaned"
    assert (kernel.cwd / "load.count").read_text() == "x"  # load ran once
    assert kernel.value("fits.result(timeout=10)") == [9.0, 90, 900]
    assert "waiting" not in kernel.value("[t.status.value for t in omniq.default_queue().list(limit=20)]")


def test_a_failing_step_stops_the_steps_after_it_and_names_it(kernel: Kernel) -> None:
    kernel.run(LOAD)
    kernel.run(STEPS)
    (kernel.cwd / "go").touch()
    (kernel.cwd / "break").touch()
    kernel.run(PIPELINE)

    assert kernel.value("h.result(timeout=60)") == "cleaned"  # run_on="any" still runs
    for name in ("fits[0]", "best", "report"):
        failed = kernel.value(f"[{name}.status.value, {name}.error.type, {name}.error.message, {name}.attempt]")
        assert failed[:2] == ["failed", "omniq_nb.errors.DependencyFailed"], (name, failed)
        assert kernel.value("clean.id") in failed[2] and "bad rows" in failed[2]
        assert failed[3] == 0  # never ran
