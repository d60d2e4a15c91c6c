"""Fixtures of the reliability suite (the helpers themselves live in ``harness``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Processes, processes


@pytest.fixture
def procs(tmp_path: Path, wait_until_sync: Callable[..., Any]) -> Iterator[Processes]:
    """Start child processes in ``tmp_path``; every one still alive at teardown is killed."""
    with processes(tmp_path, wait_until_sync) as group:
        yield group


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def url(db: Path) -> str:
    return f"sqlite:///{db}"
