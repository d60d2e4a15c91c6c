"""Arguments and results larger than a NATS message: kept in the prefix's object store, whole, gone with their task."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import nats
import nats.js.errors
import pytest
from nats_server import NATS_URL, nats_prefix

import omniq_nb as omniq
from omniq_nb.models import TaskResult, TaskStatus
from omniq_nb.storage import open_storage
from omniq_nb.storage.nats_codec import task_key
from omniq_nb.storage.nats_objects import LARGE

pytestmark = [pytest.mark.anyio, pytest.mark.nats]

BIG = 3_000_000  # bytes: three times the server's max_payload (1 MB by default)


def grown(data: bytes) -> bytes:
    return data + b"!" * BIG


async def object_names(prefix: str) -> set[str]:
    """Return the names of the objects the prefix's object store holds (none when it has no store)."""
    nc = await nats.connect(NATS_URL)
    try:
        store = await nc.jetstream().object_store(f"omniq_{prefix}")
        return {info.name for info in await store.list(ignore_deletes=True) if info.name}
    except nats.js.errors.NotFoundError:  # no store yet, or no object in it
        return set()
    finally:
        await nc.close()


async def entry_size(prefix: str, task_id: str) -> int:
    nc = await nats.connect(NATS_URL)
    try:
        entry = await (await nc.jetstream().key_value(f"omniq_{prefix}")).get(task_key(task_id))
        return len(entry.value or b"")
    finally:
        await nc.close()


async def test_a_large_argument_and_result_travel_whole_and_every_store_object_reads_them() -> None:
    data = bytes(range(256)) * (BIG // 256)
    with nats_prefix() as prefix:
        url = f"{NATS_URL}?prefix={prefix}"
        async with omniq.AsyncOmniQ(db_url=url) as q, omniq.AsyncWorkerPool(q, concurrency=2, kind="thread"):
            h = await q.enqueue(grown, data)
            assert await h.result(timeout=60) == grown(data)
        assert await entry_size(prefix, h.id) < LARGE  # the entry keeps references, the objects the bytes
        assert len(await object_names(prefix)) == 2  # the argument and the result
        async with omniq.AsyncOmniQ(db_url=url) as elsewhere:  # another process, as `omniq-nb` would be
            assert await (await elsewhere.get(h.id)).result(timeout=5) == grown(data)
            [listed] = await elsewhere.storage.list()
            assert q.serializer.load_call(listed.payload)[1] == (data,)


async def test_a_large_batch_lands_whole_or_not_at_all_and_leaves_no_object_behind() -> None:
    with nats_prefix() as prefix:
        async with omniq.AsyncOmniQ(db_url=f"{NATS_URL}?prefix={prefix}") as q:
            [first] = await q.enqueue_many(grown, [(b"a" * BIG,)])
            before = await object_names(prefix)
            template = await q.storage.get(first.id)
            assert template is not None and len(template.payload) > BIG
            with pytest.raises(ValueError, match="already exists"):
                await q.storage.insert_many(template, [("new-1", template.payload), (first.id, template.payload)])
            assert await object_names(prefix) == before  # the objects of the refused batch went with it
            assert [t.id for t in await q.storage.list()] == [first.id]


async def test_an_outcome_refused_by_its_fence_deletes_its_own_object_and_no_other(make_task: object) -> None:
    with nats_prefix() as prefix:
        async with open_storage(f"{NATS_URL}?prefix={prefix}") as store:
            task = make_task()  # type: ignore[operator]
            await store.insert([task])
            [claimed] = await store.claim(queues=["default"], limit=1, lease=60, worker="w")
            late = TaskResult(task_id=task.id, lease_token="stale", status=TaskStatus.SUCCEEDED, result=b"x" * BIG)
            assert await store.settle([late]) == []
            assert await object_names(prefix) == set()
            won = TaskResult(
                task_id=task.id, lease_token=claimed.lease_token or "", status=TaskStatus.SUCCEEDED, result=b"y" * BIG
            )
            [accepted] = await store.settle([won])
            assert accepted.result == b"y" * BIG  # the caller gets the bytes, not the reference
            assert len(await object_names(prefix)) == 1
            assert (await store.get(task.id)).result == b"y" * BIG  # type: ignore[union-attr]


async def test_purging_a_task_deletes_its_objects() -> None:
    with nats_prefix() as prefix:
        async with omniq.AsyncOmniQ(db_url=f"{NATS_URL}?prefix={prefix}") as q, omniq.AsyncWorkerPool(q):
            kept, purged = await asyncio.gather(q.enqueue(grown, b"k" * BIG), q.enqueue(grown, b"p" * BIG))
            await asyncio.gather(kept.result(timeout=60), purged.result(timeout=60))
            assert len(await object_names(prefix)) == 4
            later = datetime.now(timezone.utc) + timedelta(days=1)
            await q.storage.cancel(kept.id)  # finished already: stays as it is
            assert await q.storage.purge(finished_before=later, statuses=[TaskStatus.SUCCEEDED]) == 2
            assert await object_names(prefix) == set()


async def test_purging_everything_empties_the_object_store() -> None:
    with nats_prefix() as prefix:
        async with omniq.AsyncOmniQ(db_url=f"{NATS_URL}?prefix={prefix}") as q:
            await q.enqueue(grown, b"w" * BIG)
            assert len(await object_names(prefix)) == 1
            await q.storage.purge(everything=True)
            assert await object_names(prefix) == set()


async def test_a_task_whose_argument_is_unreadable_goes_back_to_the_queue_and_the_claim_hands_out_the_rest() -> None:
    with nats_prefix() as prefix:
        async with omniq.AsyncOmniQ(db_url=f"{NATS_URL}?prefix={prefix}") as q:
            broken = await q.enqueue(grown, b"b" * BIG)
            fine = await q.enqueue(grown, b"f")
            [name] = await object_names(prefix)
            nc = await nats.connect(NATS_URL)
            try:
                await (await nc.jetstream().object_store(f"omniq_{prefix}")).delete(name)
            finally:
                await nc.close()
            claimed = await q.storage.claim(queues=["default"], limit=2, lease=60, worker="w")
            assert [t.id for t in claimed] == [fine.id]
            counts = await q.storage.count(task_ids=[broken.id])
            assert (counts[TaskStatus.PENDING], counts[TaskStatus.RUNNING]) == (1, 0)  # handed back
            with pytest.raises(omniq.StorageError, match="has no object"):
                await q.storage.get(broken.id)  # says why, rather than hand out a task without its arguments
