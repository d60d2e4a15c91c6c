"""Results and events on fsspec filesystems: what only they do (the lag before events show,
refusing to hold a queue, options reaching the filesystem). The ``OutcomeStore`` contract runs
on them in ``test_outcome_store.py``."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import omniq_nb as omniq
from omniq_nb.config import Settings
from omniq_nb.errors import StorageError
from omniq_nb.models import EventKind, TaskEvent, TaskResult, TaskStatus
from omniq_nb.storage import open_outcome_store, open_storage, open_stores
from omniq_nb.storage.split import SplitStorage
from omniq_nb.worker.pool import AsyncWorkerPool

pytestmark = pytest.mark.anyio


def enqueued(task_id: str) -> TaskEvent:
    return TaskEvent(
        seq=0, task_id=task_id, kind=EventKind.ENQUEUED, at=datetime.now(timezone.utc), status=TaskStatus.PENDING
    )


async def test_an_event_shows_only_after_the_lag_so_a_slow_writer_is_never_skipped(
    eventually: Callable[..., Awaitable[Any]],
) -> None:
    async with open_outcome_store(f"fsspec+memory://lag-{uuid.uuid4().hex}?lag=0.3") as store:
        await store.append_events([enqueued("t")])
        assert await store.events() == []  # a writer that drew an earlier seq may still be writing
        assert await store.last_event_seq() == 0
        [shown] = await eventually(store.events, what="the event to come out of the lag")
        assert shown.task_id == "t" and await store.last_event_seq() == shown.seq


@pytest.mark.parametrize("url", ["s3://bucket/omniq", "gs://bucket/omniq", "fsspec+memory://x"])
def test_an_fsspec_url_cannot_hold_the_queue_and_says_what_it_can_hold(url: str) -> None:
    with pytest.raises(StorageError, match=r"results and events \(result_url, events_url\), not its tasks"):
        open_storage(url)


def test_a_filesystem_fsspec_does_not_know_is_refused_by_name() -> None:
    with pytest.raises(StorageError, match="nosuchfs"):
        open_stores(Settings(db_url="memory://", result_url="nosuchfs://bucket/x"))


async def test_storage_options_reach_the_filesystem(tmp_path: Path) -> None:
    missing = tmp_path / "not" / "yet"
    settings = Settings(storage_options={"auto_mkdir": False})
    store = open_outcome_store(f"file://{missing}", settings=settings)
    with pytest.raises(StorageError, match="the result store"):
        async with store:  # without auto_mkdir the nested folders are not made
            await store.keep_results([TaskResult(task_id="t", lease_token="k", status=TaskStatus.SUCCEEDED)])
    assert "auto_mkdir" in repr(settings) and "False" not in repr(settings)  # option values are never shown


async def test_a_queue_in_sqlite_keeps_its_results_in_fsspecs_memory(tmp_path: Path) -> None:
    name = f"fsspec+memory://results-{uuid.uuid4().hex}"
    async with omniq.AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'q.db'}", result_url=name, events_url=name) as q:
        async with AsyncWorkerPool(q, concurrency=2):
            handles = [await q.enqueue(pow, 2, n) for n in range(5)]
            assert [await h.result(timeout=30) for h in handles] == [2**n for n in range(5)]
        assert isinstance(q.storage, SplitStorage)
        raw = await q.storage.queue.get(handles[0].id)
        assert raw is not None and raw.result is not None and raw.result.startswith(b"ORkept:")


async def test_a_result_that_cannot_be_read_is_an_error_not_a_missing_result(tmp_path: Path) -> None:
    async with open_outcome_store(f"file://{tmp_path / 'r'}") as store:
        (tmp_path / "r" / "results" / "t" / "k").mkdir(parents=True)  # not a readable object
        await store.keep_results([TaskResult(task_id="u", lease_token="k", status=TaskStatus.SUCCEEDED, result=b"v")])
        with pytest.raises(StorageError, match="IsADirectoryError"):
            await store.kept_results([("t", "k"), ("u", "k")])
        assert await store.kept_results([("u", "k"), ("gone", "k")]) == {("u", "k"): b"v"}


@pytest.mark.parametrize("url", ["sqlit:///r.db", "sqlite3:///r.db", "postgress://h/db"])
def test_a_mistyped_result_url_is_refused_as_unknown(url: str) -> None:
    with pytest.raises(StorageError, match="unknown store URL"):
        open_stores(Settings(db_url="memory://", result_url=url))
