"""A worker process for test_multiprocess_dependencies: finishes one side of many diamonds.

It lives in its own module (not a test module) so that a "spawn" child can import it by
name; the test puts this folder on ``sys.path``, which spawned children inherit.
"""

from __future__ import annotations

import asyncio
import json
import traceback
from pathlib import Path
from typing import Any

from store_spec import open_spec

from omniq_nb import graph
from omniq_nb.models import TaskResult, TaskStatus


async def _finish(url: str, queue: str, start: Any) -> int:
    """Connect, wait for the sibling, claim the tasks of ``queue`` one by one; settle each, move its dependents on."""
    promoted = 0
    async with open_spec(url) as store:
        await store.now()  # connected, so that the two sides race from the start
        start.wait(timeout=120)
        while claimed := await store.claim(queues=[queue], limit=1, lease=120, worker=queue):
            [task] = claimed
            result = TaskResult(task_id=task.id, lease_token=task.lease_token or "", status=TaskStatus.SUCCEEDED)
            promoted += len(await graph.settle_dependents(store, await store.settle([result])))
    return promoted


def finish_queue(url: str, queue: str, start: Any, out: str) -> None:
    """Finish ``queue`` together with the sibling (``start``: a barrier); write how many it promoted to ``out``."""
    try:
        Path(out).write_text(json.dumps({"promoted": asyncio.run(_finish(url, queue, start))}))
    except BaseException:
        Path(out).write_text(json.dumps({"error": traceback.format_exc()}))
        raise
