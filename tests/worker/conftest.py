"""Fixtures of the in-process pool tests: an ``AsyncOmniQ`` on a SQLite file with short poll and backoff.

Task functions live in ``worker_tasks`` (importable by the child processes of process pools).
Tests synchronise on conditions (files written by tasks, stored statuses) with bounded waits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from omniq_nb import AsyncOmniQ


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'omniq.db'}"


@pytest.fixture
async def q(db_url: str) -> AsyncIterator[AsyncOmniQ]:
    async with AsyncOmniQ(db_url=db_url, retry_backoff=0.05, poll_interval=0.05) as queue:
        yield queue
