"""What only the PostgreSQL store does: its schema option, migration lock, redaction, driver message, NOTIFY.

Also: a store of an earlier schema version (2, 3) is migrated and keeps its tasks.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from postgres_server import POSTGRES_URL, new_schema, postgres_schema

from omniq_nb.config import Settings
from omniq_nb.errors import StorageError
from omniq_nb.models import DependencyMove, EventKind, Task, TaskEvent, TaskResult, TaskStatus, new_task_ids
from omniq_nb.storage import open_storage
from omniq_nb.storage import postgres_schema as schema_module
from omniq_nb.storage.postgres import PostgresStorage
from omniq_nb.storage.postgres_schema import SCHEMA_VERSION
from omniq_nb.storage.postgres_url import split_schema
from omniq_nb.storage.rows import NEW_COLUMNS, new_task_row

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

MakeTask = Callable[..., Task]
ROOT = Path(__file__).resolve().parents[2]
TABLES = [
    "callables",
    "events",
    "kept_results",
    "leaders",
    "omniq_schema",
    "output_seq",
    "task_deps",
    "task_output",
    "tasks",
    "workers",
]
EVERY_VERSION = [(version,) for version in range(1, SCHEMA_VERSION + 1)]


@pytest.fixture
def schema() -> Iterator[str]:
    with postgres_schema() as name:
        yield name


def url_of(schema: str) -> str:
    return f"{POSTGRES_URL}?schema={schema}"


def tables_in(schema: str) -> list[str]:
    with psycopg.connect(POSTGRES_URL) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,)
        ).fetchall()
    return [row[0] for row in rows]


def test_split_schema_strips_the_option_and_defaults_to_omniq() -> None:
    assert split_schema("postgresql://u@h/db?schema=jobs&sslmode=disable") == (
        "postgresql://u@h/db?sslmode=disable",
        "jobs",
    )
    assert split_schema("postgres://u@h/db") == ("postgres://u@h/db", "omniq")


@pytest.mark.parametrize("bad", ["a-b", "1abc", "x;drop", "a" * 58, ""])
def test_a_schema_that_is_not_a_plain_identifier_is_refused(bad: str) -> None:
    with pytest.raises(StorageError, match="invalid schema"):
        open_storage(f"{POSTGRES_URL}?schema={bad}")


async def test_the_tables_live_in_the_named_schema_with_its_version(schema: str, make_task: MakeTask) -> None:
    async with open_storage(url_of(schema)) as store:
        assert isinstance(store, PostgresStorage)
        assert (store.supports_notify, store.multi_host) == (True, True)
        await store.insert([make_task()])
    assert tables_in(schema) == TABLES
    with psycopg.connect(POSTGRES_URL) as conn:
        assert conn.execute(f'SELECT version FROM "{schema}".omniq_schema').fetchall() == EVERY_VERSION
        assert conn.execute(f'SELECT count(*) FROM "{schema}".tasks').fetchone() == (1,)


async def test_a_version_2_store_gains_dependencies_and_keeps_its_tasks(
    schema: str, make_task: MakeTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = make_task()
    with monkeypatch.context() as patch:  # a version-2 store, as the release before dependencies made it
        patch.setattr(schema_module, "SCHEMA_VERSION", 2)
        async with open_storage(url_of(schema)):
            pass
    insert_as_before(schema, old, newer_columns=3)  # that release wrote all but depends_on, run_on, cache_key
    async with open_storage(url_of(schema)) as store:
        assert await store.get(old.id) == old  # no dependencies: depends_on (), run_on "success"
        later = make_task(status=TaskStatus.WAITING, depends_on=(old.id,))
        await store.insert([later])
        assert [t.id for t in await store.dependents([old.id])] == [later.id]
        move = DependencyMove(task_id=later.id, source=TaskStatus.WAITING, target=TaskStatus.PENDING)
        assert [t.status for t in await store.move_dependents([move])] == [TaskStatus.PENDING]
        assert [e.kind for e in await store.events(task_id=later.id)] == [EventKind.ENQUEUED, EventKind.READY]
    assert tables_in(schema) == TABLES
    with psycopg.connect(POSTGRES_URL) as conn:
        assert conn.execute(f'SELECT version FROM "{schema}".omniq_schema').fetchall() == EVERY_VERSION


async def test_a_version_3_store_gains_the_cache_and_output_and_keeps_its_tasks(
    schema: str, make_task: MakeTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = make_task(status=TaskStatus.WAITING, depends_on=("d" * 32,))
    with monkeypatch.context() as patch:  # a version-3 store, as the release before the result cache made it
        patch.setattr(schema_module, "SCHEMA_VERSION", 3)
        async with open_storage(url_of(schema)):
            pass
    insert_as_before(schema, old, newer_columns=1)  # that release wrote all but cache_key
    async with open_storage(url_of(schema)) as store:
        assert await store.get(old.id) == old  # no cache key
        cached = make_task(cache_key="k")
        await store.insert([cached])
        [claimed] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
        done = TaskResult(task_id=cached.id, lease_token=claimed.lease_token or "", status=TaskStatus.SUCCEEDED)
        assert await store.settle([done])
        hit = (await store.cached(["k"])).get("k")
        assert hit is not None and hit.id == cached.id
        await store.append_output(old.id, [("stdout", "kept\n")], limit_bytes=100, limit_lines=10)
        assert [c.text for c in (await store.output(old.id)).chunks] == ["kept\n"]
        assert await store.forget_cached() == 1
    assert tables_in(schema) == TABLES
    with psycopg.connect(POSTGRES_URL) as conn:
        assert conn.execute(f'SELECT version FROM "{schema}".omniq_schema').fetchall() == EVERY_VERSION


async def test_a_version_4_store_gains_kept_callables_and_keeps_its_tasks(
    schema: str, make_task: MakeTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = make_task()
    with monkeypatch.context() as patch:  # a version-4 store, as the release before kept callables made it
        patch.setattr(schema_module, "SCHEMA_VERSION", 4)
        async with open_storage(url_of(schema)) as store:
            await store.insert([old])
    assert "callables" not in tables_in(schema)
    async with open_storage(url_of(schema)) as store:
        assert await store.get(old.id) == old
        await store.insert_many(make_task(), [(new_task_ids(1)[0], b"x")], ("ab" * 32, b"a function"))
        assert await store.kept_callables(["ab" * 32]) == {"ab" * 32: b"a function"}
    assert tables_in(schema) == TABLES
    with psycopg.connect(POSTGRES_URL) as conn:
        assert conn.execute(f'SELECT version FROM "{schema}".omniq_schema').fetchall() == EVERY_VERSION


def insert_as_before(schema: str, task: Task, *, newer_columns: int) -> None:
    """Insert ``task`` as an earlier release did: without the last ``newer_columns`` of ``NEW_COLUMNS``."""
    columns = NEW_COLUMNS.split(",")[:-newer_columns]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(
            f'INSERT INTO "{schema}".tasks ({", ".join(columns)}) VALUES ({", ".join(["%s"] * len(columns))})'.encode(),
            new_task_row(task)[:-newer_columns],
        )


async def test_the_url_is_redacted_and_errors_never_show_the_password() -> None:
    store = open_storage("postgresql://postgres:hunter2@127.0.0.1:1/test?schema=nowhere")
    assert store.url == "postgresql://postgres:***@127.0.0.1:1/test?schema=nowhere"
    with pytest.raises(StorageError) as caught:
        await store.open()
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)
    await store.close()


async def test_a_password_is_passed_to_the_server_and_kept_out_of_the_url(schema: str) -> None:
    async with open_storage(f"postgresql://postgres:hunter2@127.0.0.1:5432/test?schema={schema}") as store:
        assert "hunter2" not in store.url
        assert await store.list() == []


async def test_concurrent_opens_of_a_new_schema_migrate_it_once(schema: str, make_task: MakeTask) -> None:
    stores = [open_storage(url_of(schema)) for _ in range(6)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        task = make_task()
        await stores[0].insert([task])
        assert all([await store.get(task.id) is not None for store in stores])
    finally:
        await asyncio.gather(*(store.close() for store in stores))
    with psycopg.connect(POSTGRES_URL) as conn:
        assert conn.execute(f'SELECT version FROM "{schema}".omniq_schema').fetchall() == EVERY_VERSION


def test_two_processes_open_a_new_schema_at_once(schema: str) -> None:
    script = (
        "import asyncio, sys\n"
        "from omniq_nb.storage import open_storage\n"
        "async def main():\n"
        "    async with open_storage(sys.argv[1]) as store:\n"
        "        print(len(await store.list()))\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen([sys.executable, "-c", script, url_of(schema)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=60)[0] for child in children]
    assert [child.returncode for child in children] == [0, 0]
    assert outputs == ["0\n", "0\n"]
    assert tables_in(schema) == TABLES


async def test_a_newer_schema_is_refused(schema: str) -> None:
    async with open_storage(url_of(schema)):
        pass
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'INSERT INTO "{schema}".omniq_schema VALUES (99)'.encode())
    with pytest.raises(StorageError, match="schema version 99"):
        async with open_storage(url_of(schema)):
            pass


async def test_checking_a_missing_schema_creates_nothing() -> None:
    missing = new_schema()
    with pytest.raises(StorageError, match="no omniq store"):
        await open_storage(url_of(missing)).check(stale_after=60)
    assert tables_in(missing) == []


async def test_an_unopened_store_is_checked_through_a_connection_of_its_own(schema: str, make_task: MakeTask) -> None:
    async with open_storage(url_of(schema)) as store:
        await store.insert([make_task()])
    health = await open_storage(url_of(schema)).check(stale_after=60)
    assert health.ok and health.schema_version == SCHEMA_VERSION and sum(health.counts.values()) == 1


async def test_a_notify_wakes_a_waiter_on_another_store_object(schema: str, make_task: MakeTask) -> None:
    async with open_storage(url_of(schema)) as waiter, open_storage(url_of(schema)) as writer:
        await waiter.wait_for_tasks(0.01)  # starts listening
        started = time.monotonic()
        await asyncio.gather(waiter.wait_for_tasks(30), _after(0.2, writer.insert([make_task()])))
        assert time.monotonic() - started < 5
        await writer.insert_many(make_task(), [("a" * 32, b"x")])  # a hint sent between waits is kept
        started = time.monotonic()
        await waiter.wait_for_tasks(30)
        assert time.monotonic() - started < 5


async def test_a_waiter_without_hints_sleeps_its_timeout(schema: str) -> None:
    async with open_storage(url_of(schema)) as waiter:
        started = time.monotonic()
        await waiter.wait_for_tasks(0.3)
        assert 0.25 < time.monotonic() - started < 5


async def test_a_follower_never_misses_events_of_concurrent_writers(schema: str, make_task: MakeTask) -> None:
    """Event seqs drawn by concurrent transactions become visible in order: a cursor never skips one."""
    stores = [open_storage(url_of(schema)) for _ in range(4)]
    for store in stores:
        await store.open()
    seen: list[TaskEvent] = []
    done = asyncio.Event()

    async def follow() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            new = await stores[0].events(since=cursor)
            seen.extend(new)
            cursor = new[-1].seq if new else cursor
            if finished and not new:
                return

    async def write(store: PostgresStorage) -> None:
        for _ in range(40):
            await store.insert([make_task() for _ in range(3)])

    try:
        follower = asyncio.create_task(follow())
        await asyncio.gather(*(write(store) for store in stores))  # type: ignore[arg-type]
        done.set()
        await follower
        everything = await stores[0].events(limit=100_000)
    finally:
        for store in stores:
            await store.close()
    assert len(everything) == 4 * 40 * 3
    assert [e.seq for e in seen] == [e.seq for e in everything]


async def _after(seconds: float, action: object) -> None:
    await asyncio.sleep(seconds)
    await action  # type: ignore[misc]


async def test_events_off_in_one_store_does_not_silence_another(schema: str, make_task: MakeTask) -> None:
    async with (
        open_storage(url_of(schema), settings=Settings(events=False)) as quiet,
        open_storage(url_of(schema)) as loud,
    ):
        silent, heard = make_task(), make_task()
        await quiet.insert([silent])
        await loud.insert([heard])
        assert await loud.events(task_id=silent.id) == []
        assert [e.kind for e in await quiet.events(task_id=heard.id)] == [EventKind.ENQUEUED]


async def test_connections_the_server_dropped_are_replaced(schema: str, make_task: MakeTask) -> None:
    async with open_storage(url_of(schema)) as store:
        assert isinstance(store, PostgresStorage)
        held = await asyncio.gather(*(store._fetch("SELECT pg_backend_pid(), pg_sleep(0.1)") for _ in range(4)))
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            for pid in {rows[0][0] for rows in held}:  # this store's connections only
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        task = make_task()
        await store.insert([task])
        assert await store.get(task.id) is not None


async def test_a_claim_or_an_outcome_whose_kept_connection_the_server_dropped_runs_on_a_new_one(
    schema: str, make_task: MakeTask
) -> None:
    async with open_storage(url_of(schema)) as store:
        assert isinstance(store, PostgresStorage)
        tasks = [make_task() for _ in range(3)]
        await store.insert(tasks)
        [first] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
        [second] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
        await store.settle([TaskResult(task_id=first.id, lease_token=first.lease_token, status=TaskStatus.SUCCEEDED)])
        lanes = {name: lane.conn for name, lane in store._lanes.items()}
        assert set(lanes) == {"claims", "outcomes"} and all(conn is not None for conn in lanes.values())
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            for kept in lanes.values():
                assert kept is not None
                conn.execute("SELECT pg_terminate_backend(%s)", (kept.info.backend_pid,))
        [third] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
        result = TaskResult(task_id=second.id, lease_token=second.lease_token, status=TaskStatus.SUCCEEDED)
        assert [t.id for t in await store.settle([result])] == [second.id]
        assert third.id not in {first.id, second.id}
        assert all(store._lanes[name].conn is not lanes[name] for name in lanes)  # replaced, not reused


async def test_closing_the_store_lets_a_statement_on_a_kept_connection_finish_then_closes_it(schema: str) -> None:
    store = open_storage(url_of(schema))
    assert isinstance(store, PostgresStorage)
    await store.open()
    await store._fetch_on_lane("claims", "SELECT 1")
    running = asyncio.ensure_future(store._fetch_on_lane("claims", "SELECT 7 FROM pg_sleep(0.3)"))
    lane = store._lanes["claims"]
    while not lane.lock.locked():  # noqa: ASYNC110 (the statement starts in the next loop iterations)
        await asyncio.sleep(0.001)
    kept = lane.conn
    await store.close()
    assert await asyncio.wait_for(running, 10) == [(7,)]
    assert kept is not None and kept.closed and lane.conn is None
    with pytest.raises(StorageError, match="not open"):
        await store._fetch_on_lane("claims", "SELECT 1")


async def test_release_and_requeue_wake_a_waiter_too(schema: str, make_task: MakeTask) -> None:
    async with open_storage(url_of(schema)) as waiter, open_storage(url_of(schema)) as writer:
        task = make_task()
        await writer.insert([task])
        [running] = await writer.claim(queues=["default"], limit=1, lease=30, worker="w")
        await waiter.wait_for_tasks(0.01)  # starts listening

        async def woken_by(change: Awaitable[object]) -> bool:
            started = time.monotonic()
            await asyncio.gather(waiter.wait_for_tasks(30), _after(0.1, change))
            return time.monotonic() - started < 5

        assert await woken_by(writer.release(leases={task.id: running.lease_token or ""}))
        await writer.cancel(task.id)
        assert await woken_by(writer.requeue(task.id))


async def test_a_dependent_moved_to_pending_wakes_a_waiter(schema: str, make_task: MakeTask) -> None:
    async with open_storage(url_of(schema)) as waiter, open_storage(url_of(schema)) as writer:
        first = make_task()
        second = make_task(status=TaskStatus.WAITING, depends_on=(first.id,))
        await writer.insert([first, second])
        await waiter.wait_for_tasks(0.01)  # starts listening
        move = DependencyMove(task_id=second.id, source=TaskStatus.WAITING, target=TaskStatus.PENDING)
        started = time.monotonic()
        await asyncio.gather(waiter.wait_for_tasks(30), _after(0.1, writer.move_dependents([move])))
        assert time.monotonic() - started < 5
