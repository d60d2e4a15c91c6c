"""The NATS store's output stream: one message per kept chunk, writers one at a time, nothing left after purge."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from nats_server import NATS_URL, nats_prefix

from omniq_nb.models import Task, TaskResult, TaskStatus
from omniq_nb.storage.nats import NATSStorage

pytestmark = [pytest.mark.anyio, pytest.mark.nats]

MakeTask = Callable[..., Task]
BIG = 1 << 20


@pytest.fixture
def prefix() -> Iterator[str]:
    with nats_prefix() as name:
        yield name


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[NATSStorage]:
    async with NATSStorage(f"{NATS_URL}?prefix={prefix}") as opened:
        yield opened


async def messages(store: NATSStorage) -> int:
    """Return how many messages the store's output stream holds."""
    return (await store._jet.stream_info(store.output_stream)).state.messages or 0


async def test_the_stream_holds_only_the_kept_chunks(store: NATSStorage, make_task: MakeTask) -> None:
    task = make_task()
    await store.insert([task])
    for n in range(12):
        chunks = [("stdout", f"{n}a\n"), ("stderr", f"{n}b\n")]
        await store.append_output(task.id, chunks, limit_bytes=BIG, limit_lines=5)
    page = await store.output(task.id)
    assert [c.seq for c in page.chunks] == [20, 21, 22, 23, 24] and page.dropped
    assert [c.text for c in page.chunks] == ["9b\n", "10a\n", "10b\n", "11a\n", "11b\n"]
    assert await messages(store) == 5

    await store.append_output(task.id, [("stdout", "x" * 50), ("stdout", "y" * 60)], limit_bytes=40, limit_lines=BIG)
    assert [(c.seq, c.text) for c in (await store.output(task.id)).chunks] == [(26, "y" * 60)]
    assert await messages(store) == 1


async def test_purge_takes_the_output_of_its_tasks(store: NATSStorage, make_task: MakeTask) -> None:
    task, other = make_task(result_ttl=0.0, cache_key="k"), make_task()
    await store.insert([task, other])
    [claimed] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
    assert claimed.id == task.id
    outcome = TaskResult(task_id=claimed.id, lease_token=claimed.lease_token or "", status=TaskStatus.SUCCEEDED)
    await store.settle([outcome])
    for each in (task, other):
        await store.append_output(each.id, [("stdout", "hi\n")], limit_bytes=BIG, limit_lines=BIG)
    assert "k" in await store.cached(["k"])

    assert await store.purge() == 1
    assert await messages(store) == 1 and "k" not in await store.cached(["k"])
    await store.purge(everything=True)
    assert await messages(store) == 0
