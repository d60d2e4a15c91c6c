"""How a child process's progress reports and writes reach its parent: in batches, in order, never after the outcome."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from omniq_nb.context import Progress

PROGRESS_INTERVAL = 0.05  # seconds between progress messages from a child
OUTPUT_INTERVAL = 0.05  # seconds a child holds what a task writes before sending it
OUTPUT_CHARS = 65536  # characters a child sends at once, without waiting for the interval


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
