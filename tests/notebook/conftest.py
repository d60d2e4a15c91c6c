"""Fixtures for the notebook tests: real kernels on ipykernel 7 (this Python) and ipykernel 6.

See ``kernel_driver`` for how a kernel is launched and driven. A kernel runs in a fresh
``tmp_path``, so its default store ``.omniq/omniq.db`` belongs to one test; a second kernel
started in the same folder shares that store (a "kernel restart" as the user sees it). When
``OMNIQ_TEST_IPYKERNEL6_PYTHON`` is missing the ipykernel-6 tests fail (not skip): CI must
test both majors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from kernel_driver import Kernel, KernelFactory, Kernels, ipykernel_python, write_kernel_spec

KERNEL_ENV = {"OMNIQ_POLL_INTERVAL": "0.05", "OMNIQ_RETRY_BACKOFF": "0.05"}


@pytest.fixture(params=["ipykernel7", "ipykernel6"])
def kernel_python(request: pytest.FixtureRequest) -> tuple[str, int]:
    """The Python that runs the kernel, and the ipykernel major it must have."""
    major = 7 if request.param == "ipykernel7" else 6
    return ipykernel_python(major), major


@pytest.fixture
def kernel_spec_manager(tmp_path_factory: pytest.TempPathFactory, kernel_python: tuple[str, int]) -> KernelSpecManager:
    """A kernelspec folder holding one spec whose argv runs ``kernel_python``."""
    python, major = kernel_python
    return write_kernel_spec(tmp_path_factory.mktemp("kernels"), f"omniq-ipykernel{major}", python)


@pytest.fixture
def start_kernel(
    kernel_spec_manager: KernelSpecManager, kernel_python: tuple[str, int], tmp_path: Path
) -> Iterator[KernelFactory]:
    """Start kernels (cwd ``tmp_path`` unless told; extra env on top of ``KERNEL_ENV``); all shut down after."""
    _, major = kernel_python
    kernels = Kernels(kernel_spec_manager, f"omniq-ipykernel{major}", major, tmp_path, KERNEL_ENV)
    try:
        yield kernels.start
    finally:
        kernels.close()


@pytest.fixture
def kernel(start_kernel: KernelFactory) -> Kernel:
    """One kernel (ipykernel 7 and 6), cwd a fresh ``tmp_path``, nothing loaded yet."""
    return start_kernel()
