"""A queue with its results and events in stores of their own, shared by a kernel-less queue here,
a CLI worker process configured by environment, and ``omniq-nb show`` configured by flags."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import worker_tasks as wt
from postgres_server import POSTGRES_URL, postgres_schema
from processes import Processes

from omniq_nb import AsyncOmniQ, EventKind
from omniq_nb.storage.split import SplitStorage
from omniq_nb.storage.split_base import kept_token

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.slow]

RUN_WAIT = 60


@pytest.fixture(params=["queue-and-events-in-postgres", "results-in-postgres"])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(queue, results, events): the issue's mixed stores, and the reverse."""
    sqlite = f"sqlite:///{tmp_path / 'omniq.db'}"
    with postgres_schema() as schema:
        postgres = f"{POSTGRES_URL}?schema={schema}"
        if request.param == "queue-and-events-in-postgres":
            yield postgres, f"sqlite:///{tmp_path / 'results.db'}", postgres
        else:
            yield sqlite, postgres, sqlite


def show(workers: Processes, task_id: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omniq_nb", "show", *flags, task_id],
        capture_output=True,
        text=True,
        timeout=RUN_WAIT,
        env=workers.env(),
        stdin=subprocess.DEVNULL,
    )


async def test_a_script_and_a_cli_worker_agree_on_every_result_in_mixed_stores(
    urls: tuple[str, str, str], workers: Processes
) -> None:
    queue_url, result_url, events_url = urls
    async with AsyncOmniQ(db_url=queue_url, result_url=result_url, events_url=events_url, poll_interval=0.05) as q:
        workers.worker(queue_url, OMNIQ_RESULT_URL=result_url, OMNIQ_EVENTS_URL=events_url)
        one = await q.enqueue(wt.add, 1, 2)
        many = await q.enqueue_many(wt.add, [(n, n) for n in range(20)])
        assert await one.result(timeout=RUN_WAIT) == 3
        assert await many.result(timeout=RUN_WAIT) == [2 * n for n in range(20)]
        history = sorted(await q.events(task_id=one.id), key=lambda e: e.at)  # appended by two processes
        assert [e.kind for e in history] == [EventKind.ENQUEUED, EventKind.STARTED, EventKind.SUCCEEDED]

        split = q.storage
        assert isinstance(split, SplitStorage) and split.results is not None
        rows = await split.queue.get_many([one.id, *many.ids])
        tokens = [kept_token(row.result) for row in rows]
        assert len(rows) == 21 and all(tokens)  # the queue holds marks, not values
        kept = await split.results.kept_results(
            [(row.id, token or "") for row, token in zip(rows, tokens, strict=True)]
        )
        assert len(kept) == 21
        assert await split.queue.events() == [] if split.events_store is not None else True

    shown = show(workers, one.id, "--db-url", queue_url, "--result-url", result_url)
    assert shown.returncode == 0, shown.stderr
    assert "result" in shown.stdout and shown.stdout.split("result", 1)[1].split()[0] == "3"
    lost = show(workers, one.id, "--db-url", queue_url)
    assert lost.returncode == 2
    assert "kept in a separate result store" in lost.stderr and "--result-url" in lost.stderr


async def test_results_and_events_in_a_local_folder_are_shared_by_a_cli_worker_and_this_process(
    tmp_path: Path, workers: Processes, wait_until: Callable[..., Any]
) -> None:
    queue_url, folder = f"sqlite:///{tmp_path / 'queue.db'}", f"file://{tmp_path / 'outcomes'}"
    async with AsyncOmniQ(db_url=queue_url, result_url=folder, events_url=folder, poll_interval=0.05) as q:
        workers.worker(queue_url, OMNIQ_RESULT_URL=folder, OMNIQ_EVENTS_URL=folder)
        many = await q.enqueue_many(wt.add, [(n, 1) for n in range(10)])
        assert await many.result(timeout=RUN_WAIT) == [n + 1 for n in range(10)]
        first = many.ids[0]

        async def all_events_shown() -> bool:  # events show after the store's lag (1 s by default)
            kinds = {e.kind for e in await q.events(task_id=first)}
            return kinds == {EventKind.ENQUEUED, EventKind.STARTED, EventKind.SUCCEEDED}

        await wait_until(all_events_shown, timeout=RUN_WAIT)
    kept = list((tmp_path / "outcomes" / "results").iterdir())
    assert sorted(p.name for p in kept) == sorted(many.ids)  # one folder of kept results per task
