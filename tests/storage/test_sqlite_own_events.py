"""A SQLite store object knows the events its own connections recorded, and can read only the others'."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from omniq_nb.models import EventKind, Task, TaskEvent, TaskResult, TaskStatus
from omniq_nb.storage.base import OthersEvents
from omniq_nb.storage.sqlite import SQLiteStorage

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]


def writers(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM event_writers ORDER BY id")]


async def run(store: SQLiteStorage, task: Task, *, progress: bool = False) -> None:
    """Insert, claim and settle ``task`` through ``store`` (reporting progress once if asked)."""
    await store.insert([task])
    [claimed] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
    assert claimed.id == task.id and claimed.lease_token is not None
    if progress:
        assert await store.progress(task_id=task.id, lease_token=claimed.lease_token, done=1, total=2, message="half")
    done = TaskResult(task_id=task.id, lease_token=claimed.lease_token, status=TaskStatus.SUCCEEDED, result=b"1")
    assert await store.settle([done])


def kinds(events: list[TaskEvent]) -> list[tuple[str, EventKind]]:
    return [(event.task_id, event.kind) for event in events]


async def test_others_events_leave_out_this_objects_inserts_claims_and_settles_only(
    tmp_path: Path, make_task: MakeTask
) -> None:
    url = f"sqlite:///{tmp_path / 'omniq.db'}"
    mine, theirs, dropped = make_task(), make_task(), make_task()
    async with SQLiteStorage(url) as store, SQLiteStorage(url) as other:
        assert isinstance(store, OthersEvents)
        await run(store, mine, progress=True)
        await run(other, theirs)
        await store.insert([dropped])
        await store.cancel(dropped.id)
        newest = await store.last_event_seq()

        seen, cursor = await store.others_events(since=0, limit=100)
        assert kinds(seen) == [  # not mine's progress either: its settle, later, handed on a newer row
            (theirs.id, EventKind.ENQUEUED),
            (theirs.id, EventKind.STARTED),
            (theirs.id, EventKind.SUCCEEDED),
            (dropped.id, EventKind.CANCELLED),  # a cancel may stop runs its row does not show: read too
        ]
        assert cursor == newest
        seen, cursor = await other.others_events(since=0, limit=100)
        assert kinds(seen) == [
            *[(mine.id, kind) for kind in ("enqueued", "started", "progress", "succeeded")],
            (dropped.id, EventKind.ENQUEUED),
            (dropped.id, EventKind.CANCELLED),
        ]
        assert cursor == newest
        assert [e.seq for e in await store.events(since=0)] == list(range(1, newest + 1))  # events() has them all


async def test_the_cursor_passes_own_events_and_pages_through_the_others(tmp_path: Path, make_task: MakeTask) -> None:
    url = f"sqlite:///{tmp_path / 'omniq.db'}"
    async with SQLiteStorage(url) as store, SQLiteStorage(url) as other:
        await store.insert([make_task() for _ in range(3)])
        theirs = [make_task() for _ in range(3)]
        await other.insert(theirs)
        await store.insert([make_task() for _ in range(2)])

        first, cursor = await store.others_events(since=0, limit=2)
        assert [e.task_id for e in first] == [t.id for t in theirs[:2]]
        assert cursor == first[-1].seq  # a full batch: the rest follows from its last event
        rest, cursor = await store.others_events(since=cursor, limit=2)
        assert [e.task_id for e in rest] == [theirs[2].id]
        assert cursor == await store.last_event_seq()  # past its own newest events too
        await store.insert([make_task()])
        assert await store.others_events(since=cursor, limit=2) == ([], cursor + 1)
        assert await store.others_events(since=cursor + 1, limit=2) == ([], cursor + 1)


async def test_store_objects_open_at_once_have_their_own_writer_and_give_it_back(tmp_path: Path) -> None:
    path = tmp_path / "omniq.db"
    async with SQLiteStorage(f"sqlite:///{path}"), SQLiteStorage(f"sqlite:///{path}"):
        assert len(set(writers(path))) == 2
    assert writers(path) == []


async def test_a_store_recording_no_events_reads_every_event_as_the_others(tmp_path: Path, make_task: MakeTask) -> None:
    url = f"sqlite:///{tmp_path / 'omniq.db'}"
    task = make_task()
    async with SQLiteStorage(url, events=False) as silent, SQLiteStorage(url) as other:
        await silent.insert([make_task()])  # recorded by nobody
        await other.insert([task])
        seen, _ = await silent.others_events(since=0, limit=10)
        assert kinds(seen) == [(task.id, EventKind.ENQUEUED)]


async def test_an_event_a_later_own_write_overtook_is_left_out(tmp_path: Path, make_task: MakeTask) -> None:
    """Another object retries a failed task and this one claims it before its follower reads the retry.

    The claim handed on the running row; the older retry (pending) must not be read over it.
    """
    url = f"sqlite:///{tmp_path / 'omniq.db'}"
    task = make_task()
    async with SQLiteStorage(url) as store, SQLiteStorage(url) as other:
        await store.insert([task])
        [claimed] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
        failed = TaskResult(task_id=task.id, lease_token=claimed.lease_token, status=TaskStatus.FAILED)
        assert await store.settle([failed])
        cursor = await store.last_event_seq()
        assert await other.requeue(task.id) is not None
        [again] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
        assert again.status is TaskStatus.RUNNING

        seen, _ = await store.others_events(since=cursor, limit=100)
        assert kinds(seen) == []
        assert kinds(await store.events(since=cursor)) == [(task.id, EventKind.RETRIED), (task.id, EventKind.STARTED)]
        seen, _ = await other.others_events(since=cursor, limit=100)
        assert kinds(seen) == [(task.id, EventKind.RETRIED), (task.id, EventKind.STARTED)]  # not stamped by other
