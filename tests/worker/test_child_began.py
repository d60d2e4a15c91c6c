"""A child says when it begins each call: only a call that began is lost with its child.

Each test holds the event loop (a blocking wait) while the child answers, begins or dies,
so the parent finds those messages unread, as a busy kernel does; the calls are real, in a
real child process. Found by review: a call killed with its child before it began was failed
as ``WorkerLost``, an answer unread when the child died was lost, and stopping a child for a
call given up on failed the call that began after it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import polling
import pytest
import worker_tasks as wt
from test_child_processes import RESULT_WAIT, plain_call

from omniq_nb.serialization import BlobSerializer
from omniq_nb.worker.calls import Outcome
from omniq_nb.worker.child import ChildProcess

pytestmark = pytest.mark.anyio


def value(serializer: BlobSerializer, outcome: Any) -> Any:
    """Return what a call's outcome holds: its result, or its error's type (or the exception raised)."""
    if isinstance(outcome, BaseException):
        return type(outcome).__name__
    assert isinstance(outcome, Outcome)
    return outcome.error.type.rsplit(".", 1)[-1] if outcome.error else serializer.loads(outcome.result or b"")


def killed(child: ChildProcess, gone: bool = True) -> None:
    """Kill the child with SIGKILL; if ``gone``, wait (holding the loop) until it has exited."""
    os.kill(child._process.pid, signal.SIGKILL)
    if gone:
        child._process.wait(RESULT_WAIT)


@pytest.mark.parametrize("gone", [True, False], ids=["exited", "dying"])
async def test_a_call_sent_after_its_child_died_unseen_runs_elsewhere_and_the_answer_before_counts(
    tmp_path: Path, gone: bool
) -> None:
    """Killed right after it answered, before the parent read it: the answer counts, the next call never began.

    The send of the next call fails (the child is gone) or lands in a socket nobody reads
    (it is dying): either way that call runs elsewhere, on the same attempt.
    """
    serializer, marker = BlobSerializer(), tmp_path / "second"
    child = ChildProcess(None, lambda: None)
    try:
        assert value(serializer, await child.run(*plain_call(serializer, "warm", wt.add, 1, 1))) == 2
        first = asyncio.ensure_future(child.run(*plain_call(serializer, "first", wt.add, 2, 3)))
        await asyncio.sleep(0)  # sent
        polling.wait_until_sync(child._pending, timeout=RESULT_WAIT)  # answered, unread: the loop is held
        killed(child, gone)
        second = asyncio.ensure_future(
            child.run(*plain_call(serializer, "second", wt.sleep_in_process, str(marker), 0))
        )
        outcomes = await asyncio.gather(first, second, return_exceptions=True)
        assert [value(serializer, o) for o in outcomes] == [5, "NotStarted"]
        assert not marker.exists()
    finally:
        child.terminate()


async def test_a_child_stopped_for_a_call_given_up_on_hands_back_the_call_it_began_next(tmp_path: Path) -> None:
    serializer, marker = BlobSerializer(), tmp_path / "second"
    child = ChildProcess(None, lambda: None)
    try:
        first = asyncio.ensure_future(child.run(*plain_call(serializer, "first", wt.pid)))
        second = asyncio.ensure_future(
            child.run(*plain_call(serializer, "second", wt.sleep_in_process, str(marker), 60))
        )
        await asyncio.sleep(0)
        polling.wait_until_sync(marker.exists, timeout=RESULT_WAIT)  # the first answered, the second began: unread
        child.terminate(interrupted=True)  # as for a call given up on just as it ended
        outcomes = await asyncio.gather(first, second, return_exceptions=True)
        assert value(serializer, outcomes[0]) == child._process.pid
        assert value(serializer, outcomes[1]) == "NotStarted"
    finally:
        child.terminate()


async def test_a_child_killed_while_a_call_runs_fails_that_call_and_hands_back_the_next(tmp_path: Path) -> None:
    serializer, marker, next_marker = BlobSerializer(), tmp_path / "first", tmp_path / "second"
    child = ChildProcess(None, lambda: None)
    try:
        first = asyncio.ensure_future(child.run(*plain_call(serializer, "first", wt.sleep_in_process, str(marker), 60)))
        second = asyncio.ensure_future(
            child.run(*plain_call(serializer, "second", wt.sleep_in_process, str(next_marker), 0))
        )
        await asyncio.sleep(0)
        polling.wait_until_sync(marker.exists, timeout=RESULT_WAIT)
        killed(child)
        outcomes = await asyncio.gather(first, second, return_exceptions=True)
        assert [value(serializer, o) for o in outcomes] == ["WorkerLost", "NotStarted"]
        assert not next_marker.exists()
    finally:
        child.terminate()


async def test_a_new_child_that_dies_before_its_first_call_began_fails_that_call() -> None:
    """A child that never answered nor began a call may not start at all: its call fails rather than go round."""
    serializer = BlobSerializer()
    child = ChildProcess(None, lambda: None)
    try:
        os.kill(child._process.pid, signal.SIGSTOP)
        call = asyncio.ensure_future(child.run(*plain_call(serializer, "first", wt.add, 1, 2)))
        await asyncio.sleep(0)
        killed(child)
        assert value(serializer, await call) == "WorkerLost"
    finally:
        child.terminate()
