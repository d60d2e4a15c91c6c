"""The SQL stores' dependency index (``task_deps``): filled at insert, read by dependency, emptied by every purge.

The contract suite covers ``purge(everything=True)``; these tests look at the index rows
themselves after the purges of finished tasks (by age and status, by result TTL), and at
SQLite's plan for the lookup (an index search on both tables, no scan).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from postgres_server import POSTGRES_URL, postgres_schema

from omniq_nb.models import DependencyMove, Task, TaskError, TaskStatus
from omniq_nb.storage import Storage, open_storage
from omniq_nb.storage.postgres import PostgresStorage
from omniq_nb.storage.sqlite import SQLiteStorage

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]
BOOM = TaskError(type="builtins.ValueError", message="boom", attempt=0)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/omniq.db"
        return
    with postgres_schema() as schema:
        yield f"{POSTGRES_URL}?schema={schema}"


@pytest.fixture
async def sql_store(sql_url: str) -> AsyncIterator[Storage]:
    async with open_storage(sql_url) as store:
        yield store


async def links(store: Storage) -> set[tuple[str, str]]:
    """Return the dependency index rows, as (task id, id it depends on)."""
    assert isinstance(store, SQLiteStorage | PostgresStorage)
    return {(row[0], row[1]) for row in await store._fetch("SELECT task_id, depends_on FROM task_deps")}


def stop(task: Task, target: TaskStatus = TaskStatus.FAILED) -> DependencyMove:
    return DependencyMove(task_id=task.id, source=TaskStatus.WAITING, target=target, error=BOOM)


async def test_purges_of_finished_tasks_take_their_index_rows(sql_store: Storage, make_task: MakeTask) -> None:
    first, second = make_task(), make_task()
    old = make_task(status=TaskStatus.WAITING, depends_on=(first.id, second.id))
    short = make_task(status=TaskStatus.WAITING, depends_on=(first.id,), result_ttl=0)
    kept = make_task(status=TaskStatus.WAITING, depends_on=(first.id,))
    await sql_store.insert([first, second, old, short, kept])
    assert len(await links(sql_store)) == 4

    await sql_store.move_dependents([stop(old), stop(short, TaskStatus.CANCELLED)])
    assert await sql_store.purge() == 1  # by result TTL
    assert await links(sql_store) == {(old.id, first.id), (old.id, second.id), (kept.id, first.id)}
    later = datetime.now(timezone.utc) + timedelta(minutes=1)
    assert await sql_store.purge(finished_before=later, statuses=[TaskStatus.FAILED]) == 1  # by age and status
    assert await links(sql_store) == {(kept.id, first.id)}
    assert [t.id for t in await sql_store.dependents([first.id, second.id])] == [kept.id]


async def test_a_repeated_dependency_is_indexed_once(sql_store: Storage, make_task: MakeTask) -> None:
    first = make_task()
    twice = make_task(status=TaskStatus.WAITING, depends_on=(first.id, first.id))
    await sql_store.insert([first, twice])
    await sql_store.insert_many(make_task(status=TaskStatus.WAITING, depends_on=(first.id,)), [("a" * 32, b"x")])

    assert await links(sql_store) == {(twice.id, first.id), ("a" * 32, first.id)}
    assert {t.id for t in await sql_store.dependents([first.id])} == {twice.id, "a" * 32}


async def test_sqlite_finds_dependents_by_index_searches(tmp_path: Path) -> None:
    async with SQLiteStorage(f"sqlite:///{tmp_path}/omniq.db"):
        pass
    lookup = "SELECT id FROM tasks WHERE id IN (SELECT task_id FROM task_deps WHERE depends_on IN (?, ?))"
    with sqlite3.connect(tmp_path / "omniq.db") as conn:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {lookup}", ("a", "b"))]
        purge = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN DELETE FROM task_deps WHERE task_id IN (?)", "a")]
    assert not [step for step in plan + purge if step.startswith("SCAN")], plan + purge
    assert any(step.startswith("SEARCH task_deps USING PRIMARY KEY (depends_on=?)") for step in plan)
