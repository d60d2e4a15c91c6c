"""``run()`` of both pools serves until SIGINT or SIGTERM, then stops gracefully (``serve_until_signal``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_SCRIPTS = {
    "sync": """
        import omniq_nb as omniq
        with omniq.OmniQ(db_url="memory://") as q:
            pool = omniq.WorkerPool(q, concurrency=1, kind="thread")
            q.enqueue(print, "serving", flush=True)  # runs once the pool serves, signals caught
            pool.run()
            print("stopped", pool.running, flush=True)
    """,
    "async": """
        import asyncio
        import omniq_nb as omniq
        async def main() -> None:
            async with omniq.AsyncOmniQ(db_url="memory://") as q:
                pool = omniq.AsyncWorkerPool(q, concurrency=1, kind="thread")
                await q.enqueue(print, "serving", flush=True)
                await pool.run()
                print("stopped", pool.running, flush=True)
        asyncio.run(main())
    """,
}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("twin", sorted(_SCRIPTS))
def test_run_stops_gracefully_on_a_signal(tmp_path: Path, twin: str, sig: signal.Signals) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_SCRIPTS[twin])], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "serving"
        process.send_signal(sig)
        out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0
    assert out.strip() == "stopped False"
