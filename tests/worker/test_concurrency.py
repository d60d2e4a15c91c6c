"""A pool never runs more tasks at once than its concurrency, for every kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from pool_helpers import blocking_fn

from omniq_nb import AsyncOmniQ, AsyncWorkerPool, TaskStatus

pytestmark = pytest.mark.anyio

KINDS = ["async", "thread", "process"]
Wait = Callable[..., Any]
RESULT_WAIT = 30.0  # seconds a test waits for a result at most (generous: a loaded 2-core machine)


def max_overlap(folder: Path, names: list[str]) -> int:
    """Return how many of the recorded [start, end] intervals overlapped at most."""
    edges: list[tuple[float, int]] = []
    for name in names:
        edges.append((float((folder / f"{name}.start").read_text()), 1))
        edges.append((float((folder / f"{name}.end").read_text()), -1))
    running = peak = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):  # an end before a start at a tie
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("kind", KINDS)
async def test_concurrency_is_honoured_exactly(q: AsyncOmniQ, tmp_path: Path, kind: str, wait_until: Wait) -> None:
    folder, gate = tmp_path / "runs", tmp_path / "gate"
    names = [f"t{n}" for n in range(6)]
    fn = blocking_fn(kind)
    async with AsyncWorkerPool(q, concurrency=3, kind=kind, lease=5) as pool:
        handles = [await q.enqueue(fn, str(folder), name, str(gate)) for name in names]
        ids = [h.id for h in handles]

        def started() -> int:
            return len(list(folder.glob("*.start"))) if folder.exists() else 0

        await wait_until(lambda: started() >= 3, timeout=RESULT_WAIT)
        counts = await q.storage.count(task_ids=ids)
        assert counts.get(TaskStatus.RUNNING, 0) == 3
        assert counts.get(TaskStatus.PENDING, 0) == 3
        # An observation window (not synchronisation): with a 0.05 s poll the pool goes through
        # many claim cycles here, and must start no fourth task while three hold its slots.
        await anyio.sleep(0.5)
        assert started() == 3
        assert pool.busy == 3
        assert (await q.storage.count(task_ids=ids)).get(TaskStatus.RUNNING, 0) == 3

        gate.touch()
        assert await q.results(ids, timeout=RESULT_WAIT) == names
    assert max_overlap(folder, names) == 3
