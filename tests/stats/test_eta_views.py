"""Expected durations and ETAs in the views' text, in this process: a real queue, pool and SQLite file.

The kernel tests (``tests/notebook/test_eta_kernel.py``) check the same through a frontend's
eyes; these check the text of ``TaskView`` and ``GroupView`` (their ``str``, the text/plain
repr) quickly. Every wait is bounded polling on a condition.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from omniq_nb import AsyncOmniQ, AsyncWorkerPool, TaskStats
from omniq_nb.building import task_name
from omniq_nb.estimates import seconds_text
from omniq_nb.history import FRESH_FOR_NEW
from omniq_nb.notebook.widgets import GroupView, TaskView

pytestmark = pytest.mark.anyio

Wait = Callable[..., Any]
TIMEOUT = 30.0
_ETA = re.compile(r"ETA (\d+\.\d) s")
ROUNDING = 0.05  # the views print tenths of a second


def expected_text(q: AsyncOmniQ) -> str | None:
    """Return what the views say of ``nap``'s expected duration from the runs ``q`` remembers (``None``: none).

    A loaded machine stretches a 0.3 s nap by tens of milliseconds: the views must quote
    the measured runs, not the nominal nap.
    """
    known = q.history.known(NAP)
    return None if known is None or known.median is None else f"expected ~{seconds_text(known.median)}"


def nap(seconds: float, gate: str | None = None) -> float:
    """Sleep ``seconds``; with a ``gate``, wait (at most 30 s) until that file exists instead."""
    deadline = time.monotonic() + (TIMEOUT if gate else seconds)
    while time.monotonic() < deadline and not (gate and Path(gate).exists()):
        time.sleep(0.01)
    return seconds


NAP = task_name(nap)


async def test_task_view_shows_the_expected_duration_then_a_countdown(tmp_path: Path, wait_until: Wait) -> None:
    gate = tmp_path / "gate"
    async with AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'views.db'}") as q, AsyncWorkerPool(q, concurrency=1):
        for h in [await q.enqueue(nap, 0.4) for _ in range(3)]:
            await h.result(timeout=TIMEOUT)

        running = TaskView(await q.enqueue(nap, 0.4, str(gate)), q)
        waiting = TaskView(await q.enqueue(nap, 0.4), q)  # behind it: one slot only
        await wait_until(lambda: " running " in str(running) and _ETA.search(str(running)), timeout=TIMEOUT)
        text, expected = str(running), expected_text(q)
        assert expected is not None
        known = q.history.known(NAP)
        assert known is not None and known.median is not None and known.p90 is not None
        assert known.count == 3 and known.median >= 0.4, known
        assert expected in text, text
        eta = _ETA.search(text)
        assert eta is not None and 0.0 <= float(eta.group(1)) <= known.median + ROUNDING, text
        assert expected in running._status_html()
        assert str(waiting).endswith(f" pending 0% · {expected}"), str(waiting)

        # past its usual duration without reporting progress: it says so instead of "ETA 0.0 s"
        longer = f"longer than usual (p90 {seconds_text(known.p90)})"
        await wait_until(lambda: longer in str(running), timeout=TIMEOUT)
        assert "ETA" not in str(running)

        gate.touch()
        await wait_until(lambda: running.handle.done() and waiting.handle.done(), timeout=TIMEOUT)
        assert "expected" not in str(running) and "ETA" not in str(running)


async def test_a_new_view_reads_history_written_by_another_queue_moments_ago(tmp_path: Path, wait_until: Wait) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    async with (
        AsyncOmniQ(db_url=url) as writer,
        AsyncOmniQ(db_url=url) as reader,  # no pool: the writer's pool runs the reader's task too
        AsyncWorkerPool(writer, concurrency=2),
    ):
        assert reader.history.known(NAP) is None
        await reader.history.refresh()  # a reading from before the runs: no runs
        assert reader.history.known(NAP) == TaskStats(name=NAP, count=0)
        for h in [await writer.enqueue(nap, 0.3) for _ in range(2)]:
            await h.result(timeout=TIMEOUT)
        await wait_until(lambda: reader.history.stale(FRESH_FOR_NEW), timeout=TIMEOUT)
        assert not reader.history.stale()  # a live view would not read again yet; a new one does

        gate = tmp_path / "gate"
        view = TaskView(await reader.enqueue(nap, 0.3, str(gate)), reader)
        await wait_until(lambda: f"{expected_text(reader)}" in str(view), timeout=TIMEOUT)  # "None": not read yet
        known = reader.history.known(NAP)
        assert known is not None and known.count == 2 and known.median is not None and known.median >= 0.3
        gate.touch()
        await reader.result(view.handle.id, timeout=TIMEOUT)


async def test_group_view_eta_from_expected_durations(tmp_path: Path, wait_until: Wait) -> None:
    async with AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'group.db'}") as q, AsyncWorkerPool(q, concurrency=2):
        for h in [await q.enqueue(nap, 0.3) for _ in range(2)]:
            await h.result(timeout=TIMEOUT)
        group = await q.enqueue_many(nap, [(0.3,)] * 4)
        view = GroupView(group)
        text = str(view)  # nothing finished yet: the ETA comes from history alone
        known = q.history.known(NAP)
        assert known is not None and known.count == 2 and known.median is not None and known.median >= 0.3
        eta = _ETA.search(text)  # shared by the one run seen at a time so far, as nothing has run yet
        assert eta is not None and abs(float(eta.group(1)) - 4 * known.median) <= ROUNDING, text
        await wait_until(lambda: "2 running" in str(view), timeout=TIMEOUT)
        await wait_until(group.done, timeout=TIMEOUT)
        assert str(view) == "4 tasks: 4 succeeded"
        assert "ETA" not in view._summary_html()
