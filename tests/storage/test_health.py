"""``Storage.check()``: counts per status, lapsed leases and when they become a problem, per backend."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from omniq_nb.models import Task, TaskError, TaskResult, TaskStatus
from omniq_nb.storage import Storage
from omniq_nb.storage.postgres_schema import SCHEMA_VERSION as POSTGRES_SCHEMA
from omniq_nb.storage.sqlite_schema import SCHEMA_VERSION as SQLITE_SCHEMA

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]
LeaseLapsed = Callable[[str], Awaitable[Task]]
HOUR = 3600.0


async def test_a_healthy_store_reports_its_counts_and_no_problem(store: Storage, make_task: MakeTask) -> None:
    await store.insert([make_task() for _ in range(5)])
    await store.insert([make_task(queue="nobody")])
    done, failed, _running = await store.claim(queues=["default"], limit=3, lease=HOUR, worker="w")
    assert done.lease_token and failed.lease_token
    error = TaskError(type="ValueError", message="no")
    await store.settle(
        [
            TaskResult(task_id=done.id, lease_token=done.lease_token, status=TaskStatus.SUCCEEDED, result=b"r"),
            TaskResult(task_id=failed.id, lease_token=failed.lease_token, status=TaskStatus.FAILED, error=error),
        ]
    )
    cancelled = make_task(queue="nobody")
    await store.insert([cancelled])
    await store.cancel(cancelled.id)

    health = await store.check(stale_after=HOUR)

    assert health.ok, health.problems
    assert health.problems == ()
    assert health.url == store.url
    assert health.integrity == "ok"
    assert health.counts == {
        TaskStatus.WAITING: 0,
        TaskStatus.PENDING: 3,
        TaskStatus.RUNNING: 1,
        TaskStatus.SUCCEEDED: 1,
        TaskStatus.FAILED: 1,
        TaskStatus.CANCELLED: 1,
        TaskStatus.EXPIRED: 0,
    }
    assert (health.expired_leases, health.stale_leases, health.stale_ids) == (0, 0, ())
    assert health.stale_after == HOUR
    if store.url.startswith("sqlite"):
        assert health.schema_version == SQLITE_SCHEMA
        assert health.wal_bytes is not None and health.wal_bytes > 0  # the store is open: its WAL exists
    elif store.url.startswith("postgres"):
        assert (health.schema_version, health.wal_bytes) == (POSTGRES_SCHEMA, None)  # the server keeps its own log
    else:
        assert (health.schema_version, health.wal_bytes) == (None, None)


async def test_a_lapsed_lease_is_counted_and_is_a_problem_only_after_the_grace(
    store: Storage, make_task: MakeTask, lease_lapsed: LeaseLapsed
) -> None:
    await store.insert([make_task(), make_task()])
    [lost] = await store.claim(queues=["default"], limit=1, lease=0.1, worker="dead")
    [alive] = await store.claim(queues=["default"], limit=1, lease=HOUR, worker="alive")
    lapsed = await lease_lapsed(lost.id)

    recent = await store.check(stale_after=HOUR)
    assert recent.ok, "a lease that ran out recently is normal: a live pool is about to rescue it"
    assert (recent.expired_leases, recent.stale_leases, recent.stale_ids) == (1, 0, ())

    stale = await store.check(stale_after=0)
    assert not stale.ok
    assert (stale.expired_leases, stale.stale_leases, stale.stale_ids) == (1, 1, (lost.id,))
    [problem] = stale.problems
    assert lost.id in problem and alive.id not in problem
    assert "no live worker pool has rescued" in problem

    assert lapsed.lease_token is not None
    error = TaskError(type="omniq_nb.errors.WorkerLost", message="worker lost")
    rescue = TaskResult(
        task_id=lost.id, lease_token=lapsed.lease_token, status=TaskStatus.PENDING, error=error, rescue=True
    )
    assert await store.settle([rescue])
    rescued = await store.check(stale_after=0)
    assert rescued.ok, rescued.problems
    assert (rescued.expired_leases, rescued.counts[TaskStatus.RUNNING]) == (0, 1)
