"""The dashboard's "Purge finished" button on a real SQLite store (issue 13: it purged nothing)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pytest
import worker_tasks as wt

from omniq_nb import AsyncOmniQ, AsyncWorkerPool
from omniq_nb.notebook.widgets import Dashboard

pytestmark = pytest.mark.anyio


def purge_button(dashboard: Dashboard) -> widgets.Button:
    controls = dashboard.widget.children[0]
    [button] = [b for b in controls.children if isinstance(b, widgets.Button) and b.description == "Purge finished"]
    return button


async def test_purge_finished_removes_tasks_past_their_result_ttl_and_says_why_when_none_is(
    tmp_path: Path, wait_until: Callable[..., Any]
) -> None:
    path = tmp_path / "dash.db"
    async with AsyncOmniQ(db_url=f"sqlite:///{path}", poll_interval=0.05) as q:
        pool = AsyncWorkerPool(q, concurrency=2, kind="thread")
        await pool.start()
        group = await q.enqueue_many(wt.add, [(1, 1), (2, 2), (3, 3)])
        assert await group.result(timeout=60) == [2, 4, 6]
        await pool.stop()
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("UPDATE tasks SET finished_at = finished_at - 8 * 86400, purge_at = purge_at - 8 * 86400")
        dashboard = Dashboard(q, refresh=60)
        message = dashboard.widget.children[1]
        try:
            purge_button(dashboard).click()
            await wait_until(lambda: "purged" in message.value, timeout=10)
            assert message.value == "purge: purged 3 finished tasks"
            assert await q.list() == []

            await q.enqueue(wt.add, 1, 1)
            message.value = ""
            purge_button(dashboard).click()
            await wait_until(lambda: "purged" in message.value, timeout=10)
            assert "no task has finished yet" in message.value
            assert "%omniq purge --all" in message.value
        finally:
            dashboard.close()
