"""Contract: each task's output (``append_output``, ``output``), trimmed to its limits, purged with the task."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from omniq_nb.models import Task
from omniq_nb.storage import Storage

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]
BIG = 1 << 20


async def test_chunks_come_back_in_order_from_any_seq(
    store: Storage, make_task: MakeTask, twin_or_store: Storage
) -> None:
    task = make_task()
    await store.insert([task])
    await store.append_output(task.id, [("stdout", "a\n"), ("stderr", "oops\n")], limit_bytes=BIG, limit_lines=BIG)
    await store.append_output(
        task.id, [("display", '{"data": {"text/plain": "x"}, "metadata": {}}')], limit_bytes=BIG, limit_lines=BIG
    )

    page = await twin_or_store.output(task.id)
    assert [(c.seq, c.stream, c.text) for c in page.chunks] == [
        (1, "stdout", "a\n"),
        (2, "stderr", "oops\n"),
        (3, "display", '{"data": {"text/plain": "x"}, "metadata": {}}'),
    ]
    assert not page.dropped
    assert [c.seq for c in (await store.output(task.id, after=1)).chunks] == [2, 3]
    assert [c.seq for c in (await store.output(task.id, after=0, limit=2)).chunks] == [1, 2]
    assert (await store.output(task.id, after=3)).chunks == []


async def test_output_of_one_task_is_its_own(store: Storage, make_task: MakeTask) -> None:
    a, b = make_task(), make_task()
    await store.insert([a, b])
    await store.append_output(a.id, [("stdout", "from a\n")], limit_bytes=BIG, limit_lines=BIG)
    await store.append_output(b.id, [("stdout", "from b\n")], limit_bytes=BIG, limit_lines=BIG)

    assert [c.text for c in (await store.output(a.id)).chunks] == ["from a\n"]
    assert [(c.seq, c.text) for c in (await store.output(b.id)).chunks] == [(1, "from b\n")]
    assert (await store.output("n" * 32)).chunks == []


async def test_the_head_is_dropped_to_keep_the_limits(store: Storage, make_task: MakeTask) -> None:
    task = make_task()
    await store.insert([task])
    for n in range(10):
        await store.append_output(task.id, [("stdout", f"line {n}\n" * 10)], limit_bytes=BIG, limit_lines=35)

    page = await store.output(task.id)
    assert [c.seq for c in page.chunks] == [8, 9, 10]
    assert page.dropped
    await store.append_output(task.id, [("stdout", "x" * 500)], limit_bytes=100, limit_lines=BIG)
    page = await store.output(task.id)
    assert [(c.seq, c.text) for c in page.chunks] == [(11, "x" * 500)]  # the newest always stays
    assert page.dropped


async def test_seq_keeps_counting_across_writers(store: Storage, make_task: MakeTask, twin_or_store: Storage) -> None:
    task = make_task()
    await store.insert([task])
    await store.append_output(task.id, [("stdout", "1\n")], limit_bytes=BIG, limit_lines=BIG)
    await twin_or_store.append_output(task.id, [("stdout", "2\n"), ("stdout", "3\n")], limit_bytes=BIG, limit_lines=BIG)
    await store.append_output(task.id, [("stdout", "4\n")], limit_bytes=BIG, limit_lines=BIG)

    assert [(c.seq, c.text) for c in (await store.output(task.id)).chunks] == [
        (1, "1\n"),
        (2, "2\n"),
        (3, "3\n"),
        (4, "4\n"),
    ]


async def test_concurrent_writers_never_share_a_seq(
    store: Storage, make_task: MakeTask, twin_or_store: Storage
) -> None:
    task = make_task()
    await store.insert([task])
    writes = [
        writer.append_output(task.id, [("stdout", f"{n}\n")], limit_bytes=BIG, limit_lines=30)
        for n in range(40)
        for writer in (store, twin_or_store)
    ]
    await asyncio.gather(*writes)

    page = await store.output(task.id)
    assert [c.seq for c in page.chunks] == list(range(51, 81)) and page.dropped


async def test_output_goes_with_its_task(store: Storage, make_task: MakeTask) -> None:
    task, other = make_task(result_ttl=0.0), make_task()
    await store.insert([task, other])
    await store.cancel(task.id)
    await store.append_output(task.id, [("stdout", "bye\n")], limit_bytes=BIG, limit_lines=BIG)
    await store.append_output(other.id, [("stdout", "stay\n")], limit_bytes=BIG, limit_lines=BIG)
    await store.append_output("u" * 32, [("stdout", "nobody\n")], limit_bytes=BIG, limit_lines=BIG)

    assert await store.purge() == 1
    assert (await store.output(task.id)).chunks == []
    assert (await store.output("u" * 32)).chunks == []
    assert [c.text for c in (await store.output(other.id)).chunks] == ["stay\n"]


async def test_any_text_comes_back_as_written(store: Storage, make_task: MakeTask) -> None:
    task = make_task()
    await store.insert([task])
    odd = ["nul \x00 inside\n", "lone \ud800 surrogate\n", "emoji \U0001f600 and é\n"]
    await store.append_output(task.id, [("stdout", text) for text in odd], limit_bytes=BIG, limit_lines=BIG)

    assert [c.text for c in (await store.output(task.id)).chunks] == odd
