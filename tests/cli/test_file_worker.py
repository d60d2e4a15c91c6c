"""Real processes on one file store folder: a script enqueues, ``omniq-nb worker`` runs, ``omniq-nb list`` sees."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import anyio
import pytest
import worker_tasks as wt
from processes import Processes, child_env

from omniq_nb import AsyncOmniQ, TaskFailed, TaskStatus

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ENQUEUE = textwrap.dedent(
    """
    import json, sys
    import omniq_nb as omniq
    import worker_tasks as wt

    with omniq.OmniQ(db_url=sys.argv[1]) as q:
        handles = [q.enqueue(wt.add, n, n) for n in range(10)]
        print(json.dumps([h.id for h in handles]))
    """
)


async def omniq_nb(*args: str) -> str:
    """Run ``python -m omniq_nb ARGS`` in a child process; return its output (it must succeed)."""
    done = await anyio.run_process([sys.executable, "-m", "omniq_nb", *args], env=child_env(), check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


async def test_a_script_enqueues_a_cli_worker_runs_and_list_sees_the_results(
    tmp_path: Path, workers: Processes
) -> None:
    url = f"file://{tmp_path / 'queue'}"
    script = tmp_path / "enqueue.py"
    script.write_text(ENQUEUE)
    enqueued = await anyio.run_process([sys.executable, str(script), url], env=child_env(), check=False)
    assert enqueued.returncode == 0, enqueued.stderr.decode()
    ids = json.loads(enqueued.stdout)

    worker = workers.worker(url, concurrency=4, lease=5)
    async with AsyncOmniQ(db_url=url, poll_interval=0.05) as q:
        results = [await (await q.get(task_id)).result(timeout=60) for task_id in ids]
        assert results == [2 * n for n in range(10)]
        done = await q.storage.get_many(ids)
        assert {(t.status, t.attempt) for t in done} == {(TaskStatus.SUCCEEDED, 1)}
        assert [w.pid for w in await q.workers()] == [worker.pid]

    listed = await omniq_nb("list", "--db-url", url)
    for task_id in ids:
        [line] = [line for line in listed.splitlines() if line.startswith(task_id)]
        assert "succeeded" in line
    assert worker.alive()


async def test_a_task_enqueued_here_runs_on_a_cli_worker_and_its_failure_reads_back(
    tmp_path: Path, workers: Processes
) -> None:
    url = f"file://{tmp_path / 'queue'}"
    async with AsyncOmniQ(db_url=url, poll_interval=0.05) as q:
        workers.worker(url, concurrency=2, lease=5)
        ok = await q.enqueue(wt.async_add, 20, 22)
        bad = await q.enqueue(wt.raise_value_error, "boom from the file store")
        assert await ok.result(timeout=60) == 42
        with pytest.raises(TaskFailed, match="boom from the file store"):
            await bad.result(timeout=60)
    shown = await omniq_nb("show", "--db-url", url, bad.id)
    assert "failed" in shown and "boom from the file store" in shown
