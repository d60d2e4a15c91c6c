"""Fixtures for the widget tests: real ipykernel 7 kernels whose iopub traffic is recorded, CLI workers.

See ``kernel_driver`` for how a kernel is driven and how widget state is rebuilt from
the comm messages, as a frontend would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from kernel_driver import Kernel, KernelFactory, Kernels, kernel_environment, write_kernel_spec
from processes import Child, Processes

KERNEL_ENV = {"OMNIQ_POLL_INTERVAL": "0.05"}
_SPEC = "omniq-widgets-test"


@pytest.fixture(scope="session")
def widget_kernel_specs(tmp_path_factory: pytest.TempPathFactory) -> KernelSpecManager:
    """A kernelspec folder whose one spec runs this Python's ipykernel."""
    return write_kernel_spec(tmp_path_factory.mktemp("widget-kernels"), _SPEC)


@pytest.fixture
def start_widget_kernel(widget_kernel_specs: KernelSpecManager, tmp_path: Path) -> Iterator[KernelFactory]:
    """Start kernels in ``tmp_path`` (extra env as keywords); all are shut down after the test."""
    kernels = Kernels(widget_kernel_specs, _SPEC, 7, tmp_path, KERNEL_ENV)
    try:
        yield kernels.start
    finally:
        kernels.close()


@pytest.fixture
def widget_kernel(start_widget_kernel: KernelFactory) -> Kernel:
    """A kernel with ``%load_ext omniq_nb`` done and ``omniq_nb`` imported as ``omniq``."""
    kernel = start_widget_kernel()
    kernel.run("%load_ext omniq_nb\nimport asyncio, time\nimport omniq_nb as omniq")
    return kernel


@pytest.fixture
def cli_worker(tmp_path: Path, wait_until_sync: Callable[..., Any]) -> Iterator[Callable[..., Child]]:
    """Start ``python -m omniq_nb worker`` on the default store of a folder (``tmp_path`` unless ``cwd``).

    That is the store of a kernel started in the same folder. It gets the kernels' environment;
    its output goes to ``tmp_path / "worker-N.log"`` (``worker.text()``); every worker started is
    killed at teardown. The test waits for what it needs of the worker itself.
    """
    workers = Processes(tmp_path, wait_until_sync)

    def start(cwd: Path = tmp_path) -> Child:
        env = kernel_environment({**KERNEL_ENV, "PYTHONUNBUFFERED": "1"})
        args = ["-m", "omniq_nb", "worker", "--db-url", "sqlite:///.omniq/omniq.db"]
        return workers.start(args, name="worker", env=env, cwd=cwd)

    try:
        yield start
    finally:
        workers.close()
