"""The run history reads every backend through the ordinary listing: durations of succeeded runs, by name."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from omniq_nb.estimates import run_seconds
from omniq_nb.history import RunHistory
from omniq_nb.models import Task, TaskError, TaskResult, TaskStatus
from omniq_nb.storage import Storage

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]


def outcome(task: Task, status: TaskStatus) -> TaskResult:
    assert task.lease_token is not None
    error = TaskError(type="ValueError", message="no", attempt=task.attempt) if status is TaskStatus.FAILED else None
    return TaskResult(task_id=task.id, lease_token=task.lease_token, status=status, result=b"r", error=error)


async def test_history_of_succeeded_runs_per_name(store: Storage, make_task: MakeTask) -> None:
    fits = [make_task(name="fit") for _ in range(3)]
    await store.insert([*fits, make_task(name="other"), make_task(name="fit")])
    claimed = await store.claim(queues=["default"], limit=5, lease=30, worker="w")
    assert len(claimed) == 5
    failing = next(t for t in claimed if t.name == "fit" and t.id not in {f.id for f in fits})
    settled = await store.settle(
        [outcome(t, TaskStatus.FAILED if t is failing else TaskStatus.SUCCEEDED) for t in claimed]
    )
    assert len(settled) == 5

    succeeded = sorted((t for t in await store.get_many([f.id for f in fits])), key=lambda t: t.id)
    durations = [run_seconds(t) for t in succeeded]
    assert all(d is not None for d in durations)

    history = RunHistory(store)
    assert history.known("fit") is None
    stats = await history.stats("fit")
    assert stats.count == 3  # the failed run is not one
    assert stats.last == durations[-1]
    assert sorted([stats.median, stats.p90]) == [stats.median, stats.p90]
    assert (await history.stats("other")).count == 1
    assert (await history.stats("nothing")).count == 0
