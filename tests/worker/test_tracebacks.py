"""The traceback text stored for a failed task: library frames collapsed, the user's kept."""

from __future__ import annotations

import asyncio

from omniq_nb.serialization import BlobSerializer
from omniq_nb.tracebacks import format_task_traceback


def _divide(x: int) -> float:
    return 1 / x  # the user's line


async def _in_a_thread() -> BaseException:
    try:
        await asyncio.get_running_loop().run_in_executor(None, _divide, 0)
    except ZeroDivisionError as exc:
        return exc
    raise AssertionError("no error")


def test_library_frames_between_the_users_collapse_into_one_line() -> None:
    text = format_task_traceback(asyncio.run(_in_a_thread()))
    lines = text.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "  [... 1 library frame hidden ...]" in lines  # concurrent.futures' worker thread
    assert "    return 1 / x  # the user's line" in lines
    assert lines[-1] == "ZeroDivisionError: division by zero"
    assert "concurrent" not in text


def test_each_chained_stack_is_collapsed_and_a_library_only_stack_is_shown_whole() -> None:
    try:
        try:
            BlobSerializer().loads(b"not a blob")
        except Exception as inner:
            raise RuntimeError("could not load") from inner
    except RuntimeError as exc:
        text = format_task_traceback(exc)
    cause, _, effect = text.partition("The above exception was the direct cause of the following exception:")
    assert "serialization.py" not in cause and "[... 2 library frames hidden ...]" in cause
    assert 'raise RuntimeError("could not load") from inner' in effect
    assert effect.rstrip().endswith("RuntimeError: could not load")
    try:
        BlobSerializer().loads(b"not a blob")
    except Exception as exc:
        alone = exc.__traceback__.tb_next  # only omniq_nb's own frames: nothing to collapse them to
        assert alone is not None
        text = format_task_traceback(exc.with_traceback(alone))
    assert "serialization.py" in text and "hidden" not in text
