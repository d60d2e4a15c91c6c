"""Issue 16's acceptance: a kernel submits on a Redis store and two CLI workers run the tasks.

The kernel's views show live progress and the results (through the widget state a frontend
rebuilds from the comm messages), and ``%omniq workers status`` lists both workers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kernel_driver import Kernel
from processes import Processes
from redis_server import REDIS_URL, redis_prefix
from test_views_kernel import _PERCENT, show_task

pytestmark = [pytest.mark.redis, pytest.mark.slow]

STEPPED = """
@omniq.task
def stepped(n):
    for _ in omniq.track(range(n)):
        time.sleep(0.02)
    return 2 * n
"""


def test_a_kernel_on_redis_sees_two_cli_workers_run_its_tasks(
    start_widget_kernel: Callable[..., Kernel], tmp_path: Path, wait_until_sync: Callable[..., Any]
) -> None:
    workers = Processes(tmp_path, wait_until_sync)
    with redis_prefix() as prefix:
        url = f"{REDIS_URL}?prefix={prefix}"
        try:
            kernel = start_widget_kernel(OMNIQ_AUTOSTART="0", OMNIQ_DB_URL=url)
            kernel.run("%load_ext omniq_nb\nimport time\nimport omniq_nb as omniq\n" + STEPPED)
            one = workers.worker(url, concurrency=2, lease=5)
            two = workers.worker(url, concurrency=2, lease=5)

            start = kernel.mark()
            view = show_task(kernel, "h = stepped.submit(100)\nh")
            kernel.wait_for(lambda: ">succeeded</span>" in view.status_html(), 90, "the view to show succeeded")
            kernel.wait_for(lambda: "200" in view.outcome_html(), 10, "the view to show the result")
            shown = [int(p) for m in kernel.updates([view.status], start) for p in _PERCENT.findall(str(m.content))]
            assert any(0 < p < 100 for p in shown), f"the view never showed progress on the way: {shown}"

            assert kernel.evaluate("stepped.map([20] * 12).result(timeout=90)") == [40] * 12
            ran_on = kernel.evaluate("sorted({t.worker.split(':')[1] for t in omniq.default_queue().list(limit=50)})")
            assert ran_on == sorted({str(one.pid), str(two.pid)}), "both workers ran tasks"

            status = kernel.run("%omniq workers status").stdout
            assert str(one.pid) in status and str(two.pid) in status, status
            assert one.alive() and two.alive()
        finally:
            workers.close()
