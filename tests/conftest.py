"""Shared fixtures: the anyio backend, an isolated environment, and bounded waits.

``wait_until`` and ``wait_until_sync`` are fixtures (not imports) so that no test module
depends on which ``conftest`` module Python happens to have cached.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import anyio
import polling
import pytest
from processes import Processes


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """Leave conftest files to pytest's plugin loading (``--doctest-modules`` would import them by one name)."""
    return True if collection_path.name == "conftest.py" else None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Clear every OMNIQ_* variable and run in an empty folder, so no omniq.yaml or .omniq/ leaks in or out."""
    for name in list(os.environ):
        if name.startswith("OMNIQ_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> Coroutine[Any, Any, None]:
    """Poll ``predicate`` (sync or async) until it is truthy; fail the test after ``timeout`` seconds.

    A plain function returning the coroutine, so the deadline is fixed when it is called.
    """
    return _poll(predicate, time.monotonic() + timeout, timeout)


async def _poll(predicate: Callable[[], Any], deadline: float, limit: float) -> None:
    while True:
        outcome = predicate()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition still false after {limit} s")
        await anyio.sleep(polling.POLL)


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    """Return the bounded async poll: ``await wait_until(lambda: h.done(), timeout=5)``."""
    return _wait_until


@pytest.fixture
def wait_until_sync() -> Callable[..., Any]:
    """Return the bounded blocking poll: ``wait_until_sync(lambda: cond, timeout=5)`` (``polling.wait_until_sync``)."""
    return polling.wait_until_sync


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Processes]:
    """Start ``omniq-nb worker`` and other children in ``tmp_path``; every one still alive is killed after the test."""
    group = Processes(tmp_path, polling.wait_until_sync)
    try:
        yield group
    finally:
        group.close()
