"""Quick statements on the loop's own thread: they never wait for a lock, never run long, never change an answer."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from omniq_nb.models import Task, TaskStatus
from omniq_nb.storage.sqlite import SQLiteStorage
from omniq_nb.storage.sqlite_inline import _MAX_BYTES, InlineConnection
from omniq_nb.storage.sqlite_schema import JOURNAL_SIZE_LIMIT

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]
LONG = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) SELECT count(*) FROM c"
HOLD_THE_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


async def test_a_write_while_another_process_holds_the_lock_waits_without_freezing_the_loop(
    tmp_path: Path, make_task: MakeTask
) -> None:
    path = tmp_path / "q.db"
    async with (
        SQLiteStorage(f"sqlite:///{path}") as store,
        await anyio.open_process([sys.executable, "-c", HOLD_THE_LOCK, str(path)]) as holder,
    ):
        assert holder.stdout is not None and holder.stdin is not None
        said = b""
        with anyio.fail_after(30):
            while not said.endswith(b"\n"):  # a pipe may hand the line over in pieces
                said += await holder.stdout.receive()
        assert said == b"locked\n"
        task = make_task()
        ticks = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.insert, [task])
            with anyio.fail_after(10):
                while ticks < 20:  # the loop runs on while the insert waits for the lock
                    await anyio.sleep(0.005)
                    ticks += 1
            assert stored_ids(path) == []  # not written yet: the other process holds the lock
            await holder.stdin.send(b"\n")
        stored = await store.get(task.id)
        assert stored is not None and stored.status is TaskStatus.PENDING


async def test_a_duplicate_id_is_refused_whichever_thread_runs_the_insert(tmp_path: Path, make_task: MakeTask) -> None:
    async with SQLiteStorage(f"sqlite:///{tmp_path / 'q.db'}") as store:
        task = make_task()
        await store.insert([task])
        with pytest.raises(ValueError, match="already exists"):
            await store.insert([make_task(id=task.id)])
        assert [t.id for t in await store.list()] == [task.id]


async def test_a_long_statement_gives_the_same_rows_from_the_thread(tmp_path: Path) -> None:
    async with SQLiteStorage(f"sqlite:///{tmp_path / 'q.db'}") as store:
        assert await store._fetch(LONG) == [(300000,)]


def test_the_inline_connection_gives_up_a_long_statement_and_runs_short_ones(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    wal_database(path)
    conn = InlineConnection(str(path), synchronous="NORMAL", triggers=None, quiet=0.0)
    try:
        assert conn.fetch(LONG, ()) is None  # interrupted: the caller runs it on aiosqlite's thread
        assert conn.fetch("SELECT 1 + ?", (1,)) == [(2,)]
        assert conn.fetch("PRAGMA wal_checkpoint(TRUNCATE)", ()) is None  # checkpoints never run inline
        assert conn.fetch("SELECT " + ", ".join("?" * 65), tuple(range(65))) is None  # a batch goes to the thread
        assert conn.fetch("SELECT length(?)", (b"x" * (_MAX_BYTES + 1),)) is None  # so does a large value
        assert conn.fetch("SELECT length(?)", (b"x" * _MAX_BYTES,)) == [(_MAX_BYTES,)]
        # when this connection restarts the log, it shrinks it as the store's own connection would
        assert conn._conn.execute("PRAGMA journal_size_limit").fetchall() == [(JOURNAL_SIZE_LIMIT,)]
    finally:
        conn.close()


def test_only_a_burst_after_a_quiet_spell_runs_inline(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    wal_database(path)
    conn = InlineConnection(str(path), synchronous="NORMAL", triggers=None, quiet=3600.0, burst=3)
    try:
        answers = [conn.fetch("SELECT ?", (i,)) for i in range(5)]
        assert answers == [[(0,)], [(1,)], [(2,)], None, None]  # a busy store keeps using the thread
    finally:
        conn.close()


def wal_database(path: Path) -> None:
    """Create a WAL database file at ``path``, as the store's own connection does before the inline one opens."""
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode = WAL")


def stored_ids(path: Path) -> list[str]:
    """Return the ids in the store's file, read through a connection of its own (a WAL read never waits)."""
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM tasks")]
