"""What only the NATS store does: URL options, prefixes, the revision fence, late acks, the mirror, wake-ups."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import nats
import pytest
from nats.js import api
from nats_server import NATS_URL, drop_prefix, nats_prefix, new_prefix, stream_names

from omniq_nb.errors import StorageError
from omniq_nb.models import Task, TaskResult, TaskStatus
from omniq_nb.storage import open_storage
from omniq_nb.storage.nats import NATSStorage
from omniq_nb.storage.nats_base import split_options
from omniq_nb.storage.nats_codec import encode_stored, task_key

pytestmark = [pytest.mark.anyio, pytest.mark.nats]

MakeTask = Callable[..., Task]
Eventually = Callable[..., Awaitable[Any]]


@pytest.fixture
def prefix() -> Iterator[str]:
    with nats_prefix() as name:
        yield name


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[NATSStorage]:
    async with NATSStorage(url_of(prefix)) as opened:
        yield opened


def url_of(prefix: str, **options: object) -> str:
    extra = "".join(f"&{key}={value}" for key, value in options.items())
    return f"{NATS_URL}?prefix={prefix}{extra}"


def test_split_options_strips_prefix_and_cap_and_defaults_to_omniq() -> None:
    assert split_options("nats://h:4222?prefix=jobs&events_max=50") == ("nats://h:4222", "jobs", 50)
    assert split_options("nats://u:pw@h") == ("nats://u:pw@h", "omniq", 1_000_000)


@pytest.mark.parametrize("bad", ["a b", "a.b", "a*", "x" * 65, "", "a>"])
def test_a_prefix_that_cannot_name_a_bucket_is_refused(bad: str) -> None:
    with pytest.raises(StorageError, match="invalid prefix"):
        open_storage(f"{NATS_URL}?prefix={bad}")


def test_the_url_opens_a_nats_store_and_the_password_is_redacted() -> None:
    store = open_storage("nats://me:hunter2@h:4222?prefix=p")
    assert isinstance(store, NATSStorage)
    assert "hunter2" not in store.url and "***" in store.url
    assert (store.supports_notify, store.multi_host) == (True, True)


async def test_errors_never_show_the_password() -> None:
    store = open_storage("nats://me:hunter2@127.0.0.1:1?prefix=nowhere")
    with pytest.raises(StorageError) as caught:
        await store.open()
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)
    assert "cannot be reached" in str(caught.value)
    await store.close()


async def test_a_prefix_owns_one_bucket_and_its_streams_and_prefixes_do_not_mix(
    store: NATSStorage, prefix: str, make_task: MakeTask
) -> None:
    other = new_prefix()
    try:
        async with open_storage(url_of(other)) as elsewhere:
            task = make_task()
            await store.insert([task])
            assert await elsewhere.get(task.id) is None
            assert await elsewhere.claim(queues=["default"], limit=10, lease=30, worker="w") == []
            await elsewhere.purge(everything=True)
            assert [t.id for t in await store.claim(queues=["default"], limit=10, lease=30, worker="w")] == [task.id]
        assert stream_names(prefix) == [f"KV_omniq_{prefix}", f"omniq_{prefix}_events", f"omniq_{prefix}_output"]
    finally:
        drop_prefix(other)


async def test_jetstream_accepts_a_late_ack_so_the_store_never_trusts_one(prefix: str) -> None:
    """A work-queue message redelivered after AckWait is removed by the first worker's late ack.

    This is why the store's fence is the key's revision and the lease token, never an ack.
    """
    nc = await nats.connect(NATS_URL, connect_timeout=10, allow_reconnect=False)
    js, stream, subject = nc.jetstream(), f"omniq_{prefix}_lateack", f"omniq.{prefix}.lateack"
    try:
        await js.add_stream(name=stream, subjects=[subject], retention=api.RetentionPolicy.WORK_QUEUE)
        await js.publish(subject, b"task")
        config = api.ConsumerConfig(ack_wait=0.5, max_deliver=5)
        puller = await js.pull_subscribe(subject, durable="workers", stream=stream, config=config)
        [first] = await puller.fetch(1, timeout=5)
        [again] = await puller.fetch(1, timeout=10)  # AckWait ran out: delivered to "another worker"
        assert again.metadata.num_delivered == 2
        await first.ack_sync()  # the first worker's late ack is accepted...
        info = await js.stream_info(stream)
        assert info.state.messages == 0  # ...and removes the message the second worker still runs
    finally:
        await js.delete_stream(stream)
        await nc.close()


async def test_the_first_workers_late_outcome_is_refused_once_its_task_was_claimed_again(
    store: NATSStorage, make_task: MakeTask, eventually: Eventually
) -> None:
    task = make_task(retries=2)
    await store.insert([task])
    [first] = await store.claim(queues=["default"], limit=1, lease=0.3, worker="paused")
    assert first.lease_token

    async def lapsed() -> list[Task]:
        return await store.expired_leases(limit=10)

    await eventually(lapsed, what="the first lease to run out")
    rescue = TaskResult(task_id=task.id, lease_token=first.lease_token, status=TaskStatus.PENDING, rescue=True)
    assert [t.status for t in await store.settle([rescue])] == [TaskStatus.PENDING]
    [second] = await store.claim(queues=["default"], limit=1, lease=30, worker="live")
    assert (second.attempt, second.worker) == (2, "live")

    late = TaskResult(task_id=task.id, lease_token=first.lease_token, status=TaskStatus.SUCCEEDED, result=b"late")
    assert await store.settle([late]) == []
    assert not await store.progress(task_id=task.id, lease_token=first.lease_token, done=1, total=1, message=None)
    assert await store.renew(leases={task.id: first.lease_token}, lease=30) == set()
    assert await store.release(leases={task.id: first.lease_token}) == []
    assert await store.get(task.id) == second

    assert second.lease_token
    done = TaskResult(task_id=task.id, lease_token=second.lease_token, status=TaskStatus.SUCCEEDED, result=b"ok")
    [finished] = await store.settle([done])
    assert (finished.status, finished.result, finished.attempt) == (TaskStatus.SUCCEEDED, b"ok", 2)


async def test_a_write_decided_on_an_old_revision_is_refused_even_with_the_right_token(
    store: NATSStorage, make_task: MakeTask
) -> None:
    task = make_task()
    await store.insert([task])
    [running] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
    revision, stored = store._tasks[task_key(task.id)]
    assert await store.renew(leases={task.id: running.lease_token or ""}, lease=60) == {task.id}
    stale = encode_stored(stored.order, running)
    assert await store._update(task_key(task.id), stale, revision) is None  # the revision moved: no write
    current = await store.get(task.id)
    assert current is not None and current.lease_until != running.lease_until


async def test_another_store_object_sees_every_acknowledged_write(prefix: str, make_task: MakeTask) -> None:
    async with NATSStorage(url_of(prefix)) as writer, NATSStorage(url_of(prefix)) as reader:
        for n in range(20):
            task = make_task(name=f"job{n}")
            await writer.insert([task])
            assert await reader.get(task.id) == task  # the reader's mirror caught up before answering
        assert (await reader.count())[TaskStatus.PENDING] == 20


async def test_a_read_of_many_ids_sees_every_acknowledged_write_of_another_store_object(
    prefix: str, make_task: MakeTask
) -> None:
    async with NATSStorage(url_of(prefix)) as writer, NATSStorage(url_of(prefix)) as reader:
        tasks = [make_task(name=f"job{n}") for n in range(40)]
        await writer.insert(tasks)
        assert await reader.get_many([t.id for t in tasks] + ["no-such-task"]) == tasks
        claimed = await writer.claim(queues=["default"], limit=40, lease=30.0, worker="w1")
        assert len(claimed) == 40
        await writer.settle(
            [TaskResult(task_id=t.id, lease_token=t.lease_token or "", status=TaskStatus.SUCCEEDED) for t in claimed]
        )
        statuses = {t.status for t in await reader.get_many([t.id for t in tasks])}
        assert statuses == {TaskStatus.SUCCEEDED}  # the reader's mirror caught up before answering


async def kv_consumers(prefix: str) -> int:
    nc = await nats.connect(NATS_URL, connect_timeout=10, allow_reconnect=False)
    try:
        return len(await nc.jetstream().consumers_info(f"KV_omniq_{prefix}"))
    finally:
        await nc.close()


async def test_a_store_object_follows_the_bucket_only_once_a_read_needs_it(prefix: str, make_task: MakeTask) -> None:
    async with NATSStorage(url_of(prefix)) as store:
        task = make_task()
        await store.insert([task])
        await store.renew(leases={task.id: "not-held"}, lease=30.0)
        assert await store.get(task.id) == task
        assert await kv_consumers(prefix) == 0  # writes and reads by id need no mirror
        assert (await store.count())[TaskStatus.PENDING] == 1
        assert await kv_consumers(prefix) == 1


async def test_a_change_wakes_a_waiter_on_another_store_object(prefix: str, make_task: MakeTask) -> None:
    async with NATSStorage(url_of(prefix)) as waiter, NATSStorage(url_of(prefix)) as writer:
        await waiter.wait_for_tasks(0.01)
        started = time.monotonic()

        async def insert_later() -> None:
            await asyncio.sleep(0.2)
            await writer.insert([make_task()])

        await asyncio.gather(waiter.wait_for_tasks(30), insert_later())
        assert time.monotonic() - started < 5


async def test_a_mirror_whose_consumer_vanished_is_rebuilt(prefix: str, make_task: MakeTask) -> None:
    async with NATSStorage(url_of(prefix)) as reader, NATSStorage(url_of(prefix)) as writer:
        await reader.count()
        nc = await nats.connect(NATS_URL, connect_timeout=10, allow_reconnect=False)
        try:
            js = nc.jetstream()
            for consumer in await js.consumers_info(f"KV_omniq_{prefix}"):
                await js.delete_consumer(f"KV_omniq_{prefix}", consumer.name)
        finally:
            await nc.close()
        task = make_task()
        await writer.insert([task])
        assert await reader.get(task.id) == task


async def test_the_event_stream_is_capped_and_seqs_keep_increasing(prefix: str, make_task: MakeTask) -> None:
    async with NATSStorage(url_of(prefix, events_max=100)) as store:
        for _ in range(3):
            await store.insert([make_task() for _ in range(100)])
        events = await store.events(limit=5000)
        seqs = [e.seq for e in events]
        assert seqs == list(range(201, 301))  # the oldest went; the seqs are the stream's
        assert await store.last_event_seq() == 300
        assert await store.events(since=seqs[-2]) == events[-1:]
