"""Fixtures for the notebook tests: real kernels on ipykernel 7 (this Python) and ipykernel 6.

See ``notebook_kernels`` for how a kernel is launched and driven. When
``OMNIQ_TEST_IPYKERNEL6_PYTHON`` is missing the ipykernel-6 tests fail (not skip): CI must
test both majors.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from kernel_shutdown import close_all
from notebook_kernels import IPYKERNEL6_VARIABLE, KERNEL_ENV, STARTUP_TIMEOUT, Kernel, KernelFactory

# read at import: the autouse ``isolated_env`` fixture clears every OMNIQ_* variable before tests run
_IPYKERNEL6_PYTHON = os.environ.get(IPYKERNEL6_VARIABLE)


def _kernel_python(request: pytest.FixtureRequest) -> str:
    if request.param == "ipykernel7":
        return sys.executable
    python = _IPYKERNEL6_PYTHON
    if not python:
        pytest.fail(
            f"{IPYKERNEL6_VARIABLE} is not set: point it at the python of an environment with "
            "ipykernel 6 and omniq_nb installed (the Makefile does); both ipykernel majors must be tested",
            pytrace=False,
        )
    if not os.access(python, os.X_OK):
        pytest.fail(f"{IPYKERNEL6_VARIABLE}={python!r} is not an executable python", pytrace=False)
    return python


@pytest.fixture(params=["ipykernel7", "ipykernel6"])
def kernel_python(request: pytest.FixtureRequest) -> tuple[str, int]:
    """The Python that runs the kernel, and the ipykernel major it must have."""
    return _kernel_python(request), 7 if request.param == "ipykernel7" else 6


@pytest.fixture
def kernel_spec_manager(tmp_path_factory: pytest.TempPathFactory, kernel_python: tuple[str, int]) -> KernelSpecManager:
    """A kernelspec folder holding one spec whose argv runs ``kernel_python``."""
    python, major = kernel_python
    root = tmp_path_factory.mktemp("kernels")
    spec_dir = root / f"omniq-ipykernel{major}"
    spec_dir.mkdir()
    spec = {
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"omniq test ipykernel {major}",
        "language": "python",
        "interrupt_mode": "signal",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(root)], ensure_native_kernel=False)


@pytest.fixture
def start_kernel(
    kernel_spec_manager: KernelSpecManager, kernel_python: tuple[str, int], tmp_path: Path
) -> Iterator[KernelFactory]:
    """Start kernels (cwd ``tmp_path`` unless told; extra env on top of ``KERNEL_ENV``); all shut down after."""
    _, major = kernel_python
    started: list[Kernel] = []

    def start(cwd: Path | None = None, **env: str) -> Kernel:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
        environment.update(KERNEL_ENV)
        environment.update(env)
        environment.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        km = KernelManager(kernel_name=f"omniq-ipykernel{major}", kernel_spec_manager=kernel_spec_manager)
        km.shutdown_wait_time = 15.0
        km.start_kernel(cwd=str(cwd or tmp_path), env=environment)
        kc: BlockingKernelClient = km.client()
        kernel = Kernel(km, kc, cwd or tmp_path, environment)
        started.append(kernel)
        kc.start_channels()
        kc.wait_for_ready(timeout=STARTUP_TIMEOUT)
        found = kernel.value("__import__('ipykernel').version_info[0]")
        assert found == major, f"the kernel runs ipykernel {found}, not {major}"
        return kernel

    try:
        yield start
    finally:
        close_all(started)


@pytest.fixture
def kernel(start_kernel: KernelFactory) -> Kernel:
    """One kernel (ipykernel 7 and 6), cwd a fresh ``tmp_path``, nothing loaded yet."""
    return start_kernel()
