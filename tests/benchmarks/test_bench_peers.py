"""benchmarks/bench_peers.py runs: a smoke run of two workloads prints its table and exits 0.

Nothing here looks at a figure (times depend on the machine); peers that are not installed
are skipped by the benchmark itself, and it says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_peers.py"


def test_a_quick_run_prints_the_table_and_what_it_skipped() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        str(SCRIPT),
        "--quick",
        "--only",
        "round-trip,memory",
        "--samples",
        "5",
        "--submit",
        "200",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("workload"))
    assert header.split() == ["workload", "omniq_nb", "figure", "peer", "figure", "ratio", "target", "verdict"]
    rows = [line.split()[0] for line in lines[lines.index(header) + 2 :] if line.strip()]
    assert {"round-trip", "memory"} <= set(rows)
    assert any(line.startswith("skipped: ") for line in lines)
