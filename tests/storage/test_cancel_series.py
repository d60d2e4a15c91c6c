from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from omniq_nb.models import Schedule, Task, TaskResult, TaskStatus
from omniq_nb.storage import Storage

pytestmark = pytest.mark.anyio


async def test_cancelling_a_finished_run_stops_its_series(store: Storage, make_task: Callable[..., Task]) -> None:
    every_minute = Schedule(interval=timedelta(minutes=1))
    seed = make_task(schedule=every_minute)
    first = make_task(id=seed.id, schedule=every_minute, series=seed.id)
    await store.insert([first])
    [claimed] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
    following = make_task(schedule=every_minute, series=first.id)
    result = TaskResult(task_id=first.id, lease_token=claimed.lease_token or "", status=TaskStatus.SUCCEEDED)
    await store.settle([result], successors={first.id: following})
    unrelated = make_task()
    await store.insert([unrelated])

    after = await store.cancel(first.id)

    assert after is not None and after.status is TaskStatus.SUCCEEDED  # a finished run stays as it was
    assert (await store.get(following.id)).status is TaskStatus.CANCELLED  # type: ignore[union-attr]
    assert (await store.get(unrelated.id)).status is TaskStatus.PENDING  # type: ignore[union-attr]


async def test_cancelling_a_plain_task_touches_nothing_else(store: Storage, make_task: Callable[..., Task]) -> None:
    target, other = make_task(), make_task()
    await store.insert([target, other])
    cancelled = await store.cancel(target.id)
    assert cancelled is not None and cancelled.status is TaskStatus.CANCELLED
    assert (await store.get(other.id)).status is TaskStatus.PENDING  # type: ignore[union-attr]
