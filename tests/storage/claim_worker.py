"""A worker process for test_multiprocess_claim: claims and settles until nothing is left.

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

from omniq_nb.models import TaskResult, TaskStatus


async def _drain(url: str, worker: str, limit: int, start: Any) -> list[str]:
    claimed_ids: list[str] = []
    async with open_spec(url) as store:
        await store.now()  # connected: a sibling that is slow to connect under load must not find the queue drained
        start.wait(timeout=120)
        while claimed := await store.claim(queues=["default"], limit=limit, lease=120, worker=worker):
            claimed_ids.extend(task.id for task in claimed)
            results = [
                TaskResult(task_id=t.id, lease_token=t.lease_token or "", status=TaskStatus.SUCCEEDED, result=b"ok")
                for t in claimed
            ]
            accepted = await store.settle(results)
            if len(accepted) != len(results):
                raise AssertionError(f"{worker}: only {len(accepted)} of {len(results)} outcomes were accepted")
    return claimed_ids


def claim_until_empty(url: str, worker: str, limit: int, start: Any, out: str) -> None:
    """Connect, wait for every sibling at ``start`` (a barrier), then claim; write the claimed ids to ``out``."""
    try:
        ids = asyncio.run(_drain(url, worker, limit, start))
        Path(out).write_text(json.dumps({"ids": ids}))
    except BaseException:
        Path(out).write_text(json.dumps({"error": traceback.format_exc()}))
        raise
