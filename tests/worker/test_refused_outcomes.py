"""An outcome the store refuses for good (an entry larger than NATS takes) fails its task, holding back no other.

Large arguments and results go to the NATS store's object store (``test_nats_objects``); an
error message is kept in the task's entry, so a huge one is what a NATS store still refuses.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
from nats_server import NATS_URL, nats_prefix

import omniq_nb as omniq
from omniq_nb.models import EventKind, TaskError, TaskResult, TaskStatus
from omniq_nb.policy import succeeded, successor
from omniq_nb.worker.calls import Outcome
from omniq_nb.worker.outcomes import OutcomeWriter

pytestmark = [pytest.mark.anyio, pytest.mark.nats]

TOO_LARGE = 3_000_000  # characters: above the server's max_payload (1 MB by default)


def add(a: int, b: int) -> int:
    return a + b


def fail_loudly(size: int) -> int:
    if size > 100:
        raise ValueError("x" * size)
    return size


async def test_a_result_too_large_for_the_store_fails_its_task_and_its_batch_mates_are_stored() -> None:
    with nats_prefix() as prefix:
        async with omniq.AsyncOmniQ(db_url=f"{NATS_URL}?prefix={prefix}") as q:
            first = await q.enqueue(add, 1, 2)
            large = await q.enqueue_call(fail_loudly, args=(TOO_LARGE,), retries=3)
            last = await q.enqueue(add, 3, 4)
            claimed = {t.id: t for t in await q.storage.claim(queues=["default"], limit=3, lease=60, worker="here")}
            stored: list[tuple[str, str]] = []
            writer = OutcomeWriter(
                q, "here", running=lambda: 0, lease_of=lambda _: None, written=lambda *key: stored.append(key)
            )
            # One batch: the store refuses it as a whole, then each outcome is stored apart.
            writer.record(claimed[first.id], Outcome(result=q.serializer.dumps(3)), 0.1)
            huge = TaskError(type="ValueError", message="x" * TOO_LARGE)
            writer.record(claimed[large.id], Outcome(error=huge, raised=("ValueError",), retryable=False), 0.1)
            writer.record(claimed[last.id], Outcome(result=q.serializer.dumps(7)), 0.1)
            writer.drain()
            await asyncio.wait_for(writer.write_loop(), 30)

            assert await first.result(timeout=5) == 3
            assert await last.result(timeout=5) == 7
            with pytest.raises(omniq.TaskFailed, match="max_payload") as caught:
                await large.result(timeout=5)
            assert caught.value.error.type == "omniq_nb.errors.RecordTooLarge"
            task = (await q.get(large.id)).task
            assert (task.status, task.attempt) == (TaskStatus.FAILED, 1)  # not retried: it would fail the same way
            assert sorted(stored) == sorted((t.id, t.lease_token or "") for t in claimed.values())


async def test_a_refused_retry_of_a_periodic_task_still_schedules_its_next_run() -> None:
    with nats_prefix() as prefix:
        async with omniq.AsyncOmniQ(db_url=f"{NATS_URL}?prefix={prefix}") as q:
            run = await q.enqueue_call(add, args=(1, 2), retries=3, interval=3600, delay=0)
            [claimed] = await q.storage.claim(queues=["default"], limit=1, lease=60, worker="here")
            writer = OutcomeWriter(q, "here", running=lambda: 0, lease_of=lambda _: None, written=lambda *_: None)
            huge = TaskError(type="ValueError", message="x" * TOO_LARGE)  # retryable: a retry, not final
            writer.record(claimed, Outcome(error=huge, raised=("ValueError",)), 0.1)
            writer.drain()
            await asyncio.wait_for(writer.write_loop(), 30)

            assert (await q.get(run.id)).task.status == TaskStatus.FAILED  # refused: final, so the series goes on
            following = [t for t in await q.storage.list() if t.id != run.id]
            assert [(t.status, t.series) for t in following] == [(TaskStatus.PENDING, claimed.series)]


async def test_a_task_raising_a_huge_message_fails_with_it_clipped_and_the_pool_goes_on() -> None:
    with nats_prefix() as prefix:
        async with omniq.AsyncOmniQ(db_url=f"{NATS_URL}?prefix={prefix}") as q:
            pool = omniq.AsyncWorkerPool(q, concurrency=4, kind="thread")
            await pool.start()
            try:
                handles = await q.enqueue_many(fail_loudly, [(10,), (TOO_LARGE,), (20,), (TOO_LARGE,), (30,)])
                outcomes = await asyncio.wait_for(
                    asyncio.gather(*(h.result(timeout=30) for h in handles), return_exceptions=True), 60
                )
            finally:
                await pool.stop()
            assert [o if isinstance(o, int) else type(o) for o in outcomes] == [
                10,
                omniq.TaskFailed,
                20,
                omniq.TaskFailed,
                30,
            ]
            for failure in (o for o in outcomes if isinstance(o, omniq.TaskFailed)):
                assert failure.error.type == "ValueError"
                assert "characters cut" in failure.error.message and len(failure.error.message) < 70_000


async def test_a_nats_settle_that_one_outcome_fails_still_records_what_the_others_did() -> None:
    with nats_prefix() as prefix:
        async with omniq.AsyncOmniQ(db_url=f"{NATS_URL}?prefix={prefix}") as q:
            periodic = await q.enqueue_call(add, args=(1, 2), interval=3600, delay=0)
            other = await q.enqueue(add, 3, 4)
            claimed = {t.id: t for t in await q.storage.claim(queues=["default"], limit=2, lease=60, worker="here")}
            done = succeeded(claimed[periodic.id], q.serializer.dumps(3))
            huge = TaskError(type="ValueError", message="x" * TOO_LARGE)
            refused = TaskResult(
                task_id=other.id, lease_token=claimed[other.id].lease_token or "", status=TaskStatus.FAILED, error=huge
            )
            following = successor(claimed[periodic.id], now=datetime.now(timezone.utc))
            assert following is not None
            with pytest.raises(omniq.RecordTooLarge):
                await q.storage.settle([done, refused], successors={periodic.id: following})

            assert (await q.get(periodic.id)).task.status == TaskStatus.SUCCEEDED  # it landed: no transaction
            assert await q.storage.get(following.id) is not None  # and so did its next run
            kinds = [e.kind for e in await q.storage.events(task_id=periodic.id)]
            assert kinds[-1] == EventKind.SUCCEEDED
