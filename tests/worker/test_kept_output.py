"""What tasks print is kept with the task (issue 19): every executor kind, batched, bounded, flushed at stop.

Real pools on real stores (memory and a SQLite file); the stored output is read back with
``TaskOutputStore.output``. Waits are bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import worker_tasks as wt

from omniq_nb import AsyncOmniQ, AsyncWorkerPool
from omniq_nb.models import TaskOutput
from omniq_nb.worker.kept import OutputKeeper

pytestmark = pytest.mark.anyio

KINDS = ["async", "thread", "process"]
RESULT_WAIT = 60.0  # seconds: a loaded 2-core machine


@pytest.fixture(params=["memory", "sqlite"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    yield "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'kept.db'}"


async def kept(q: AsyncOmniQ, task_id: str) -> TaskOutput:
    chunks, after, dropped = [], 0, False
    while True:
        page = await q.storage.output(task_id, after=after, limit=100)
        dropped = dropped or page.dropped
        chunks += page.chunks
        if len(page.chunks) < 100:
            return TaskOutput(chunks=chunks, dropped=dropped)
        after = page.chunks[-1].seq


def text_of(output: TaskOutput, stream: str) -> str:
    return "".join(c.text for c in output.chunks if c.stream == stream)


def chatter_text(lines: int) -> tuple[str, str]:
    return "".join(f"line {i}\n" for i in range(lines)), "".join(f"err {i}\n" for i in range(0, lines, 10))


@pytest.mark.parametrize("kind", KINDS)
async def test_each_kind_keeps_stdout_and_stderr_by_the_time_the_task_finished(store_url: str, kind: str) -> None:
    async with (
        AsyncOmniQ(db_url=store_url, poll_interval=0.05) as q,
        AsyncWorkerPool(q, concurrency=2, kind=kind, lease=5),
    ):
        chatty = await q.enqueue(wt.chatter, 40)
        coroutine = await q.enqueue(wt.async_chatter, 5)
        assert await chatty.result(timeout=RESULT_WAIT) == 40
        assert await coroutine.result(timeout=RESULT_WAIT) == 5
        output = await kept(q, chatty.id)  # read at once: stored before the outcome
        from_coroutine = await kept(q, coroutine.id)
    out, err = chatter_text(40)
    assert text_of(output, "stdout") == out
    assert text_of(output, "stderr") == err
    assert not output.dropped
    assert [c.seq for c in output.chunks] == list(range(1, len(output.chunks) + 1))
    in_order = "".join(f"line {i}\n" + (f"err {i}\n" if i % 10 == 0 else "") for i in range(40))
    assert "".join(c.text for c in output.chunks) == in_order, "stdout and stderr must keep their order"
    assert text_of(from_coroutine, "stdout") == chatter_text(5)[0]


@pytest.mark.parametrize("kind", ["thread", "process"])
async def test_writes_are_stored_in_few_chunks(store_url: str, kind: str) -> None:
    async with (
        AsyncOmniQ(db_url=store_url, poll_interval=0.05, output_lines=100_000) as q,
        AsyncWorkerPool(q, concurrency=1, kind=kind, lease=5),
    ):
        h = await q.enqueue(wt.chatter, 3000)
        await h.result(timeout=RESULT_WAIT)
        output = await kept(q, h.id)
    assert text_of(output, "stdout") == chatter_text(3000)[0]
    assert len(output.chunks) < 700, f"{len(output.chunks)} chunks for 3,300 writes: not joined"


async def test_limits_keep_the_newest_output_and_say_the_head_was_dropped(store_url: str) -> None:
    async with AsyncOmniQ(db_url=store_url, poll_interval=0.05, output_limit="2KB", output_lines=1000) as q:
        async with AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5):
            big = await q.enqueue(wt.chatter, 3000)
            await big.result(timeout=RESULT_WAIT)
            by_size = await kept(q, big.id)
        q.settings = q.settings.with_overrides(output_limit="1MB", output_lines=20)
        async with AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5):
            many = await q.enqueue(wt.chatter, 3000)
            await many.result(timeout=RESULT_WAIT)
            by_lines = await kept(q, many.id)
    assert by_size.dropped
    stdout = text_of(by_size, "stdout")
    assert stdout.endswith("line 2999\n")
    assert "line 0\n" not in stdout
    assert sum(len(c.text.encode()) for c in by_size.chunks[1:]) <= 2048  # the newest chunk always stays
    assert by_lines.dropped
    assert sum(c.text.count("\n") for c in by_lines.chunks[1:]) <= 20
    assert text_of(by_lines, "stdout").endswith("line 2999\n")


async def test_output_limit_zero_keeps_nothing(tmp_path: Path) -> None:
    async with AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'none.db'}", poll_interval=0.05, output_limit=0) as q:
        async with AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5):
            h = await q.enqueue(wt.chatter, 10)
            await h.result(timeout=RESULT_WAIT)
        assert (await q.storage.output(h.id)).chunks == []


@pytest.mark.parametrize("kind", ["thread", "process"])
async def test_a_stopping_pool_stores_the_output_of_interrupted_runs(store_url: str, kind: str, tmp_path: Path) -> None:
    gate = tmp_path / "never"
    async with AsyncOmniQ(db_url=store_url, poll_interval=0.05) as q:
        pool = AsyncWorkerPool(q, concurrency=1, kind=kind, lease=5)
        await pool.start()
        h = await q.enqueue(wt.chatter, 20, str(gate))
        printed = tmp_path / "never.printed"
        deadline = asyncio.get_running_loop().time() + RESULT_WAIT
        while not printed.exists():
            assert asyncio.get_running_loop().time() < deadline, "the task never printed"
            await asyncio.sleep(0.02)
        await pool.stop(timeout=0.5)  # the run is interrupted, its output stored
        assert text_of(await kept(q, h.id), "stdout") == chatter_text(20)[0]


async def test_the_keeper_joins_writes_per_stream_and_keeps_displays_as_json() -> None:
    async with AsyncOmniQ(db_url="memory://") as q:
        task = await q.enqueue(wt.add, 1, 2)
        keeper = OutputKeeper(q)
        running = asyncio.ensure_future(keeper.run())
        for text in ("a", "b\n"):
            keeper.keep(task.id, "stdout", text)
        keeper.keep(task.id, "display", ({"text/plain": "42", "text/html": "<b>42</b>"}, {"isolated": True}))
        keeper.keep(task.id, "stderr", "oops\n")
        keeper.keep(task.id, "stdout", "")  # nothing
        await keeper.settle(task.id)
        keeper.drain()
        await asyncio.wait_for(running, RESULT_WAIT)
        chunks = (await q.storage.output(task.id)).chunks
    assert [(c.stream, c.text) for c in chunks] == [
        ("stdout", "ab\n"),
        ("display", '{"data": {"text/plain": "42", "text/html": "<b>42</b>"}, "metadata": {"isolated": true}}'),
        ("stderr", "oops\n"),
    ]
