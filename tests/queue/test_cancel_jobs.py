"""``cancel_and_wait``: a background job that swallows a cancel (as nats-py's ``wait_for`` can) still ends."""

from __future__ import annotations

import asyncio

import pytest

from omniq_nb.jobs import cancel_and_wait

pytestmark = pytest.mark.anyio


async def test_a_job_that_swallows_its_first_cancels_is_cancelled_again_until_it_ends() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed == 2:
                    raise
                swallowed += 1  # a store call that returns as if nothing happened

    job = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)
    assert await cancel_and_wait([job], within=30, patience=0.01, every=0.01)
    assert job.cancelled() and swallowed == 2


async def test_a_job_that_never_ends_is_reported_and_left_running() -> None:
    release = asyncio.Event()

    async def deaf() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    jobs = [asyncio.ensure_future(deaf()), asyncio.ensure_future(asyncio.sleep(3600))]
    await asyncio.sleep(0)
    assert not await cancel_and_wait(jobs, within=0.1, patience=0.01, every=0.01)
    assert not jobs[0].done() and jobs[1].cancelled()
    release.set()
    jobs[0].cancel()
    await asyncio.wait_for(jobs[0], timeout=10)


async def test_no_jobs_or_finished_ones_return_at_once() -> None:
    done = asyncio.ensure_future(asyncio.sleep(0))
    await done
    assert await cancel_and_wait([], within=0)
    assert await cancel_and_wait([done], within=0)


async def test_a_job_gets_its_patience_to_clean_up_before_the_cancel_is_repeated() -> None:
    cleaned = asyncio.Event()

    async def tidy() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.2)  # a rollback, say: a repeated cancel would cut it short
            cleaned.set()

    job = asyncio.ensure_future(tidy())
    await asyncio.sleep(0)
    assert await cancel_and_wait([job], within=30, patience=5, every=0.01)
    assert cleaned.is_set()
