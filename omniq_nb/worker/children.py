"""The parent side of ``kind="process"``: long-lived child processes, each fed a short queue of calls.

A child runs its calls one at a time, in the order sent (``child.py``); the parent may send
a call while the one before it still runs, so the child never waits for the parent between
two calls. Calls sent in one turn of the loop travel in one frame; outcomes come back one
frame each, and every frame the socket holds is read at once.

A call's timeout counts from when it is first in its child's line (the call before it
returned). A timed-out, cancelled or dead child fails only the call it was running: calls
queued behind it, which never started, are handed back (``run`` returns ``None``) and the
executor sends them to another child. So are the calls queued behind one that runs longer
than ``_STUCK_AFTER``: nothing waits long behind a slow call while another child is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pickle
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from omniq_nb.context import Progress, TaskContext
from omniq_nb.errors import WorkerLost, type_name
from omniq_nb.models import TaskError
from omniq_nb.worker.calls import Call, Outcome, timed_out
from omniq_nb.worker.capture import unrouted
from omniq_nb.worker.child import CHILD_ENTRY, HEADER, frame

_TERMINATE_GRACE = 1.0  # seconds a terminated child gets before SIGKILL
_READ_SIZE = 1 << 16  # bytes read from a child's socket at once (into one reused buffer: no allocation)
_STUCK_AFTER = 0.25  # seconds a call may run before the calls queued behind it go to another child
_LOW_WATER = 2  # calls a child has in hand (sent to it, outcome not back) below which new ones go at once
_sequence = itertools.count(1)


class _Sent:
    """One call sent to a child: its future outcome (``None``: send it elsewhere), and its time limit."""

    __slots__ = ("abandoned", "call", "context", "future", "message", "seq", "timer")

    def __init__(self, seq: int, call: Call, context: TaskContext, future: asyncio.Future[Outcome | None]) -> None:
        self.seq, self.call, self.context, self.future = seq, call, context, future
        self.message = ("run", seq, call.task_id, call.attempt, call.queue, call.run_id, call.payload, call.inputs)
        self.abandoned = False  # taken back (cancelled, or sent elsewhere): what the child says of it is ignored
        self.timer: asyncio.TimerHandle | None = None


class ChildProcess:
    """One long-lived child process running the calls sent to it, in order.

    The child is a fresh interpreter (``python -c`` running ``child_main``), not a
    multiprocessing child: it never re-imports the parent's ``__main__`` (a script without a
    ``__name__`` guard, or a notebook kernel), and gets the parent's ``sys.path``.

    Args:
        secret: ``OMNIQ_SECRET``, so the child verifies payloads and signs results itself.
        on_idle: called when the child has no call left, or is gone.
    """

    def __init__(self, secret: str | None, on_idle: Callable[[], None] = lambda: None) -> None:
        parent_end, child_end = socket.socketpair()
        with parent_end, child_end:
            self._process = subprocess.Popen(
                [sys.executable, "-c", CHILD_ENTRY, str(child_end.fileno()), str(os.getpid())],
                pass_fds=(child_end.fileno(),),
                stdin=subprocess.DEVNULL,
            )
            self._fd = os.dup(parent_end.fileno())
        os.set_blocking(self._fd, False)
        self._loop = asyncio.get_running_loop()
        self._sent: dict[int, _Sent] = {}  # in the order sent: the first one runs
        self._outbox: list[tuple[object, ...]] = []  # messages for the next frame
        self._held = 0  # calls in the outbox
        self._flushing = False  # a flush is scheduled
        self._received = bytearray()
        self._chunk = bytearray(_READ_SIZE)
        self._on_idle = on_idle
        self._head_since = 0.0  # when the first call in line became first (loop time)
        self._watch: asyncio.TimerHandle | None = None  # checks that calls queued behind it do not wait long
        self.dead = False
        """Set once the child is gone (or being terminated): it takes no more calls."""
        self._writer = _Writer(self._fd, self._loop)
        self._writer.write(frame((list(sys.path), secret)))
        self._loop.add_reader(self._fd, self._readable)

    @property
    def alive(self) -> bool:
        """Return True while the child runs."""
        return not self.dead and self._process.poll() is None

    @property
    def load(self) -> int:
        """Return how many calls the child has to run (the running one too)."""
        return len(self._sent)

    @property
    def stuck(self) -> bool:
        """Return True if the call it runs has run longer than ``_STUCK_AFTER``: queue nothing behind it."""
        return bool(self._sent) and self._loop.time() - self._head_since > _STUCK_AFTER

    async def run(self, call: Call, context: TaskContext) -> Outcome | None:
        """Send one call and wait for its outcome (progress and output go to ``context``).

        Returns:
            The outcome, or ``None`` if the child ended before the call started: send it elsewhere.

        Raises:
            asyncio.CancelledError: the caller was cancelled; a child running the call is terminated.
        """
        if self.dead:
            return None
        seq = next(_sequence)
        sent = _Sent(seq, call, context, self._loop.create_future())
        self._sent[seq] = sent
        self._held += 1
        self._post(sent.message)
        if len(self._sent) == 1:
            self._arm(sent)
        elif self._watch is None:
            self._watch = self._loop.call_at(self._head_since + _STUCK_AFTER, self._unstick)
        try:
            return await sent.future
        except asyncio.CancelledError:
            self._abandon(sent)
            raise

    def _unstick(self) -> None:
        """Send the calls queued behind a call that runs long elsewhere (``run`` returns ``None`` for them)."""
        self._watch = None
        if self.dead or len(self._sent) < 2:
            return
        if not self.stuck:  # the first in line changed since: look again when this one is due
            self._watch = self._loop.call_at(self._head_since + _STUCK_AFTER, self._unstick)
            return
        for sent in list(self._sent.values())[1:]:
            if not sent.abandoned:
                self._withdraw(sent)
                if not sent.future.done():
                    sent.future.set_result(None)

    def _withdraw(self, sent: _Sent) -> None:
        """Take back a call that has not started: dropped if unsent, else skipped (its child exits if it just began).

        A skipped call keeps its place until the child says it skipped it: should the child exit
        because the call had just begun, the call before it is not taken for the one it ran.
        """
        if any(queued is sent.message for queued in self._outbox):
            self._outbox = [queued for queued in self._outbox if queued is not sent.message]
            self._held -= 1
            del self._sent[sent.seq]
        else:
            sent.abandoned = True
            self._post(("skip", sent.seq))

    def _abandon(self, sent: _Sent) -> None:
        """Stop a cancelled call: unsent, it is dropped; waiting in the child, skipped; running, its child ends."""
        if sent.seq not in self._sent:
            return
        if next(iter(self._sent.values())) is sent:
            self.terminate()  # it runs (or is about to): stop it
        else:
            self._withdraw(sent)

    def terminate(self) -> None:
        """Stop the child at once (SIGTERM, then SIGKILL after a grace period); calls it had go elsewhere."""
        self._end()
        if self._process.poll() is None:
            self._process.terminate()
            if _wait(self._process) is None:
                self._process.kill()
                _wait(self._process)

    def close(self) -> None:
        """Ask the child to exit, and make sure it does."""
        if not self.dead:
            self._outbox.append(("stop",))
            self._flush()
            _wait(self._process)
        self.terminate()

    def _post(self, message: tuple[object, ...]) -> None:
        """Queue a message for the child, sent in one frame with the others at the end of this turn of the loop.

        A call waits longer while the child has enough in hand: it goes with the frame sent
        when the child's outcomes bring that below ``_LOW_WATER`` (fewer frames, fewer wake-ups).
        """
        self._outbox.append(message)
        if message[0] != "run" or len(self._sent) - self._held <= _LOW_WATER:
            self._flush_soon()

    def _flush_soon(self) -> None:
        if not self._flushing:
            self._flushing = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        if self._outbox and not self.dead:
            self._writer.write(frame(self._outbox))
        self._outbox, self._held = [], 0

    def _readable(self) -> None:
        """Take every message the socket holds: progress and output go on at once, outcomes end their calls."""
        # A nested loop (nest_asyncio2, while a notebook cell waits) can call this again before
        # the outer loop's call has run: a non-blocking read then finds nothing, and returns.
        eof = False
        while not self.dead:
            try:
                size = os.readv(self._fd, (self._chunk,))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                size = 0
            if not size:
                eof = True
                break
            self._received += memoryview(self._chunk)[:size]
            if size < _READ_SIZE:
                break
        self._take_messages()
        if eof:
            self._lost()

    def _take_messages(self) -> None:
        """Handle every whole frame received (a partial one waits for the rest)."""
        buffer, start = self._received, 0
        self._received = bytearray()  # a nested loop reading meanwhile appends here, after the rest
        while len(buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, start)
            end = start + HEADER.size + size
            if len(buffer) < end:
                break
            self._message(pickle.loads(buffer[start + HEADER.size : end]))
            start = end
        self._received[:0] = buffer[start:]

    def _message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        sent = self._sent.get(message[1])
        if sent is None:
            return
        if kind == "progress" or kind == "output":
            if not sent.abandoned:
                _report(sent.context, kind, message[2:])
            return
        del self._sent[sent.seq]
        if sent.timer is not None:
            sent.timer.cancel()
        if not sent.future.done():
            sent.future.set_result(_outcome(kind, message[2:]))
        if self._sent:
            self._arm(next(iter(self._sent.values())))
        else:
            self._on_idle()
        if self._held and len(self._sent) - self._held <= _LOW_WATER:
            self._flush_soon()

    def _arm(self, sent: _Sent) -> None:
        """Start the time limit of the call now first in line."""
        self._head_since = self._loop.time()
        if sent.call.timeout is not None:
            sent.timer = self._loop.call_later(sent.call.timeout, self._timed_out, sent)

    def _timed_out(self, sent: _Sent) -> None:
        if sent.future.done():
            return
        sent.context.cancel()
        sent.future.set_result(timed_out(sent.call))
        self.terminate()

    def _lost(self) -> None:
        """The child died: the call it ran fails, the ones waiting behind it go elsewhere."""
        code = _wait(self._process)
        running = next(iter(self._sent.values()), None)
        if running is not None and not running.future.done():
            error = TaskError(
                type=type_name(WorkerLost),
                message=f"worker lost: the child process running the task exited with code {code}",
                attempt=running.call.attempt,
            )
            running.future.set_result(Outcome(error=error, raised=(type_name(WorkerLost),)))
        self._end()

    def _end(self) -> None:
        """Take no more calls; hand back the calls still waiting for an outcome."""
        if not self.dead:
            self.dead = True
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._fd)
            self._writer.stop()
            os.close(self._fd)
        if self._watch is not None:
            self._watch.cancel()
        sent, self._sent = self._sent, {}
        self._on_idle()
        for call in sent.values():
            if call.timer is not None:
                call.timer.cancel()
            if not call.future.done():
                call.future.set_result(None)


class _Writer:
    """Writes to a child's non-blocking socket: what it does not take now waits, in order, for it to be writable."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self._fd, self._loop = fd, loop
        self._unwritten = bytearray()

    def write(self, data: bytes) -> None:
        """Write ``data`` after what waits (a child that is gone is seen by the reader, not here)."""
        if self._unwritten:
            self._unwritten += data
            return
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:
            written = 0
        except OSError:
            return
        if written < len(data):
            self._unwritten += data[written:]
            self._loop.add_writer(self._fd, self._writable)

    def stop(self) -> None:
        """Drop what waits (before the socket is closed)."""
        if self._unwritten:
            self._unwritten.clear()
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(self._fd)

    def _writable(self) -> None:
        try:
            written = os.write(self._fd, self._unwritten)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._unwritten)
        del self._unwritten[:written]
        if not self._unwritten:
            self._loop.remove_writer(self._fd)


def _report(context: TaskContext, kind: str, body: tuple[Any, ...]) -> None:
    """Hand a running call's progress report or a batch of its writes to its context."""
    if kind == "progress":
        context.report(Progress(*body))
    else:
        _forward(context, body[0])


def _outcome(kind: str, body: tuple[Any, ...]) -> Outcome | None:
    """Return the outcome a child's message says (``None``: the call was skipped, never run)."""
    if kind == "ok":
        return Outcome(result=body[0])
    if kind == "error":
        error, raised, retryable = body
        return Outcome(error=error, raised=raised, retryable=retryable)
    return None


def _forward(context: TaskContext, batch: list[tuple[str, str]]) -> None:
    """Hand a batch of a child's writes (``[(stream, text), ...]``, in order) to the task's context."""
    for name, text in batch:
        if not context.output(name, text):  # no sink took it: this process's own stream
            unrouted(name).write(text)


def _wait(process: subprocess.Popen[bytes]) -> int | None:
    try:
        return process.wait(_TERMINATE_GRACE)
    except subprocess.TimeoutExpired:
        return None
