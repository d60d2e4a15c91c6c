"""Promise: a worker paused past its lease can write nothing: the rescuer's outcome stands.

A worker (``SIGSTOP``) holds a task past its short lease; another worker rescues it and runs
it to success; then the paused worker resumes (``SIGCONT``) and finishes its own attempt,
whose late outcome is rejected: the stored status, attempt and result stay the rescuer's.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import harness
from harness import START_WAIT, Processes

from omniq_nb import OmniQ
from omniq_nb.models import TaskResult, TaskStatus
from omniq_nb.storage import open_storage


async def _writes_with(url: str, task_id: str, token: str) -> tuple[list[object], bool, set[str]]:
    """Try every write of a worker holding ``token``: settle, progress, renew; return what was accepted."""
    async with open_storage(url) as store:
        late = TaskResult(task_id=task_id, lease_token=token, status=TaskStatus.FAILED)
        settled = await store.settle([late])
        progressed = await store.progress(task_id=task_id, lease_token=token, done=1, total=2, message="late")
        renewed = await store.renew(leases={task_id: token}, lease=30)
    return settled, progressed, renewed


def test_late_outcome_of_a_resumed_worker_is_rejected(
    procs: Processes, db: Path, url: str, tmp_path: Path, wait_until_sync
) -> None:
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    paused = procs.worker(url, concurrency=1, lease=2)  # renewed every 0.67 s while it runs
    with OmniQ(db_url=url) as q:
        task_id = q.enqueue_call(harness.gated, args=(str(log), str(gate)), retries=1).id
        wait_until_sync(lambda: [r.attempt for r in harness.runs(log)] == [1], timeout=START_WAIT)
        paused.signal(signal.SIGSTOP)
        [(old_token,)] = harness.query(db, "SELECT lease_token FROM tasks")
        rescuer = procs.worker(url, concurrency=1, lease=30)
        wait_until_sync(lambda: rescuer.says(f"task {task_id} attempt 1: its worker's lease ran out"), timeout=60)
        wait_until_sync(lambda: [r.attempt for r in harness.runs(log)] == [1, 2], timeout=60)
        gate.touch()  # both attempts may now end; only the rescuer runs
        wait_until_sync(lambda: q.get(task_id).done(), timeout=60)
        rescued = q.get(task_id).task
        assert (rescued.status, rescued.attempt) == ("succeeded", 2)
        assert q.get(task_id).result(timeout=10) == [2, rescuer.pid]

        assert asyncio.run(_writes_with(url, task_id, old_token)) == ([], False, set())  # fenced at the store

        paused.signal(signal.SIGCONT)
        wait_until_sync(lambda: len(harness.runs(Path(f"{log}.end"))) == 2, timeout=60)  # the late attempt ended
        wait_until_sync(
            lambda: paused.says(f"task {task_id}: (outcome \\S+ discarded, the lease was lost|lease lost)"), timeout=60
        )
        assert paused.terminate() == 0  # its graceful stop hands nothing back either
        after = q.get(task_id).task
        assert (after.status, after.attempt, after.result) == ("succeeded", 2, rescued.result)
        assert q.get(task_id).result(timeout=10) == [2, rescuer.pid]
    assert harness.query(db, "SELECT status, attempt, lease_token FROM tasks") == [("succeeded", 2, None)]
    assert harness.healthy(db) == "ok"
