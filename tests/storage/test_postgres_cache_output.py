"""What only the PostgreSQL store does for the result cache and task output.

The cache lookup and ``forget_cached`` go through the partial index ``tasks_cache``; output
trims exactly as the memory store does, any string comes back as it went in, and writers on
many connections at once never draw the same ``seq``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

import psycopg
import pytest
from postgres_server import POSTGRES_URL, postgres_schema

from omniq_nb.models import Task, TaskResult, TaskStatus
from omniq_nb.storage import open_storage
from omniq_nb.storage.memory import MemoryStorage
from omniq_nb.storage.postgres import PostgresStorage
from omniq_nb.storage.postgres_results import _CACHED
from omniq_nb.storage.postgres_url import qualify

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

MakeTask = Callable[..., Task]
BIG = 1 << 20


@pytest.fixture
async def store() -> AsyncIterator[PostgresStorage]:
    with postgres_schema() as schema:
        async with open_storage(f"{POSTGRES_URL}?schema={schema}") as opened:
            assert isinstance(opened, PostgresStorage)
            yield opened


def succeeded(task: Task) -> TaskResult:
    return TaskResult(task_id=task.id, lease_token=task.lease_token or "", status=TaskStatus.SUCCEEDED, result=b"r")


def plan(store: PostgresStorage, query: str, params: tuple[object, ...]) -> str:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        rows = conn.execute(("EXPLAIN " + qualify(query, store.schema)).encode(), params).fetchall()
    return "\n".join(row[0] for row in rows)


async def test_the_cache_lookup_and_forget_use_the_partial_index(store: PostgresStorage, make_task: MakeTask) -> None:
    await store.insert_many(make_task(), [(f"{n:032x}", b"x") for n in range(3000)])
    await store.insert([make_task(cache_key=f"k{n}") for n in range(3)])
    claimed = await store.claim(queues=["default"], limit=3003, lease=30, worker="w")
    await store.settle([succeeded(task) for task in claimed])  # a store of mostly successes, a few cached
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'ANALYZE "{store.schema}".tasks'.encode())

    assert "tasks_cache" in plan(store, _CACHED, (["k1"],))
    forget = "UPDATE tasks SET cache_key = NULL WHERE cache_key IS NOT NULL AND name = %s::text"
    assert "tasks_cache" in plan(store, forget, ("tests.job",))
    assert await store.forget_cached(name="tests.job") == 3


async def test_trimming_is_the_memory_stores_rule(store: PostgresStorage, make_task: MakeTask) -> None:
    rng = random.Random(20261203)
    async with MemoryStorage() as memory:
        tasks = [make_task() for _ in range(3)]
        for backend in (store, memory):
            await backend.insert(tasks)
        for _ in range(120):
            task = rng.choice(tasks)
            chunks = [
                (rng.choice(["stdout", "stderr", "display"]), rng.choice(["", "a", "é\n", "x" * 50, "l\n" * 7, "🙂"]))
                for _ in range(rng.randint(1, 4))
            ]
            limits = {"limit_bytes": rng.randint(0, 200), "limit_lines": rng.randint(0, 20)}
            for backend in (store, memory):
                await backend.append_output(task.id, chunks, **limits)
            assert await store.output(task.id) == await memory.output(task.id)


async def test_any_string_comes_back_as_it_went_in(store: PostgresStorage, make_task: MakeTask) -> None:
    task = make_task()
    await store.insert([task])
    odd = ["nul \x00 inside\n", "lone \udc80 surrogate", "emoji 🙂 four bytes"]
    await store.append_output(task.id, [("stdout", text) for text in odd], limit_bytes=BIG, limit_lines=BIG)
    assert [c.text for c in (await store.output(task.id)).chunks] == odd

    await store.append_output(task.id, [("stdout", "🙂")], limit_bytes=4, limit_lines=BIG)  # UTF-8 bytes count
    page = await store.output(task.id)
    assert [c.text for c in page.chunks] == ["🙂"] and page.dropped


async def test_writers_on_many_connections_never_share_a_seq(store: PostgresStorage, make_task: MakeTask) -> None:
    task = make_task()
    await store.insert([task])
    writers = [store.clone() for _ in range(6)]
    for writer in writers:
        await writer.open()
    try:

        async def write(number: int, writer: PostgresStorage) -> None:
            for n in range(15):
                chunks = [("stdout", f"{number}.{n}.{part}\n") for part in range(number % 3 + 1)]
                await writer.append_output(task.id, chunks, limit_bytes=BIG, limit_lines=BIG)

        await asyncio.gather(*(write(number, writer) for number, writer in enumerate(writers)))
    finally:
        for writer in writers:
            await writer.close()

    page = await store.output(task.id, limit=10_000)
    sizes = {number: number % 3 + 1 for number in range(6)}
    expected = sorted(
        f"{number}.{n}.{part}\n" for number, size in sizes.items() for n in range(15) for part in range(size)
    )
    assert [c.seq for c in page.chunks] == list(range(1, len(expected) + 1))
    assert sorted(c.text for c in page.chunks) == expected
    for number in range(6):  # each append's chunks got consecutive seqs, in its order
        for n in range(15):
            seqs = [c.seq for c in page.chunks if c.text.startswith(f"{number}.{n}.")]
            assert seqs == list(range(seqs[0], seqs[0] + sizes[number]))
