"""Bad arguments to the queue's methods are clear ``TypeError`` / ``ValueError``."""

from __future__ import annotations

import pytest

import omniq_nb as omniq

pytestmark = pytest.mark.anyio


def tick() -> int:
    return 1


async def test_bad_arguments_are_clear_errors() -> None:
    async with omniq.AsyncOmniQ(db_url="memory://") as q:
        with pytest.raises(TypeError, match="args=5 must be a tuple"):
            await q.enqueue_call(tick, args=5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"kwargs=.* must be a mapping"):
            await q.enqueue_call(tick, kwargs=[1, 2])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="calls=5 must be an iterable"):
            await q.enqueue_many(tick, 5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="status=5"):
            await q.list(status=5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="not one id"):
            await q.results("abc")
        with pytest.raises(ValueError, match="since='x'"):
            await q.events(since="x")  # type: ignore[arg-type]
