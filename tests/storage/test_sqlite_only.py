from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from omniq_nb.config import Settings
from omniq_nb.errors import StorageError
from omniq_nb.models import DependencyMove, EventKind, Task, TaskResult, TaskStatus, new_task_ids
from omniq_nb.storage import Storage, open_storage
from omniq_nb.storage.sqlite import SQLiteStorage, sqlite_path
from omniq_nb.storage.sqlite_schema import SCHEMA_VERSION

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]


def url_of(path: Path) -> str:
    assert path.is_absolute()
    return f"sqlite:///{path}"


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


async def run_one(store: Storage, task: Task) -> None:
    await store.insert([task])
    [claimed] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
    assert claimed.lease_token is not None
    result = TaskResult(task_id=task.id, lease_token=claimed.lease_token, status=TaskStatus.SUCCEEDED, result=b"ok")
    assert await store.settle([result])


async def test_the_file_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "omniq.db"
    async with SQLiteStorage(url_of(path)):
        assert query(path, "PRAGMA journal_mode") == [("wal",)]


async def test_the_file_and_its_missing_folders_are_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "omniq.db"
    async with open_storage(url_of(path)):
        pass
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0


async def test_the_schema_version_table_holds_every_applied_version(tmp_path: Path) -> None:
    path = tmp_path / "omniq.db"
    async with SQLiteStorage(url_of(path)):
        pass
    assert query(path, "SELECT version FROM omniq_schema") == EVERY_VERSION


# What each migration added, undone in reverse order to turn a store back into an older one.
_UNDO = {
    8: ["CREATE INDEX events_at ON events (at)", "DROP TABLE event_writers", "ALTER TABLE events DROP COLUMN writer"],
    7: ["DROP TABLE callables"],
    6: [
        "DROP TABLE task_output_seq",
        "DROP TABLE task_output",
        "DROP INDEX tasks_cache",
        "ALTER TABLE tasks DROP COLUMN cache_key",
    ],
    5: ["DROP TABLE task_deps", "ALTER TABLE tasks DROP COLUMN run_on", "ALTER TABLE tasks DROP COLUMN depends_on"],
    4: [
        "DROP TABLE kept_results",
        "DROP INDEX events_purge",
        "DROP INDEX events_at",
        "ALTER TABLE events DROP COLUMN purge_at",
    ],
    3: ["DROP TABLE workers", "ALTER TABLE tasks DROP COLUMN owner"],
    2: ["ALTER TABLE tasks DROP COLUMN run_id", "ALTER TABLE events DROP COLUMN run_id"],
}
EVERY_VERSION = [(version,) for version in range(1, SCHEMA_VERSION + 1)]


def downgrade(path: Path, version: int) -> None:
    """Turn the store at ``path`` back into a store of schema ``version``, as that release wrote it."""
    with sqlite3.connect(path) as conn:
        for undone in range(SCHEMA_VERSION, version, -1):
            for statement in _UNDO[undone]:
                conn.execute(statement)
            conn.execute("DELETE FROM omniq_schema WHERE version = ?", (undone,))


async def test_a_version_7_store_gains_event_writers_and_keeps_its_events(tmp_path: Path, make_task: MakeTask) -> None:
    path = tmp_path / "omniq.db"
    old = make_task()
    async with SQLiteStorage(url_of(path)) as store:
        await run_one(store, old)
    downgrade(path, 7)
    assert query(path, "SELECT count(*) FROM sqlite_master WHERE name = 'events_at'") == [(1,)]
    async with SQLiteStorage(url_of(path)) as store:
        recorded = await store.events(since=0)
        assert [e.kind for e in recorded] == ["enqueued", "started", "succeeded"]
        # recorded before writers were: no store object's own, so every follower reads them
        assert (await store.others_events(since=0, limit=10))[0] == recorded
    assert query(path, "SELECT version FROM omniq_schema") == EVERY_VERSION
    assert query(path, "SELECT count(*) FROM sqlite_master WHERE name = 'events_at'") == [(0,)]


async def test_a_version_6_store_gains_kept_callables_and_keeps_its_tasks(tmp_path: Path, make_task: MakeTask) -> None:
    path = tmp_path / "omniq.db"
    old = make_task()
    async with SQLiteStorage(url_of(path)) as store:
        await store.insert([old])
    downgrade(path, 6)
    async with SQLiteStorage(url_of(path)) as store:
        assert (await store.get(old.id)) == old
        await store.insert_many(make_task(), [(new_task_ids(1)[0], b"x")], ("ab" * 32, b"a function"))
        assert await store.kept_callables(["ab" * 32]) == {"ab" * 32: b"a function"}
    assert query(path, "SELECT version FROM omniq_schema") == EVERY_VERSION


