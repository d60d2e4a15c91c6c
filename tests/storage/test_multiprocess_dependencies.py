"""Contract: two processes finishing the two dependencies of many tasks at once promote each exactly once.

Each diamond's dependencies sit in two queues; one process finishes the left ones and another
the right ones, each moving dependents on right after each settle (``graph.settle_dependents``),
so every interleaving of the two happens somewhere among the diamonds.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import anyio.to_thread
import pytest
from store_spec import open_spec

from omniq_nb.models import EventKind, Task, TaskStatus

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]
DIAMONDS = 60


def run_sides(url: str, tmp_path: Path) -> list[int]:
    """Run the two finishing processes together; return how many tasks each promoted."""
    worker = importlib.import_module("dependency_worker")
    spawned = importlib.import_module("spawned")
    reports = spawned.run_together(worker.finish_queue, [(url, "left"), (url, "right")], tmp_path)
    return [report["promoted"] for report in reports]


async def test_two_processes_finishing_both_dependencies_promote_each_dependent_once(
    shared_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_task: MakeTask
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # spawned children inherit sys.path
    lefts = [make_task(queue="left") for _ in range(DIAMONDS)]
    rights = [make_task(queue="right") for _ in range(DIAMONDS)]
    sinks = [
        make_task(status=TaskStatus.WAITING, depends_on=(left.id, right.id))
        for left, right in zip(lefts, rights, strict=True)
    ]
    async with open_spec(shared_url) as store:
        await store.insert([*lefts, *rights, *sinks])

    promoted = await anyio.to_thread.run_sync(run_sides, shared_url, tmp_path)

    assert sum(promoted) == DIAMONDS, f"promotions per process: {promoted}"
    async with open_spec(shared_url) as store:
        final = await store.get_many([sink.id for sink in sinks])
        assert {task.status for task in final} == {TaskStatus.PENDING}
        for sink in sinks:
            ready = [e for e in await store.events(task_id=sink.id) if e.kind is EventKind.READY]
            assert len(ready) == 1, f"{sink.id} was promoted {len(ready)} times"
