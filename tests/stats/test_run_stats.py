"""``stats(fn)`` and the run history on a real SQLite file, with real worker pools (issue 19).

Every wait is bounded: results are awaited with a timeout.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import omniq_nb as omniq
from omniq_nb import AsyncOmniQ, AsyncWorkerPool, TaskFailed, TaskStats, TaskStatus
from omniq_nb.building import task_name
from omniq_nb.estimates import run_seconds
from omniq_nb.history import SAMPLE
from omniq_nb.task import use_queue

TIMEOUT = 30.0


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def other(x: int) -> int:
    return x


def broken() -> None:
    raise ValueError("no run of mine counts")


NAP = task_name(nap)  # the name enqueue gives it: test_run_stats.nap


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


async def run_all(q: AsyncOmniQ, fn: object, calls: list[tuple[object, ...]]) -> None:
    """Run ``fn(*args)`` for each of ``calls`` on ``q``'s store and wait for them all."""
    group = await q.enqueue_many(fn, calls)  # type: ignore[arg-type]
    await group.result(timeout=TIMEOUT, return_exceptions=True)


async def stored_durations(q: AsyncOmniQ, name: str) -> list[float]:
    """The durations of ``name``'s succeeded runs as the store has them, oldest first."""
    tasks = await q.list(status="succeeded", limit=1000)
    found = [(t.id, run_seconds(t)) for t in tasks if t.name == name]
    return [seconds for _, seconds in sorted(found) if seconds is not None]


@pytest.mark.anyio
async def test_stats_of_a_function_from_its_successful_runs(url: str) -> None:
    async with AsyncOmniQ(db_url=url) as q, AsyncWorkerPool(q, concurrency=2, kind="thread"):
        assert await q.stats(nap) == TaskStats(name=NAP, count=0)
        await run_all(q, nap, [(0.05,), (0.1,), (0.15,), (0.2,)])
        await run_all(q, other, [(1,), (2,)])
        with pytest.raises(TaskFailed):
            await (await q.enqueue(broken)).result(timeout=TIMEOUT)

        durations = await stored_durations(q, NAP)
        stats = await q.stats(nap)
        assert stats.count == 4
        assert stats.median == pytest.approx(statistics.median(durations))
        assert stats.mean == pytest.approx(statistics.fmean(durations))
        assert stats.last == pytest.approx(durations[-1])
        assert stats.median is not None and stats.p90 is not None
        assert 0.1 <= stats.median < stats.p90 < 2.0
        # the same runs whether asked by callable, by @omniq.task function or by name
        assert await q.stats(omniq.task(nap)) == stats
        assert await q.stats(NAP) == stats
        assert (await q.stats(other)).count == 2
        assert (await q.stats(broken)) == TaskStats(
            name=task_name(broken), count=0
        )  # failures are no runs to learn from
        renamed = omniq.task(name="napping")(nap)
        assert (await q.stats(renamed)) == TaskStats(name="napping", count=0)


@pytest.mark.anyio
async def test_runs_written_by_one_queue_are_read_by_another(url: str) -> None:
    async with (
        AsyncOmniQ(db_url=url) as writer,
        AsyncOmniQ(db_url=url) as reader,
        AsyncWorkerPool(writer, concurrency=2, kind="thread"),
    ):
        await run_all(writer, nap, [(0.05,)] * 3)
        assert reader.history.known(NAP) is None  # the reader never read the store yet
        assert (await reader.stats(nap)).count == 3
        known = reader.history.known(NAP)
        assert known is not None and known.count == 3 and not reader.history.stale()

        await run_all(writer, nap, [(0.05,)])
        assert (await reader.stats(nap)).count == 4  # stats() always reads the store
        assert await reader.stats(nap) == await writer.stats(nap)


@pytest.mark.anyio
async def test_runs_of_this_process_count_at_once_without_reading_the_store(url: str) -> None:
    async with AsyncOmniQ(db_url=url) as q, AsyncWorkerPool(q, concurrency=1, kind="thread"):
        await q.history.refresh()
        assert q.history.known(NAP) == TaskStats(name=NAP, count=0)
        h = await q.enqueue(nap, 0.05)
        assert await h.result(timeout=TIMEOUT) == 0.05
        known = q.history.known(NAP)  # the pool's outcome went through publish: no new reading needed
        assert known is not None and known.count == 1
        assert known.last == pytest.approx(run_seconds((await q.get(h.id)).task))
        assert not q.history.stale()


@pytest.mark.anyio
async def test_the_sample_keeps_the_latest_runs_only(url: str) -> None:
    async with AsyncOmniQ(db_url=url) as q, AsyncWorkerPool(q, concurrency=4, kind="thread"):
        await run_all(q, other, [(n,) for n in range(SAMPLE + 5)])
        durations = await stored_durations(q, task_name(other))
        assert len(durations) == SAMPLE + 5
        stats = await q.stats(other)
        assert stats.count == SAMPLE
        assert stats.median == pytest.approx(statistics.median(durations[-SAMPLE:]))
        assert stats.last == pytest.approx(durations[-1])


@pytest.mark.anyio
async def test_stats_refuses_what_names_no_task(url: str) -> None:
    async with AsyncOmniQ(db_url=url) as q:
        for wrong in (3, None, b"nap", ["nap"]):
            with pytest.raises(TypeError, match=r"an @omniq\.task function, a callable or a task name"):
                await q.stats(wrong)
        for empty in ("", "   "):
            with pytest.raises(ValueError, match="needs a task name"):
                await q.stats(empty)


@pytest.fixture
def default_queue(url: str) -> Iterator[omniq.OmniQ]:
    q = omniq.OmniQ(db_url=url, poll_interval=0.05)
    use_queue(q)
    try:
        yield q
    finally:
        use_queue(None)
        q.close()


def test_sync_and_module_level_stats(default_queue: omniq.OmniQ) -> None:
    napping = omniq.task(nap)
    with omniq.WorkerPool(default_queue, concurrency=2):
        assert napping.map([0.05, 0.05]).result(timeout=TIMEOUT) == [0.05, 0.05]
        assert default_queue.list(status=TaskStatus.SUCCEEDED)
    stats = default_queue.stats(napping)
    assert stats.count == 2
    assert omniq.stats(napping) == stats == omniq.stats(NAP) == omniq.stats(nap)
    with pytest.raises(TypeError):
        omniq.stats(42)
