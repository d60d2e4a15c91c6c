"""Which store a queue opens for a URL, and the errors of bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from emulated_worker import add

from omniq_nb import (
    AsyncOmniQ,
    StorageError,
)

pytestmark = pytest.mark.anyio


async def test_malformed_sqlite_url_raises_storage_error() -> None:
    with pytest.raises(StorageError, match=r"jobs\.db") as info:
        async with AsyncOmniQ(db_url="sqlite://jobs.db"):
            pass
    assert "sqlite:///" in str(info.value)  # shows the right form


async def test_unwritable_path_raises_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = blocker / "sub" / "jobs.db"
    with pytest.raises(StorageError) as info:
        async with AsyncOmniQ(db_url=f"sqlite:///{target}"):
            pass
    assert str(target) in str(info.value)


async def test_default_store_is_sqlite_under_cwd(tmp_path: Path) -> None:
    async with AsyncOmniQ() as q:
        h = await q.enqueue(add, 1)
    assert (tmp_path / ".omniq" / "omniq.db").is_file()
    assert (tmp_path / ".omniq" / "omniq.db").stat().st_mode & 0o077 == 0  # owner-only
    async with AsyncOmniQ() as q:
        assert (await q.get(h.id)).status == "pending"  # it persisted


async def test_relative_sqlite_url_is_relative_to_cwd(tmp_path: Path) -> None:
    async with AsyncOmniQ(db_url="sqlite:///data/jobs.db") as q:
        await q.enqueue(add, 1)
    assert (tmp_path / "data" / "jobs.db").is_file()


async def test_unknown_scheme_raises_storage_error() -> None:
    with pytest.raises(StorageError, match="unknown store URL"):
        AsyncOmniQ(db_url="ftp://me:pw@host/x")
    with pytest.raises(StorageError) as info:
        AsyncOmniQ(db_url="ftp://me:hunter2@host/x")
    assert "hunter2" not in str(info.value)


async def test_loop_property_requires_open() -> None:
    q = AsyncOmniQ(db_url="memory://")
    with pytest.raises(RuntimeError, match="not open"):
        _ = q.loop
    async with q:
        assert q.loop is not None
