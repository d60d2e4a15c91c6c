"""What only the Redis store does: URL options, prefixes, the server's clock, the stream cap, pub/sub, CONFIG."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_server import REDIS_URL, keys_of, new_prefix, redis_prefix

from omniq_nb.errors import StorageError
from omniq_nb.models import Task, TaskResult, TaskStatus
from omniq_nb.storage import open_storage
from omniq_nb.storage.redis import RedisStorage
from omniq_nb.storage.redis_base import STORE_VERSION, split_options
from omniq_nb.storage.redis_maintenance import persistence_warnings

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

MakeTask = Callable[..., Task]
Eventually = Callable[..., Awaitable[Any]]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def prefix() -> Iterator[str]:
    with redis_prefix() as name:
        yield name


def url_of(prefix: str, **options: object) -> str:
    extra = "".join(f"&{key}={value}" for key, value in options.items())
    return f"{REDIS_URL}?prefix={prefix}{extra}"


def server() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=10)


def connections_of(name: str) -> list[dict[str, Any]]:
    """Return the server's ``CLIENT LIST`` entries of the connections named ``name``."""
    with server() as client:
        return [c for c in client.client_list() if c.get("name") == name]


def test_split_options_strips_prefix_and_cap_and_defaults_to_omniq() -> None:
    assert split_options("redis://h:6379/2?prefix=jobs&events_max=50") == ("redis://h:6379/2", "jobs", 50)
    assert split_options("rediss://:pw@h/0") == ("rediss://:pw@h/0", "omniq", 100_000)
    assert split_options("unix:///tmp/r.sock?db=3&prefix=a.b") == ("unix:///tmp/r.sock?db=3", "a.b", 100_000)


@pytest.mark.parametrize("bad", ["a b", "a:b", "x" * 65, "", "a*"])
def test_a_prefix_with_other_characters_is_refused(bad: str) -> None:
    with pytest.raises(StorageError, match="invalid prefix"):
        open_storage(f"{REDIS_URL}?prefix={bad}")


@pytest.mark.anyio
async def test_a_mistyped_url_option_is_named_in_a_storage_error(prefix: str) -> None:
    """redis-py takes unknown query options as connection arguments: it raised a bare TypeError."""
    store = open_storage(f"{url_of(prefix)}&prefx=other")
    with pytest.raises(
        StorageError, match=r"has an option neither omniq_nb \(prefix, events_max\) nor redis-py takes.*prefx"
    ):
        await store.open()
    assert keys_of(prefix) == []


def test_every_scheme_opens_a_redis_store_and_the_password_is_redacted() -> None:
    for url in ("redis://:hunter2@h:6379/0", "rediss://u:hunter2@h/1", "unix://:hunter2@/tmp/r.sock?db=0"):
        store = open_storage(url)
        assert isinstance(store, RedisStorage)
        assert "hunter2" not in store.url and "***" in store.url
        assert (store.supports_notify, store.multi_host) == (True, True)


async def test_errors_never_show_the_password() -> None:
    store = open_storage("redis://:hunter2@127.0.0.1:1/0?prefix=nowhere")
    with pytest.raises(StorageError) as caught:
        await store.open()
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)
    await store.close()


async def test_every_key_lives_under_the_prefix_and_prefixes_do_not_mix(prefix: str, make_task: MakeTask) -> None:
    other = new_prefix()
    try:
        async with open_storage(url_of(prefix)) as store, open_storage(url_of(other)) as elsewhere:
            task = make_task()
            await store.insert([task])
            assert await elsewhere.get(task.id) is None
            assert await elsewhere.claim(queues=["default"], limit=10, lease=30, worker="w") == []
            assert [t.id for t in await store.claim(queues=["default"], limit=10, lease=30, worker="w")] == [task.id]
        assert keys_of(prefix) and all(key.startswith(f"{prefix}:") for key in keys_of(prefix))
        assert f"{prefix}:t:{task.id}" in keys_of(prefix)
    finally:
        from redis_server import drop_prefix

        drop_prefix(other)


async def test_a_delayed_task_becomes_ready_by_the_servers_clock(
    prefix: str, make_task: MakeTask, eventually: Eventually
) -> None:
    async with open_storage(url_of(prefix)) as store:
        from datetime import timedelta

        eta = await store.now() + timedelta(seconds=0.4)
        task = make_task(eta=eta)
        await store.insert([task])
        with server() as client:
            assert client.zscore(f"{prefix}:delayed", task.id) == pytest.approx(eta.timestamp())
            assert client.zcard(f"{prefix}:q:default") == 0
        assert await store.claim(queues=["default"], limit=1, lease=30, worker="w") == []

        async def claimed() -> list[Task]:
            return await store.claim(queues=["default"], limit=1, lease=30, worker="w")

        [running] = await eventually(claimed, what="the delayed task to be claimable")
        assert running.id == task.id
        assert running.started_at is not None and running.started_at >= eta
        with server() as client:
            assert client.zcard(f"{prefix}:delayed") == 0