async def test_a_version_5_store_gains_the_cache_and_output_and_keeps_its_tasks(
    tmp_path: Path, make_task: MakeTask
) -> None:
    path = tmp_path / "omniq.db"
    old, done = make_task(), make_task()
    async with SQLiteStorage(url_of(path)) as store:
        await run_one(store, done)
        await store.insert([old])
    downgrade(path, 5)
    async with SQLiteStorage(url_of(path)) as store:
        assert (await store.get(old.id)) == old
        kept = await store.get(done.id)
        assert kept is not None and (kept.status, kept.cache_key) == (TaskStatus.SUCCEEDED, None)
        await store.append_output(old.id, [("stdout", "hello\n")], limit_bytes=100, limit_lines=10)
        assert [c.text for c in (await store.output(old.id)).chunks] == ["hello\n"]
        await store.cancel(old.id)  # run_one claims the one pending task
        cached = make_task(cache_key="k")
        await run_one(store, cached)
        assert [t.id for t in (await store.cached(["k"])).values()] == [cached.id]
    assert query(path, "SELECT version FROM omniq_schema") == EVERY_VERSION
    plan = query(path, "EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE cache_key = 'k' AND status = 'succeeded'")
    assert any("tasks_cache" in str(row) for row in plan)


async def test_a_version_4_store_gains_dependencies_and_keeps_its_tasks(tmp_path: Path, make_task: MakeTask) -> None:
    path = tmp_path / "omniq.db"
    old, done = make_task(), make_task()
    async with SQLiteStorage(url_of(path)) as store:
        await run_one(store, done)
        await store.insert([old])
    downgrade(path, 4)
    async with SQLiteStorage(url_of(path)) as store:
        assert (await store.get(old.id)) == old  # no dependencies: depends_on (), run_on "success"
        kept = await store.get(done.id)
        assert kept is not None and (kept.status, kept.depends_on, kept.run_on) == (TaskStatus.SUCCEEDED, (), "success")
        later = make_task(status=TaskStatus.WAITING, depends_on=(done.id, old.id), run_on="any")
        await store.insert([later])
        assert [t.id for t in await store.dependents([done.id])] == [later.id]
        move = DependencyMove(task_id=later.id, source=TaskStatus.WAITING, target=TaskStatus.PENDING)
        assert [t.status for t in await store.move_dependents([move])] == [TaskStatus.PENDING]
        assert [e.kind for e in await store.events(task_id=later.id)] == [EventKind.ENQUEUED, EventKind.READY]
    assert query(path, "SELECT version FROM omniq_schema") == EVERY_VERSION


async def test_a_version_3_store_gains_the_tables_for_a_queue_kept_elsewhere(
    tmp_path: Path, make_task: MakeTask
) -> None:
    path = tmp_path / "omniq.db"
    old = make_task()
    async with SQLiteStorage(url_of(path)) as store:
        await store.insert([old])
    downgrade(path, 3)
    async with SQLiteStorage(url_of(path)) as store:
        assert (await store.get(old.id)) == old
        assert [e.kind for e in await store.events(task_id=old.id)] == ["enqueued"]
        await store.keep_results([TaskResult(task_id="t", lease_token="k", status=TaskStatus.SUCCEEDED, result=b"r")])
        assert await store.kept_results([("t", "k")]) == {("t", "k"): b"r"}
    assert query(path, "SELECT version FROM omniq_schema") == EVERY_VERSION


async def test_a_version_1_store_is_migrated_and_keeps_its_tasks(tmp_path: Path, make_task: MakeTask) -> None:
    path = tmp_path / "omniq.db"
    old = make_task()
    async with SQLiteStorage(url_of(path)) as store:
        await store.insert([old])
    downgrade(path, 1)  # a version-1 store, as 0.1 wrote it
    async with SQLiteStorage(url_of(path)) as store:
        assert (await store.get(old.id)) is not None
        [claimed] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
        assert claimed.id == old.id and claimed.run_id
        [started] = [e for e in await store.events(task_id=old.id) if e.kind == "started"]
        assert started.run_id == claimed.run_id
    assert query(path, "SELECT version FROM omniq_schema") == EVERY_VERSION


async def test_a_version_2_store_gains_owners_and_the_worker_registry(tmp_path: Path, make_task: MakeTask) -> None:
    path = tmp_path / "omniq.db"
    old = make_task()
    async with SQLiteStorage(url_of(path)) as store:
        await store.insert([old])
    downgrade(path, 2)
    async with SQLiteStorage(url_of(path)) as store:
        assert (await store.get(old.id)) == old
        [claimed] = await store.claim(queues=["default"], limit=1, lease=30, worker="w", unowned_only=True)
        assert claimed.id == old.id and claimed.owner is None
        assert await store.workers() == []
    assert query(path, "SELECT version FROM omniq_schema") == EVERY_VERSION


