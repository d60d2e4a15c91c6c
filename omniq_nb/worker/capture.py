"""Stand-ins for ``sys.stdout`` and ``sys.stderr`` that hand a running task's writes to its context.

A pool that keeps task output (``OUTPUT_LIMIT``), and the notebook's output routing, put them
in place; they count their users and the last one out puts the original streams back. Writes
made outside a task, or by a task whose context takes no output, go to the original stream;
so do a task's writes that no sink took (``TaskContext.output`` returns False).
"""

from __future__ import annotations

import io
import sys
import threading
from typing import Any, TextIO

from omniq_nb.context import current

__all__ = ["RoutedStream", "route_streams", "unrouted", "unroute_streams"]

_lock = threading.Lock()
_users = 0


class RoutedStream(io.TextIOBase):
    """Stands in for ``sys.stdout`` / ``sys.stderr``: a running task's writes go to its context.

    Args:
        name: ``"stdout"`` or ``"stderr"``.
        original: the stream it stands in for (what other writes go to).
    """

    def __init__(self, name: str, original: Any) -> None:
        self._name, self.original = name, original

    def write(self, text: str) -> int:
        """Hand ``text`` to the running task's context, else (or if no sink took it) to the original stream."""
        context = current()
        if context is None or not context.captures_output or not context.output(self._name, text):
            self.original.write(text)
        return len(text)

    def flush(self) -> None:
        """Flush the original stream."""
        self.original.flush()

    def writable(self) -> bool:
        """Return True."""
        return True

    def __getattr__(self, name: str) -> Any:
        """Answer everything else as the original stream does (``encoding``, ``fileno``...)."""
        return getattr(self.original, name)


def route_streams() -> None:
    """Put the stand-ins in place of ``sys.stdout`` and ``sys.stderr`` (counted: undo with ``unroute_streams``)."""
    global _users
    with _lock:
        _users += 1
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if not isinstance(stream, RoutedStream):
                setattr(sys, name, RoutedStream(name, stream))


def unroute_streams() -> None:
    """Undo one ``route_streams``; the last one puts the original streams back."""
    global _users
    with _lock:
        _users = max(0, _users - 1)
        if _users:
            return
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if isinstance(stream, RoutedStream):
                setattr(sys, name, stream.original)


def unrouted(name: str) -> TextIO:
    """Return this process's ``stdout`` or ``stderr`` itself, under any stand-in."""
    stream: Any = getattr(sys, name)
    while isinstance(stream, RoutedStream):
        stream = stream.original
    return stream  # type: ignore[no-any-return]
