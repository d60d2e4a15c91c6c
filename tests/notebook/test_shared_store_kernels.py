"""Promise: a kernel whose queue is a file store folder or a NATS prefix submits tasks that an
``omniq-nb worker`` process runs; the kernel reads every result, its views show progress and
results, and ``%omniq workers status`` lists the worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_driver import LOAD, Kernel, KernelFactory
from nats_server import NATS_URL, nats_prefix
from processes import Processes

pytestmark = [pytest.mark.slow]


@pytest.fixture(params=["file", pytest.param("nats", marks=pytest.mark.nats)])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "file":
        yield f"file://{tmp_path / 'queue'}"
        return
    with nats_prefix() as prefix:
        yield f"{NATS_URL}?prefix={prefix}"


def test_a_kernel_on_a_shared_store_has_its_tasks_run_by_a_cli_worker(
    start_kernel: KernelFactory, workers: Processes, queue_url: str
) -> None:
    kernel: Kernel = start_kernel(OMNIQ_DB_URL=queue_url, OMNIQ_AUTOSTART="0")
    kernel.run(LOAD)  # no pool in this kernel
    kernel.run("import os\n@omniq.task\ndef square(x):\n    omniq.progress(1, 1)\n    return x * x, os.getpid()")
    kernel.run("handles = [square.submit(n) for n in range(8)]")
    worker = workers.worker(queue_url, concurrency=2)

    values = kernel.value("[h.result(timeout=60) for h in handles]")

    assert [value for value, _ in values] == [n * n for n in range(8)]
    assert {pid for _, pid in values} == {worker.pid}
    kernel.run("from omniq_nb.notebook.runner import KernelRunner")
    view = kernel.value("str(KernelRunner.current.view(handles[0]))")
    assert "succeeded" in view and "100%" in view, view
    assert str(worker.pid) in kernel.run("%omniq workers status").stdout
