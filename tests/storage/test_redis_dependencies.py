"""What only the Redis store does for dependencies: the keys a waiting task is (not) in, the index sets, hints."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from redis_server import REDIS_URL, keys_of, redis_prefix

from omniq_nb.errors import InvalidTransition
from omniq_nb.models import DependencyMove, Task, TaskResult, TaskStatus
from omniq_nb.storage import open_storage
from omniq_nb.storage.redis import RedisStorage

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

MakeTask = Callable[..., Task]


@pytest.fixture
def prefix() -> Iterator[str]:
    with redis_prefix() as name:
        yield name


def server() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=10)


def ready(task: Task) -> DependencyMove:
    return DependencyMove(task_id=task.id, source=TaskStatus.WAITING, target=TaskStatus.PENDING)


async def test_a_waiting_task_is_in_no_claim_index_until_it_moves_to_pending(prefix: str, make_task: MakeTask) -> None:
    async with open_storage(f"{REDIS_URL}?prefix={prefix}") as store:
        first = make_task()
        now = make_task(status=TaskStatus.WAITING, depends_on=(first.id,), expires_at=first.eta + timedelta(hours=1))
        later = make_task(status=TaskStatus.WAITING, depends_on=(first.id,), eta=first.eta + timedelta(hours=1))
        await store.insert([first, now, later])
        with server() as client:
            assert client.smembers(f"{prefix}:dependents:{first.id}") == {now.id.encode(), later.id.encode()}
            assert client.zcard(f"{prefix}:q:default") == 1  # `first` only
            assert client.zcard(f"{prefix}:delayed") == client.zcard(f"{prefix}:expiry") == 0
            assert client.zcard(f"{prefix}:s:waiting") == 2

        moved = await store.move_dependents([ready(now), ready(later)])
        assert [t.id for t in moved] == [now.id, later.id]
        with server() as client:
            assert client.zcard(f"{prefix}:q:default") == 2  # as an insert places them: ready now, or delayed
            assert client.zrange(f"{prefix}:delayed", 0, -1) == [later.id.encode()]
            assert client.zrange(f"{prefix}:expiry", 0, -1) == [now.id.encode()]
            assert client.zcard(f"{prefix}:s:waiting") == 0
        assert (await store.check(stale_after=60)).counts[TaskStatus.PENDING] == 3


async def test_a_task_moved_to_pending_wakes_an_idle_worker(prefix: str, make_task: MakeTask) -> None:
    url = f"{REDIS_URL}?prefix={prefix}"
    async with open_storage(url) as waiter, open_storage(url) as writer:
        first = make_task()
        second = make_task(status=TaskStatus.WAITING, depends_on=(first.id,))
        await writer.insert([first, second])
        await waiter.wait_for_tasks(0.01)  # subscribes, and takes the insert's hint
        await writer.move_dependents([ready(second)])
        started = time.monotonic()
        await waiter.wait_for_tasks(30)
        assert time.monotonic() - started < 5


async def test_purging_a_finished_dependent_drops_it_from_the_index(prefix: str, make_task: MakeTask) -> None:
    async with open_storage(f"{REDIS_URL}?prefix={prefix}") as store:
        first, other = make_task(), make_task()
        stopped = make_task(status=TaskStatus.WAITING, depends_on=(first.id, other.id), result_ttl=0)
        await store.insert([first, other, stopped])
        cancel = DependencyMove(task_id=stopped.id, source=TaskStatus.WAITING, target=TaskStatus.CANCELLED)
        await store.move_dependents([cancel])

        assert await store.purge() == 1  # past its result TTL
        assert await store.dependents([first.id, other.id]) == []
        assert not [key for key in keys_of(prefix) if ":dependents:" in key]


async def test_dependents_without_any_dependency_is_one_script_call(
    prefix: str, make_task: MakeTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_storage(f"{REDIS_URL}?prefix={prefix}") as store:
        assert isinstance(store, RedisStorage)
        tasks = [make_task() for _ in range(50)]
        await store.insert(tasks)
        calls: list[str] = []
        run = store._script

        async def counted(name: str, *args: Any) -> Any:
            calls.append(name)
            return await run(name, *args)

        monkeypatch.setattr(store, "_script", counted)
        assert await store.dependents([t.id for t in tasks]) == []
        assert await store.dependents([]) == []
        assert calls == ["DEPENDENTS"]


async def test_hashes_without_the_new_fields_read_as_no_dependencies(prefix: str, make_task: MakeTask) -> None:
    async with open_storage(f"{REDIS_URL}?prefix={prefix}") as store:
        task = make_task()
        await store.insert([task])  # a task without dependencies is stored as before they existed
        with server() as client:
            fields = client.hkeys(f"{prefix}:t:{task.id}")
        assert b"depends_on" not in fields and b"run_on" not in fields
        [claimed] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
        [done] = await store.settle(
            [TaskResult(task_id=task.id, lease_token=claimed.lease_token or "", status=TaskStatus.SUCCEEDED)]
        )
        assert (claimed.depends_on, claimed.run_on, done.depends_on, done.run_on) == ((), "success", (), "success")


async def test_a_move_from_pending_or_running_is_refused(prefix: str, make_task: MakeTask) -> None:
    async with open_storage(f"{REDIS_URL}?prefix={prefix}") as store:
        task = make_task()
        await store.insert([task])
        move = DependencyMove(task_id=task.id, source=TaskStatus.PENDING, target=TaskStatus.CANCELLED)
        with pytest.raises(InvalidTransition, match="not pending"):
            await store.move_dependents([move])
        assert (await store.get(task.id) or task).status is TaskStatus.PENDING
