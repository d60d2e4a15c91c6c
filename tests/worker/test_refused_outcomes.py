"""An outcome the store refuses for good (an entry larger than NATS takes) fails its task, holding back no other.

Large arguments and results go to the NATS store's object store (``test_nats_objects``); an
error message is kept in the task's entry, so a huge one is what a NATS store still refuses.
"""

from __future__ import annotations

import asyncio

import pytest
from nats_server import NATS_URL, nats_prefix

import omniq_nb as omniq
from omniq_nb.models import TaskError, TaskStatus
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


async def test_a_pool_on_nats_fails_a_task_whose_outcome_is_too_large_and_goes_on() -> None:
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
            assert all("RecordTooLarge" in str(o) for o in outcomes if not isinstance(o, int))
