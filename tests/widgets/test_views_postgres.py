"""Promise: a kernel whose queue is in PostgreSQL shows live progress and the result of a task
that an ``omniq-nb worker`` in another process runs (the kernel has no pool of its own)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kernel_driver import KernelFactory
from postgres_server import POSTGRES_URL, postgres_schema
from processes import Processes
from test_views_kernel import STEPS, show_task

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

_PERCENT = re.compile(r"<small>(\d+)%")


@pytest.fixture
def queue_url() -> Iterator[str]:
    with postgres_schema() as schema:
        yield f"{POSTGRES_URL}?schema={schema}"


def test_a_view_shows_progress_and_result_of_a_task_a_cli_worker_runs_on_postgres(
    start_widget_kernel: KernelFactory, queue_url: str, tmp_path: Path, wait_until_sync: Callable[..., Any]
) -> None:
    kernel = start_widget_kernel(OMNIQ_DB_URL=queue_url, OMNIQ_AUTOSTART="0")
    kernel.run("%load_ext omniq_nb\nimport asyncio, time\nimport omniq_nb as omniq")
    kernel.run(STEPS)
    workers = Processes(tmp_path, wait_until_sync)
    try:
        worker = workers.worker(queue_url, concurrency=2)
        start = kernel.mark()
        view = show_task(kernel, "h = steps.submit(300, pause=0.01)\nh")
        kernel.wait_for(lambda: "succeeded" in view.status_html(), 90, "the view to show succeeded")
        kernel.wait_for(lambda: "(300, 44850)" in view.outcome_html(), 10, "the view to show the result")
        shown = [int(p) for m in kernel.updates([view.status], start) for p in _PERCENT.findall(str(m.content))]
        assert any(0 < p < 100 for p in shown), f"the view never showed progress on the way: {shown}"
        assert str(worker.pid) in kernel.run("%omniq workers status").stdout
    finally:
        workers.close()
