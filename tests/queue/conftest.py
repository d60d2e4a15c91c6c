"""Fixtures of the queue tests: an ``AsyncOmniQ`` on memory:// and on a SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from omniq_nb import (
    AsyncOmniQ,
)


@pytest.fixture(params=["memory", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'omniq.db'}"


@pytest.fixture
async def q(db_url: str) -> AsyncIterator[AsyncOmniQ]:
    async with AsyncOmniQ(db_url=db_url) as queue:
        yield queue


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shared.db'}"
