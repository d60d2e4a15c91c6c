"""Fixtures for the widget tests: real ipykernel 7 kernels whose iopub traffic is recorded, CLI workers.

See ``widget_kernels`` for how a kernel is driven and how widget state is rebuilt from
the comm messages, as a frontend would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from kernel_shutdown import close_all
from widget_kernels import Kernel, start_kernel, write_kernel_spec


@pytest.fixture(scope="session")
def widget_kernel_specs(tmp_path_factory: pytest.TempPathFactory) -> KernelSpecManager:
    """A kernelspec folder whose one spec runs this Python's ipykernel."""
    return write_kernel_spec(tmp_path_factory.mktemp("widget-kernels"))


@pytest.fixture
def start_widget_kernel(widget_kernel_specs: KernelSpecManager, tmp_path: Path) -> Iterator[Callable[..., Kernel]]:
    """Start kernels in ``tmp_path`` (extra env as keywords); all are shut down after the test."""
    started: list[Kernel] = []

    def start(**env: str) -> Kernel:
        kernel = start_kernel(widget_kernel_specs, tmp_path, **env)
        started.append(kernel)
        return kernel

    try:
        yield start
    finally:
        close_all(started)


@pytest.fixture
def widget_kernel(start_widget_kernel: Callable[..., Kernel]) -> Kernel:
    """A kernel with ``%load_ext omniq_nb`` done and ``omniq_nb`` imported as ``omniq``."""
    kernel = start_widget_kernel()
    kernel.execute("%load_ext omniq_nb\nimport asyncio, time\nimport omniq_nb as omniq")
    return kernel


@pytest.fixture
def cli_worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``python -m omniq_nb worker`` on the default store of a folder (``tmp_path`` unless ``cwd``).

    That is the store of a kernel started in the same folder. Its output goes to
    ``tmp_path / "worker.log"``; every worker started is stopped at teardown.
    """
    started: list[subprocess.Popen[bytes]] = []

    def start(cwd: Path = tmp_path) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
        env.update(OMNIQ_POLL_INTERVAL="0.05", PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "omniq_nb", "worker", "--db-url", "sqlite:///.omniq/omniq.db"]
        with (tmp_path / "worker.log").open("ab") as log:
            process = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
