from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio.to_thread
import pytest
from store_spec import open_spec

from omniq_nb.models import Task, TaskStatus

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]

TASKS = 12_000  # enough that a process descheduled for a second under load still finds work left
PROCESSES = 4


def run_processes(url: str, tmp_path: Path) -> list[list[str]]:
    """Start the claiming processes together; return what each one claimed."""
    worker = importlib.import_module("claim_worker")
    spawned = importlib.import_module("spawned")
    arguments = [(url, f"proc{n}", 10 + 7 * n) for n in range(PROCESSES)]
    return [report["ids"] for report in spawned.run_together(worker.claim_until_empty, arguments, tmp_path)]


async def test_four_processes_claim_every_task_exactly_once(
    shared_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_task: MakeTask
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # spawned children inherit sys.path
    url = shared_url
    tasks = [make_task(name=f"job{n}") for n in range(TASKS)]
    async with open_spec(url) as store:
        await store.insert(tasks)

    claimed = await anyio.to_thread.run_sync(run_processes, url, tmp_path)

    every_claim = Counter(task_id for ids in claimed for task_id in ids)
    twice = [task_id for task_id, n in every_claim.items() if n > 1]
    assert not twice, f"{len(twice)} tasks were claimed more than once, e.g. {twice[:3]}"
    missing = {t.id for t in tasks} - set(every_claim)
    assert not missing, f"{len(missing)} tasks were never claimed"
    assert sum(len(ids) for ids in claimed) == TASKS
    assert all(ids for ids in claimed), f"a process claimed nothing: {[len(ids) for ids in claimed]}"

    async with open_spec(url) as store:
        final = await store.get_many([t.id for t in tasks])
        counts = await store.count()
    assert len(final) == TASKS
    assert Counter((t.status, t.attempt) for t in final) == {(TaskStatus.SUCCEEDED, 1): TASKS}
    assert counts[TaskStatus.SUCCEEDED] == TASKS
    assert {t.result for t in final} == {b"ok"}