async def test_the_event_stream_is_capped_and_seqs_keep_increasing(prefix: str, make_task: MakeTask) -> None:
    async with open_storage(url_of(prefix, events_max=100)) as store:
        for _ in range(10):
            await store.insert([make_task() for _ in range(100)])
        with server() as client:
            length = client.xlen(f"{prefix}:ev")
        assert 100 <= length < 1000  # MAXLEN ~ trims whole nodes: about the cap, never everything kept
        events = await store.events(limit=5000)
        seqs = [e.seq for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert seqs[-1] == 1000 == await store.last_event_seq()
        assert await store.events(since=seqs[-2]) == events[-1:]


async def test_a_hint_wakes_a_waiter_on_another_store_object(prefix: str, make_task: MakeTask) -> None:
    async with open_storage(url_of(prefix)) as waiter, open_storage(url_of(prefix)) as writer:
        await waiter.wait_for_tasks(0.01)  # subscribes
        started = time.monotonic()
        await asyncio.gather(waiter.wait_for_tasks(30), _after(0.2, writer.insert([make_task()])))
        assert time.monotonic() - started < 5
        await writer.insert_many(make_task(), [("a" * 32, b"x")])  # a hint sent between waits is kept
        started = time.monotonic()
        await waiter.wait_for_tasks(30)
        assert time.monotonic() - started < 5


async def test_a_waiter_without_hints_sleeps_its_timeout(prefix: str) -> None:
    async with open_storage(url_of(prefix)) as waiter:
        started = time.monotonic()
        await waiter.wait_for_tasks(0.3)
        assert 0.25 < time.monotonic() - started < 5


async def test_a_waiter_subscribes_again_after_its_connection_is_killed(prefix: str, make_task: MakeTask) -> None:
    async with open_storage(url_of(prefix)) as waiter, open_storage(url_of(prefix)) as writer:
        assert isinstance(waiter, RedisStorage)
        await waiter.wait_for_tasks(0.01)
        [subscriber] = [c for c in connections_of(waiter.client_name) if int(c.get("sub", 0)) > 0]
        with server() as client:
            client.client_kill_filter(_id=subscriber["id"])  # this test's own connection only
        await waiter.wait_for_tasks(1.0)  # notices the loss (or reconnects)
        started = time.monotonic()
        await asyncio.gather(waiter.wait_for_tasks(30), _after(0.3, writer.insert([make_task()])))
        assert time.monotonic() - started < 5
        again = [c for c in connections_of(waiter.client_name) if int(c.get("sub", 0)) > 0]
        assert len(again) == 1 and again[0]["id"] != subscriber["id"]


async def test_connections_the_server_dropped_are_replaced(prefix: str, make_task: MakeTask) -> None:
    async with open_storage(url_of(prefix)) as store:
        assert isinstance(store, RedisStorage)
        await asyncio.gather(*(store.get("0" * 32) for _ in range(4)))  # a few pooled connections
        with server() as client:
            for conn in connections_of(store.client_name):
                client.client_kill_filter(_id=conn["id"])
        task = make_task()
        await store.insert([task])
        assert await store.get(task.id) is not None


async def test_cancelled_commands_never_mix_up_replies(prefix: str, make_task: MakeTask) -> None:
    """redis-py once returned a cancelled command's reply to the next command: every reply here is its own."""
    async with open_storage(url_of(prefix)) as store:
        tasks = [make_task(payload=str(n).encode()) for n in range(200)]
        await store.insert(tasks)
        for n in range(50):
            with contextlib.suppress(TimeoutError):  # cancelled at some point of its round trip, or done
                await asyncio.wait_for(store.claim(queues=["default"], limit=3, lease=30, worker="w"), 1e-6 * n)
            probe = tasks[n]
            stored = await store.get(probe.id)
            assert stored is not None and stored.id == probe.id and stored.payload == probe.payload
        counts = await store.count()
        running = await store.list(statuses=[TaskStatus.RUNNING], limit=1000)
        assert counts[TaskStatus.RUNNING] == len(running)
        assert counts[TaskStatus.PENDING] + counts[TaskStatus.RUNNING] == 200
        assert all(t.attempt == 1 and t.lease_token for t in running)


async def test_check_warns_when_the_server_keeps_nothing_on_disk(prefix: str) -> None:
    async with open_storage(url_of(prefix)) as store:
        health = await store.check(stale_after=60)
    with server() as client:
        settings = {**client.config_get("appendonly"), **client.config_get("appendfsync"), **client.config_get("save")}
    assert health.ok and health.problems == ()
    assert list(health.warnings) == persistence_warnings(settings)
    if settings["appendonly"] == "no" and not settings["save"]:
        [warning] = health.warnings
        assert "keeps nothing on disk" in warning and "appendonly yes" in warning


def test_persistence_warnings_name_what_a_restart_loses() -> None:
    assert persistence_warnings({"appendonly": "yes", "appendfsync": "everysec", "save": ""}) == []
    [snapshots] = persistence_warnings({"appendonly": "no", "save": "3600 1 300 100"})
    assert "since the last one" in snapshots
    [os_sync] = persistence_warnings({"appendonly": "yes", "appendfsync": "no", "save": ""})
    assert "appendfsync everysec" in os_sync


async def test_checking_a_missing_prefix_creates_nothing() -> None:
    missing = new_prefix()
    with pytest.raises(StorageError, match="no omniq store"):
        await open_storage(url_of(missing)).check(stale_after=60)
    assert keys_of(missing) == []


async def test_an_unopened_store_is_checked_through_a_client_of_its_own(prefix: str, make_task: MakeTask) -> None:
    async with open_storage(url_of(prefix)) as store:
        await store.insert([make_task()])
    health = await open_storage(url_of(prefix)).check(stale_after=60)
    assert health.ok and sum(health.counts.values()) == 1


async def test_one_runner_leads_maintenance_until_its_term_runs_out(prefix: str, eventually: Eventually) -> None:
    async with open_storage(url_of(prefix)) as one, open_storage(url_of(prefix)) as two:
        assert isinstance(one, RedisStorage) and isinstance(two, RedisStorage)
        assert await one.lead_maintenance("a", term=0.5)
        assert not await two.lead_maintenance("b", term=0.5)
        assert await one.lead_maintenance("a", term=0.5)  # the holder renews
        assert not await two.lead_maintenance("b", term=0.5)

        async def b_leads() -> bool:
            return await two.lead_maintenance("b", term=30)

        await eventually(b_leads, what="runner b to take the turn once a's term ran out")
        assert not await one.lead_maintenance("a", term=0.5)


async def test_an_older_layout_is_marked_as_this_one_so_that_older_code_refuses_it(
    prefix: str, make_task: MakeTask
) -> None:
    task = make_task()
    async with open_storage(url_of(prefix)) as store:
        await store.insert([task])
    with server() as client:
        client.hset(f"{prefix}:meta", "version", 1)  # as a store made before batches kept their functions
    async with open_storage(url_of(prefix)) as store:
        assert await store.get(task.id) == task
    with server() as client:
        assert client.hget(f"{prefix}:meta", "version") == str(STORE_VERSION).encode()
    assert STORE_VERSION == 2


async def test_a_newer_layout_is_refused(prefix: str) -> None:
    async with open_storage(url_of(prefix)):
        pass
    with server() as client:
        client.hset(f"{prefix}:meta", "version", 99)
    with pytest.raises(StorageError, match="layout version 99"):
        async with open_storage(url_of(prefix)):
            pass


async def test_a_rescue_on_the_servers_clock_then_the_late_worker_is_fenced(
    prefix: str, make_task: MakeTask, eventually: Eventually
) -> None:
    async with open_storage(url_of(prefix)) as store:
        await store.insert([make_task()])
        [lost] = await store.claim(queues=["default"], limit=1, lease=0.2, worker="slow")
        token = lost.lease_token or ""

        async def lapsed() -> list[Task]:
            return await store.expired_leases(limit=10)

        await eventually(lapsed, what="the lease to run out on the server's clock")
        back = TaskResult(task_id=lost.id, lease_token=token, status=TaskStatus.PENDING, rescue=True)
        assert [t.id for t in await store.settle([back])] == [lost.id]
        late = TaskResult(task_id=lost.id, lease_token=token, status=TaskStatus.SUCCEEDED, result=b"late")
        assert await store.settle([late]) == []
        stored = await store.get(lost.id)
        assert stored is not None and (stored.status, stored.result) == (TaskStatus.PENDING, None)


async def _after(seconds: float, action: Awaitable[object]) -> None:
    await asyncio.sleep(seconds)
    await action
