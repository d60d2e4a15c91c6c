"""A SQLite store stamps each event no earlier than the row times before it: events sorted by time keep their order.

The triggers read SQLite's clock (millisecond steps), the rows carry Python's (microseconds):
a claim in the millisecond of its enqueue once recorded ``started`` before ``enqueued``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from omniq_nb.models import EventKind, Task, TaskResult, TaskStatus
from omniq_nb.storage.sqlite import SQLiteStorage

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]


async def test_a_task_run_at_once_has_its_events_in_time_order(tmp_path: Path, make_task: MakeTask) -> None:
    async with SQLiteStorage(f"sqlite:///{tmp_path / 'q.db'}") as store:
        for _ in range(200):  # most claims land in the millisecond of their enqueue
            task = make_task()
            await store.insert([task])
            [claimed] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
            assert claimed.lease_token is not None
            await store.progress(task_id=task.id, lease_token=claimed.lease_token, done=1, total=2, message=None)
            done = TaskResult(task_id=task.id, lease_token=claimed.lease_token, status=TaskStatus.SUCCEEDED)
            assert await store.settle([done])
            events = await store.events(task_id=task.id)
            assert [e.kind for e in events] == [
                EventKind.ENQUEUED,
                EventKind.STARTED,
                EventKind.PROGRESS,
                EventKind.SUCCEEDED,
            ]
            assert [e.at for e in events] == sorted(e.at for e in events), events
            row = await store.get(task.id)
            assert row is not None and row.started_at is not None and row.finished_at is not None
            assert events[1].at >= row.started_at and events[3].at >= row.finished_at
