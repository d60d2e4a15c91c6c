"""The streams between a child process and its parent.

A child's progress reports and writes reach its parent in batches, in order, never after
the outcome (``ProgressRelay``, ``OutputBatch``); what the parent sends is read ahead by the
child (``FromParent``), so that a skip of a call in line is seen before the call begins; and
the child counts the calls it began where the parent reads it (``CallsBegun``).
"""

from __future__ import annotations

import collections
import contextlib
import io
import mmap
import os
import select
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

from omniq_nb.context import Progress

PROGRESS_INTERVAL = 0.05  # seconds between progress messages from a child
OUTPUT_INTERVAL = 0.05  # seconds a child holds what a task writes before sending it
OUTPUT_CHARS = 65536  # characters a child sends at once, without waiting for the interval
_COUNT = struct.Struct("=Q")  # the count of calls a child began, in its own byte order (one machine)


class ProgressRelay:
    """Send a child's progress to the parent at most every ``PROGRESS_INTERVAL``.

    One timer thread serves every task the child runs. The latest report of a task is never
    dropped, only delayed, and never sent after that task's outcome: reports are sent under
    the relay's lock, and those of a task that ended (a thread it left behind) are ignored.
    """

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        self._send = send
        self._latest: Progress | None = None
        self._task = 0
        self._lock = threading.Lock()
        self._pending = threading.Event()
        self._timer = threading.Thread(target=self._every_interval, name="omniq-progress", daemon=True)
        self._timer.start()

    def start_task(self) -> Callable[[Progress], None]:
        """Begin a task; return the function its context reports progress with."""
        with self._lock:
            self._task += 1
            return partial(self._report, self._task)

    def end_task(self) -> None:
        """Send the ended task's last report now, and ignore its later ones."""
        with self._lock:
            self._task += 1
            self._flush()

    def _report(self, task: int, progress: Progress) -> None:
        with self._lock:
            if task == self._task:
                self._latest = progress
                self._pending.set()

    def _every_interval(self) -> None:
        while True:
            self._pending.wait()  # an idle child sleeps here
            time.sleep(PROGRESS_INTERVAL)
            with self._lock:
                self._flush()

    def _flush(self) -> None:
        self._pending.clear()
        latest, self._latest = self._latest, None
        if latest is not None:
            self._send(("progress", latest.done, latest.total, latest.message))


class OutputBatch:
    """What a child's task writes, sent to the parent in batches (one message per batch, not per write).

    A batch goes out ``OUTPUT_INTERVAL`` after its first write, at once when it reaches
    ``OUTPUT_CHARS``, and at the task's end (``flush``, before the outcome). Writes to
    one stream in a row are joined; the order of stdout and stderr is kept.
    """

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        self._send = send
        self._parts: list[tuple[str, list[str]]] = []
        self._chars = 0
        self._lock = threading.Lock()
        self._pending = threading.Event()
        threading.Thread(target=self._every_interval, name="omniq-output", daemon=True).start()

    def write(self, name: str, text: str) -> None:
        """Add a write to the batch (from any thread of the task)."""
        with self._lock:
            if self._parts and self._parts[-1][0] == name:
                self._parts[-1][1].append(text)
            else:
                self._parts.append((name, [text]))
            self._chars += len(text)
            if self._chars >= OUTPUT_CHARS:
                self._flush()
            else:
                self._pending.set()

    def flush(self) -> None:
        """Send the batch now."""
        with self._lock:
            self._flush()

    def _every_interval(self) -> None:
        while True:
            self._pending.wait()  # an idle child sleeps here
            time.sleep(OUTPUT_INTERVAL)
            self.flush()

    def _flush(self) -> None:
        self._pending.clear()
        parts, self._parts, self._chars = self._parts, [], 0
        if parts:
            self._send(("output", [(name, "".join(texts)) for name, texts in parts]))


class ToParent(io.TextIOBase):
    """A child's stdout or stderr during a task: writes go to the parent in batches, which routes them."""

    def __init__(self, name: str, batch: OutputBatch) -> None:
        self._name, self._batch = name, batch

    def writable(self) -> bool:
        """Return True: a task may write."""
        return True

    def write(self, text: str) -> int:
        """Add ``text`` to the batch; return its length."""
        if text:
            self._batch.write(self._name, text)
        return len(text)


class FromParent:
    """What the parent sent a child, read ahead: calls (``("run", ..., run_id, ...)``), skips, stop."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._pending = pending_on(conn.fileno())
        self._read: collections.deque[tuple[Any, ...]] = collections.deque()  # taken early, in order

    def next(self) -> tuple[Any, ...] | None:
        """Return the next message, waiting for it (``None``: the parent is gone); read what follows it too."""
        try:
            message = self._read.popleft() if self._read else self._conn.recv()
        except EOFError:
            return None
        return message if self._take_waiting() else None

    def _take_waiting(self) -> bool:
        """Read what the parent has sent so far without waiting; ``False`` once it is gone."""
        try:
            while self._pending():
                self._read.append(self._conn.recv())
        except EOFError:
            return False
        return True

    def skipped(self, run_id: str) -> bool:
        """Return whether the parent asked to skip the call ``run_id`` (taking that skip)."""
        if ("skip", run_id) not in self._read:
            return False
        self._read.remove(("skip", run_id))
        return True


class CallsBegun:
    """How many calls a child began: 8 bytes of a file that parent and child both map; the child counts.

    The parent reads it to tell whether the call first in line began, without a message per
    call: once the child ended (a call it began is lost with it, one it did not runs
    elsewhere), and while a call it asked to be skipped waits. ``calls_begun`` makes one.

    Args:
        fd: the file (the map keeps its own reference: the descriptor may be closed after).
    """

    def __init__(self, fd: int) -> None:
        self._map = mmap.mmap(fd, _COUNT.size)
        self._count = 0

    @property
    def count(self) -> int:
        """Return how many calls the child began so far."""
        return int(_COUNT.unpack_from(self._map)[0])

    def add(self) -> None:
        """Count one more call begun (in the child, just before it begins it)."""
        self._count += 1
        _COUNT.pack_into(self._map, 0, self._count)


@contextlib.contextmanager
def calls_begun() -> Iterator[tuple[CallsBegun, int]]:
    """Yield a new count of calls begun (in the parent) and its file's descriptor, to pass to a child."""
    with tempfile.TemporaryFile() as file:
        os.ftruncate(file.fileno(), _COUNT.size)
        yield CallsBegun(file.fileno()), file.fileno()


def pending_on(fd: int) -> Callable[[], bool]:
    """Return a function that says, without waiting, whether ``fd`` has something to read.

    One ``poll`` system call; ``Connection.poll(0)`` builds a selector each time, which cost
    more than the messages of a quick call.
    """
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return partial(_any, poller.poll, 0)


def _any(poll: Callable[[int], list[tuple[int, int]]], timeout: int) -> bool:
    return bool(poll(timeout))
