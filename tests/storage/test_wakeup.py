"""Wake-up hints among the stores on one SQLite file: every other store hears them, the sender does not."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from omniq_nb.storage.wakeup import WakeChannel

pytestmark = pytest.mark.anyio


async def test_a_hint_wakes_the_other_stores_on_the_file_but_not_the_one_that_sent_it(tmp_path: Path) -> None:
    path = str(tmp_path / "q.db")
    sender, other = WakeChannel(path), WakeChannel(path)
    try:
        await sender.wait(0.001)  # each registers at its first wait
        await other.wait(0.001)
        sender.notify()
        with anyio.fail_after(5):
            await other.wait(60)  # returns at the hint, long before its timeout
        assert sender._receiver is not None
        with pytest.raises(BlockingIOError):  # its own writes wake its pools directly: no hint for itself
            sender._receiver.recv(64)
    finally:
        sender.close()
        other.close()
