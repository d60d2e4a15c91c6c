"""Promise: a kernel whose queue is in PostgreSQL (results in a SQLite file of their own) submits
tasks that two ``omniq-nb worker`` processes run; the kernel reads every result and lists both
workers with ``%omniq workers status``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_driver import LOAD, Kernel, KernelFactory
from postgres_server import POSTGRES_URL, postgres_schema
from processes import Processes

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def queue_url() -> Iterator[str]:
    with postgres_schema() as schema:
        yield f"{POSTGRES_URL}?schema={schema}"


def test_a_kernel_on_postgres_has_its_tasks_run_by_two_cli_workers(
    start_kernel: KernelFactory, workers: Processes, queue_url: str, tmp_path: Path
) -> None:
    result_url = f"sqlite:///{tmp_path / 'results.db'}"
    kernel: Kernel = start_kernel(OMNIQ_DB_URL=queue_url, OMNIQ_RESULT_URL=result_url, OMNIQ_AUTOSTART="0")
    kernel.run(LOAD)  # opens (and creates) the schema; no pool in this kernel
    kernel.run("import os\n@omniq.task\ndef square(x):\n    return x * x, os.getpid()")
    first = workers.worker(queue_url, OMNIQ_RESULT_URL=result_url)
    second = workers.worker(queue_url, OMNIQ_RESULT_URL=result_url)

    kernel.run("handles = [square.submit(n) for n in range(12)]")
    values = kernel.value("[h.result(timeout=60) for h in handles]")

    assert [value for value, _ in values] == [n * n for n in range(12)]
    assert {pid for _, pid in values} <= {first.pid, second.pid}
    assert kernel.value("os.getpid()") not in {pid for _, pid in values}
    status = kernel.run("%omniq workers status").stdout
    assert str(first.pid) in status and str(second.pid) in status
