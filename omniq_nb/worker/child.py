"""The child side of ``kind="process"``: a fresh interpreter that runs the calls its parent sends, in order.

Each child gets its payloads as bytes through the importable trampoline ``child_main``,
verifies and unpickles them itself (the parent never unpickles a process call), ignores
SIGINT (a kernel interrupt reaches the whole process group) and exits when the parent dies.

Calls come in batches (a frame holds every call the parent sent in one turn of its loop) and
may queue up behind the one running: a thread reads them as they come, so the next one starts
as soon as the last ends. Each outcome goes back at once, in order, tagged with its call's
sequence number, as do a running call's output and progress. A call the parent no longer
wants is skipped if it has not started, and the child exits if it has (a cancelled call's
process is terminated). The parent's side is ``children.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import os
import pickle
import queue
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from omniq_nb.context import Progress, TaskContext, enter, leave
from omniq_nb.inputs import Input
from omniq_nb.serialization import BlobSerializer
from omniq_nb.worker.calls import RESULT_LABEL, failed

_CHILD_PROGRESS_INTERVAL = 0.05  # seconds between progress messages from a child
_CHILD_OUTPUT_INTERVAL = 0.05  # seconds a child holds what a task writes before sending it
_CHILD_OUTPUT_CHARS = 65536  # characters a child sends at once, without waiting for the interval
_PARENT_CHECK_INTERVAL = 0.5  # seconds between a child's checks that its parent lives
_PR_SET_PDEATHSIG = 1
CHILD_ENTRY = "import sys; from omniq_nb.worker.child import child_main; child_main(int(sys.argv[1]), int(sys.argv[2]))"
"""The code a child interpreter runs (``python -c``), given its socket's descriptor and its parent's pid."""

HEADER = struct.Struct("!Q")
"""Each message between parent and child: its length, then its pickle."""


def frame(message: Any) -> bytes:
    """Return ``message`` as one frame: its length, then its pickle."""
    body = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def _read_exactly(fd: int, size: int) -> bytes:
    parts, left = [], size
    while left:
        part = os.read(fd, left)
        if not part:
            raise EOFError
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _read_frame(fd: int) -> Any:
    (size,) = HEADER.unpack(_read_exactly(fd, HEADER.size))
    return pickle.loads(_read_exactly(fd, size))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Started:
    """Which call the child runs, and which the parent skipped; shared by the reader thread and the runner."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: int | None = None
        self._skipped: set[int] = set()

    def start(self, seq: int) -> bool:
        """Mark ``seq`` running; return False if the parent skipped it (it must not run)."""
        with self._lock:
            if seq in self._skipped:
                self._skipped.discard(seq)
                return False
            self._running = seq
            return True

    def end(self) -> None:
        """Mark the running call ended (before its outcome is sent: a later skip of it changes nothing)."""
        with self._lock:
            self._running = None

    def skip(self, seq: int) -> None:
        """Skip ``seq`` if it has not started; exit now if it runs (as a terminated child would)."""
        with self._lock:
            if self._running == seq:
                os._exit(1)
            self._skipped.add(seq)


def _read_calls(fd: int, calls: queue.SimpleQueue[tuple[Any, ...] | None], started: _Started) -> None:
    """Take the parent's batches as they come (the reader thread); ``None`` once it says stop or is gone."""
    while True:
        try:
            batch = _read_frame(fd)
        except (EOFError, OSError):
            break
        for message in batch:
            if message[0] == "run":
                calls.put(message[1:])
            elif message[0] == "skip":
                started.skip(message[1])
            else:  # "stop"
                calls.put(None)
                return
    calls.put(None)


