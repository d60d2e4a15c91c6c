"""Each server store's driver is an optional extra: importing omniq_nb never imports it, and a
store whose driver is missing says which extra to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from omniq_nb.errors import NotSupported

ROOT = Path(__file__).resolve().parents[2]

# (a URL of the store, the driver modules it needs, the extra that installs them)
DRIVERS = [
    pytest.param("postgresql://u@h/db", ("psycopg", "psycopg_pool"), "postgres", id="postgres"),
    pytest.param("redis://h:6379/0", ("redis",), "redis", id="redis"),
    pytest.param("nats://h:4222", ("nats",), "nats", id="nats"),
]


def run(script: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("url", "modules", "extra"), DRIVERS)
def test_without_its_driver_the_error_says_what_to_install(url: str, modules: tuple[str, ...], extra: str) -> None:
    hidden = "".join(f"sys.modules[{module!r}] = None\n" for module in modules)
    script = (
        f"import sys\n{hidden}"
        "import omniq_nb\n"
        "from omniq_nb.storage import open_storage\n"
        "try:\n"
        f"    open_storage({url!r})\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = run(script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(NotSupported.__name__)
    assert f"pip install 'omniq-nb[{extra}]'" in out.stdout


@pytest.mark.parametrize(("url", "modules", "extra"), DRIVERS)
def test_importing_omniq_nb_does_not_import_the_driver(url: str, modules: tuple[str, ...], extra: str) -> None:
    out = run(f"import sys, omniq_nb, omniq_nb.storage, omniq_nb.cli; print({modules[0]!r} in sys.modules)")
    assert out.stdout == "False\n", out.stderr
