"""The Redis store's result-cache index and output keys: where they live and that purge leaves none behind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from redis_server import REDIS_URL, keys_of, redis_prefix

from omniq_nb.models import Task, TaskResult, TaskStatus
from omniq_nb.storage.redis import RedisStorage

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

MakeTask = Callable[..., Task]
BIG = 1 << 20


@pytest.fixture
def prefix() -> Iterator[str]:
    with redis_prefix() as name:
        yield name


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[RedisStorage]:
    async with RedisStorage(f"{REDIS_URL}?prefix={prefix}") as opened:
        yield opened


async def succeed(store: RedisStorage, *tasks: Task) -> None:
    await store.insert(tasks)
    claimed = await store.claim(queues=["default"], limit=len(tasks), lease=30, worker="w")
    outcomes = [
        TaskResult(task_id=t.id, lease_token=t.lease_token or "", status=TaskStatus.SUCCEEDED, result=b"r")
        for t in claimed
    ]
    assert len(await store.settle(outcomes)) == len(tasks)


async def baseline(store: RedisStorage, prefix: str, make_task: MakeTask, *, everything: bool) -> list[str]:
    """Return the keys a store keeps once its one plain task was purged (counters, layout version, event stream)."""
    await succeed(store, make_task(result_ttl=0.0))
    assert await store.purge(everything=everything) == 1
    return keys_of(prefix)


async def test_purge_by_ttl_leaves_no_cache_or_output_key(
    store: RedisStorage, prefix: str, make_task: MakeTask
) -> None:
    empty = await baseline(store, prefix, make_task, everything=False)
    task = make_task(cache_key="k/\x00é", result_ttl=0.0)
    await succeed(store, task)
    await store.append_output(task.id, [("stdout", "a\n"), ("stderr", "b\n")], limit_bytes=BIG, limit_lines=1)
    assert {f"{prefix}:o:{task.id}", f"{prefix}:os:{task.id}", f"{prefix}:om:{task.id}", f"{prefix}:cached"} <= set(
        keys_of(prefix)
    )

    assert await store.purge() == 1
    assert keys_of(prefix) == empty


async def test_purge_everything_and_forget_leave_no_index_key(
    store: RedisStorage, prefix: str, make_task: MakeTask
) -> None:
    empty = await baseline(store, prefix, make_task, everything=True)
    tasks = [make_task(name="nb.fit", cache_key=f"key-{n}") for n in range(5)]
    await succeed(store, *tasks)
    assert await store.forget_cached(name="nb.other") == 0
    assert await store.forget_cached(name="nb.fit") == 5
    assert not [key for key in keys_of(prefix) if key.startswith(f"{prefix}:cache")]

    again = make_task(cache_key="key-0")
    await succeed(store, again)
    await store.append_output(again.id, [("display", '{"data": {}}')], limit_bytes=BIG, limit_lines=BIG)
    await store.purge(everything=True)
    assert keys_of(prefix) == empty