def child_main(fd: int, parent_pid: int) -> None:
    """Run calls sent by the parent, in order, until told to stop or the parent dies (the trampoline).

    Args:
        fd: this end of the socket pair shared with the parent.
        parent_pid: the parent's process id, watched so the child never outlives it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a kernel interrupt reaches the whole group
    _die_with_parent(parent_pid)
    os.set_blocking(fd, True)  # a gevent worker's socket pair is non-blocking, and a child reads it plainly
    path, secret = _read_frame(fd)
    sys.path[:] = path
    serializer = BlobSerializer(secret)
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        data = frame(message)
        with send_lock:
            _write_all(fd, data)

    relay = _ProgressRelay(send)
    batch = _OutputBatch(send)
    calls: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
    started = _Started()
    threading.Thread(target=_read_calls, args=(fd, calls, started), name="omniq-calls", daemon=True).start()
    while (call := calls.get()) is not None:
        seq = call[0]
        if not started.start(seq):
            send(("skipped", seq))
            continue
        outcome = _run_in_child(serializer, batch, relay, *call)
        started.end()
        send(outcome)


def _run_in_child(
    serializer: BlobSerializer,
    batch: _OutputBatch,
    relay: _ProgressRelay,
    seq: int,
    task_id: str,
    attempt: int,
    queue: str,
    run_id: str,
    payload: bytes,
    inputs: dict[str, Input] | None,
) -> tuple[Any, ...]:
    token = enter(TaskContext(task_id, attempt, queue, run_id, relay.start_task(seq)))
    batch.seq = seq
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _ToParent("stdout", batch), _ToParent("stderr", batch)
    try:
        fn, args, kwargs = serializer.load_call(payload, inputs)
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
        return ("ok", seq, serializer.dumps(value, label=RESULT_LABEL))
    except BaseException as exc:
        outcome = failed(exc, attempt)
        return ("error", seq, outcome.error, outcome.raised, outcome.retryable)
    finally:
        sys.stdout, sys.stderr = streams
        batch.flush()  # what it wrote, and its last report, go out before the outcome
        relay.end_task()
        leave(token)


class _ProgressRelay:
    """Send a child's progress to the parent at most every ``_CHILD_PROGRESS_INTERVAL``.

    One timer thread serves every task the child runs. The latest report of a task is never
    dropped, only delayed, and never sent after that task's outcome: reports are sent under
    the relay's lock, and those of a task that ended (a thread it left behind) are ignored.
    """

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        self._send = send
        self._latest: Progress | None = None
        self._task: int | None = None  # the running call's sequence number
        self._lock = threading.Lock()
        self._pending = threading.Event()
        self._timer = threading.Thread(target=self._every_interval, name="omniq-progress", daemon=True)
        self._timer.start()

    def start_task(self, seq: int) -> Callable[[Progress], None]:
        """Begin the call ``seq``; return the function its context reports progress with."""
        with self._lock:
            self._task = seq
            return partial(self._report, seq)

    def end_task(self) -> None:
        """Send the ended task's last report now, and ignore its later ones."""
        with self._lock:
            self._flush()
            self._task = None

    def _report(self, task: int, progress: Progress) -> None:
        with self._lock:
            if task == self._task:
                self._latest = progress
                self._pending.set()

    def _every_interval(self) -> None:
        while True:
            self._pending.wait()  # an idle child sleeps here
            time.sleep(_CHILD_PROGRESS_INTERVAL)
            with self._lock:
                self._flush()

    def _flush(self) -> None:
        self._pending.clear()
        latest, self._latest = self._latest, None
        if latest is not None:
            self._send(("progress", self._task, latest.done, latest.total, latest.message))


class _OutputBatch:
    """What a child's task writes, sent to the parent in batches (one message per batch, not per write).

    A batch goes out ``_CHILD_OUTPUT_INTERVAL`` after its first write, at once when it reaches
    ``_CHILD_OUTPUT_CHARS``, and at the task's end (``flush``, before the outcome). Writes to
    one stream in a row are joined; the order of stdout and stderr is kept.
    """

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        self._send = send
        self.seq = 0
        """The sequence number of the call whose writes the batch holds."""
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
            if self._chars >= _CHILD_OUTPUT_CHARS:
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
            time.sleep(_CHILD_OUTPUT_INTERVAL)
            self.flush()

    def _flush(self) -> None:
        self._pending.clear()
        parts, self._parts, self._chars = self._parts, [], 0
        if parts:
            self._send(("output", self.seq, [(name, "".join(texts)) for name, texts in parts]))


class _ToParent(io.TextIOBase):
    """A child's stdout or stderr during a task: writes go to the parent in batches, which routes them."""

    def __init__(self, name: str, batch: _OutputBatch) -> None:
        self._name, self._batch = name, batch

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            self._batch.write(self._name, text)
        return len(text)


async def _awaited(value: Any) -> Any:
    return await value


def _die_with_parent(parent_pid: int) -> None:
    """Exit when the parent dies: a kernel death signal where Linux offers one, and a watchdog."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # it died before the death signal was armed: never start its work
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(_PARENT_CHECK_INTERVAL)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                continue

    threading.Thread(target=watch, name="omniq-parent-watch", daemon=True).start()
