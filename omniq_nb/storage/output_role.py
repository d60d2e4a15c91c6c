"""The ``TaskOutputStore`` role of a store: what tasks printed or displayed, kept per task within limits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from omniq_nb.models import TaskOutput

__all__ = ["TaskOutputStore"]


class TaskOutputStore(Protocol):
    """What tasks printed or displayed, in chunks, each task's kept within a limit and purged with it."""

    async def append_output(
        self, task_id: str, chunks: Sequence[tuple[str, str]], *, limit_bytes: int, limit_lines: int
    ) -> None:
        """Append ``(stream, text)`` chunks to a task's output, in this order, each with the next ``seq``.

        Afterwards the oldest whole chunks are removed while the task's kept output is over
        ``limit_bytes`` (UTF-8 bytes of ``text``) or ``limit_lines`` (newlines in ``text``; a
        ``display`` chunk counts one line); the newest chunk is always kept. Not fenced on a
        lease: the output of an attempt that lost its lease is still what the task printed.
        Output of a task the store does not have is dropped.
        """
        ...

    async def output(self, task_id: str, *, after: int = 0, limit: int = 1000) -> TaskOutput:
        """Return up to ``limit`` kept chunks of a task with ``seq > after``, oldest first.

        An unknown task has no output (empty, not an error).
        """
        ...
