"""A split store's result cache and task output: both live with the tasks, in the queue's store.

The queue here is PostgreSQL, its results and events in one SQLite file. ``cached`` fills in
the result from the result store as ``get`` does, and a hit whose result is gone from there is
returned as ``get`` returns it: without a value, its error saying so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest
from postgres_server import POSTGRES_URL, postgres_schema
from store_spec import open_spec

from omniq_nb.models import Task, TaskResult, TaskStatus
from omniq_nb.storage.split import SplitStorage
from omniq_nb.storage.split_base import RESULT_MISSING, kept_token

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

MakeTask = Callable[..., Task]


@pytest.fixture
async def split(tmp_path: Path) -> AsyncIterator[SplitStorage]:
    with postgres_schema() as schema:
        side = f"sqlite:///{tmp_path / 'outcomes.db'}"
        store = open_spec(f"{POSTGRES_URL}?schema={schema} result_url={side} events_url={side}")
        assert isinstance(store, SplitStorage)
        async with store:
            yield store


async def run(split: SplitStorage, task: Task, result: bytes) -> None:
    await split.insert([task])
    [claimed] = await split.claim(queues=["default"], limit=1, lease=30, worker="w")
    outcome = TaskResult(
        task_id=task.id, lease_token=claimed.lease_token or "", status=TaskStatus.SUCCEEDED, result=result
    )
    assert await split.settle([outcome])


async def test_a_hit_comes_with_its_result_from_the_result_store(split: SplitStorage, make_task: MakeTask) -> None:
    task = make_task(name="nb.fit", cache_key="k")
    await run(split, task, b"value")

    row = (await split.queue.cached(["k"])).get("k")
    assert row is not None and kept_token(row.result) is not None  # the queue's row holds the mark
    hit = (await split.cached(["k"])).get("k")
    assert hit is not None and (hit.id, hit.result, hit.has_value) == (task.id, b"value", True)
    assert hit == await split.get(task.id)

    assert await split.forget_cached(name="nb.fit") == 1
    assert (await split.cached(["k"])).get("k") is None
    assert await split.get(task.id) == msgspec.structs.replace(hit, cache_key=None)  # the task and result stay


async def test_a_hit_whose_result_is_gone_is_returned_as_get_returns_it(
    split: SplitStorage, make_task: MakeTask
) -> None:
    task = make_task(cache_key="k")
    await run(split, task, b"value")
    assert split.results is not None
    await split.results.forget_outcomes(everything=True)

    hit = (await split.cached(["k"])).get("k")
    assert hit is not None and hit.status is TaskStatus.SUCCEEDED and not hit.has_value
    assert hit.result is None and hit.error is not None and hit.error.type == RESULT_MISSING
    assert hit == await split.get(task.id)


async def test_output_is_kept_in_the_queue_store_and_purged_with_the_task(
    split: SplitStorage, make_task: MakeTask
) -> None:
    task = make_task(result_ttl=0.0)
    await split.insert([task])
    await split.append_output(task.id, [("stdout", "a\n"), ("stderr", "b\n")], limit_bytes=100, limit_lines=100)

    page = await split.output(task.id, after=1)
    assert [(c.seq, c.stream, c.text) for c in page.chunks] == [(2, "stderr", "b\n")] and not page.dropped
    assert (await split.queue.output(task.id)).chunks == (await split.output(task.id)).chunks
    await split.cancel(task.id)
    assert await split.purge() == 1
    assert (await split.output(task.id)).chunks == []
