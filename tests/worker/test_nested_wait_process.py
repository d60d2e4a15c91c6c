"""A process pool on a loop that a blocked caller re-enters (nest_asyncio2, as a notebook cell's wait does).

nest_asyncio2 patches asyncio for the whole process, so the scenario runs in a Python of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TASKS = 200
WATCHDOG = 60.0  # seconds the whole run may take at most on a loaded machine (it takes about 1 s)
TESTS = Path(__file__).resolve().parents[1]

SCENARIO = """\
import asyncio, sys
import nest_asyncio2
import worker_tasks as wt
from omniq_nb import AsyncOmniQ, AsyncWorkerPool

async def main(db_url: str, tasks: int) -> None:
    loop = asyncio.get_running_loop()
    nest_asyncio2.apply(loop)
    finished = asyncio.Event()

    async def re_enter() -> None:
        while not finished.is_set():
            loop.run_until_complete(asyncio.sleep(0))  # what a cell's blocking wait does
            await asyncio.sleep(0)

    async with AsyncOmniQ(db_url=db_url, poll_interval=0.05) as q, AsyncWorkerPool(q, concurrency=2, kind="process"):
        nesting = asyncio.ensure_future(re_enter())
        handles = await q.enqueue_many(wt.add, [(i, 1) for i in range(tasks)])
        print(await handles.result(timeout=60) == [i + 1 for i in range(tasks)])
        finished.set()
        await nesting

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_a_loop_re_entered_while_children_answer_never_blocks_on_their_sockets(tmp_path: Path) -> None:
    # A nested loop can select a child's socket again before the callback that the outer loop
    # queued for it has run; the second callback must not block reading a message already read.
    # not under coverage (CI measures subprocesses): tracing the re-entering spin makes a 1 s run take a minute
    env = {name: value for name, value in os.environ.items() if name != "COVERAGE_PROCESS_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCENARIO, f"sqlite:///{tmp_path / 'q.db'}", str(TASKS)],
            env=env,
            capture_output=True,
            text=True,
            timeout=WATCHDOG,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("the loop blocked: a child's socket was read when it had nothing to give") from exc
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"], done.stdout + done.stderr