async def test_opening_twice_keeps_the_schema_and_the_tasks(tmp_path: Path, make_task: MakeTask) -> None:
    path = tmp_path / "omniq.db"
    task = make_task()
    async with SQLiteStorage(url_of(path)) as first:
        await first.insert([task])
    async with SQLiteStorage(url_of(path)) as second, SQLiteStorage(url_of(path)) as third:
        assert await second.get(task.id) == task
        assert await third.get(task.id) == task
    assert query(path, "SELECT version FROM omniq_schema") == EVERY_VERSION


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "omniq.db"
    async with SQLiteStorage(url_of(path)):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO omniq_schema (version) VALUES (99)")
    store = SQLiteStorage(url_of(path))
    try:
        with pytest.raises(StorageError, match="upgrade omniq_nb"):
            await store.open()
        # a refused open leaves the store closed: trying again is refused again, not half-open
        with pytest.raises(StorageError, match="upgrade omniq_nb"):
            await store.open()
    finally:
        await store.close()  # so a leaked connection thread cannot outlive the test's event loop


@pytest.mark.parametrize("url", ["sqlite://jobs.db", "sqlite:///x.db?foo=1", "sqlite:///x.db#frag"])
def test_a_malformed_url_is_refused_with_the_accepted_forms(url: str) -> None:
    with pytest.raises(StorageError, match="malformed SQLite URL") as caught:
        open_storage(url)
    message = str(caught.value)
    assert url in message
    assert "sqlite:///relative/path.db" in message
    assert "sqlite:////absolute/path.db" in message
    with pytest.raises(StorageError, match="three slashes"):
        SQLiteStorage(url)


async def test_an_unwritable_path_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file where a folder should be")
    path = blocker / "omniq.db"
    store = open_storage(url_of(path))
    with pytest.raises(StorageError, match="cannot create or write") as caught:
        await store.open()
    assert str(path.resolve()) in str(caught.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///omniq.db", "omniq.db"),
        ("sqlite:///.omniq/omniq.db", ".omniq/omniq.db"),
        ("sqlite:////var/lib/omniq/omniq.db", "/var/lib/omniq/omniq.db"),
        ("sqlite:////tmp/with%20space.db", "/tmp/with space.db"),
        ("sqlite://", None),
        ("sqlite:///", None),
        ("sqlite:///:memory:", None),
    ],
)
def test_sqlite_path_forms(url: str, expected: str | None) -> None:
    assert sqlite_path(url) == expected


async def test_a_relative_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_task: MakeTask
) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_storage("sqlite:///.omniq/omniq.db") as store:
        await store.insert([make_task()])
    assert (tmp_path / ".omniq" / "omniq.db").is_file()


async def test_an_in_memory_database_works_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_task: MakeTask
) -> None:
    monkeypatch.chdir(tmp_path)
    task = make_task()
    async with open_storage("sqlite://") as store:
        await run_one(store, task)
        done = await store.get(task.id)
        assert done is not None
        assert done.status is TaskStatus.SUCCEEDED
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("how", ["argument", "settings"])
async def test_events_off_records_nothing(tmp_path: Path, make_task: MakeTask, how: str) -> None:
    url = url_of(tmp_path / "omniq.db")
    if how == "argument":
        store = SQLiteStorage(url, events=False)
    else:
        store = open_storage(url, settings=Settings(events=False))
    async with store:
        assert isinstance(store, SQLiteStorage)
        task = make_task()
        await run_one(store, task)
        await store.cancel(task.id)
        assert await store.events() == []
        assert await store.last_event_seq() == 0
    assert query(tmp_path / "omniq.db", "SELECT count(*) FROM events") == [(0,)]


async def test_events_off_in_one_connection_does_not_silence_another(tmp_path: Path, make_task: MakeTask) -> None:
    url = url_of(tmp_path / "omniq.db")
    async with SQLiteStorage(url, events=False) as quiet, SQLiteStorage(url) as loud:
        silent, heard = make_task(), make_task()
        await quiet.insert([silent])
        await loud.insert([heard])
        assert [e.task_id for e in await loud.events()] == [heard.id]


async def test_the_store_needs_opening(tmp_path: Path) -> None:
    store = SQLiteStorage(url_of(tmp_path / "omniq.db"))
    with pytest.raises(StorageError, match="not open"):
        await store.list()


def test_the_file_is_not_world_readable_even_with_a_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "lax" / "omniq.db"

        async def open_and_close() -> None:
            async with SQLiteStorage(url_of(path)):
                pass

        anyio.run(open_and_close)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
