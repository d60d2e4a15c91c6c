"""Child processes for ``kind="process"``: one call at a time, in a fresh interpreter.

Each child gets its payloads as bytes through the importable trampoline ``child_main``,
verifies and unpickles them itself (the parent never unpickles a process call), ignores
SIGINT (a kernel interrupt reaches the whole process group) and exits when the parent dies.
A call may wait in line behind the running one (sent ahead, so the child never waits for
the parent between quick calls); the child answers calls in order, begins the next only after
it sent the answer of the one before, and counts the calls it began where the parent can
read it (``CallsBegun``). So when a child dies, only a call that began is lost; the others
run elsewhere on the same attempt. A timed-out or cancelled call that began has its child
terminated; the calls in line behind it go to another child. A call given up on before it
began is skipped (the child answers ``skipped``); if the skip came too late and the call
began, its child is stopped within ``_SKIP_CHECK``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

from omniq_nb.context import Progress, TaskContext, enter, leave
from omniq_nb.errors import WorkerLost, type_name
from omniq_nb.inputs import Input
from omniq_nb.models import TaskError
from omniq_nb.serialization import BlobSerializer
from omniq_nb.worker.calls import RESULT_LABEL, Call, Outcome, failed, timed_out
from omniq_nb.worker.capture import unrouted
from omniq_nb.worker.child_streams import (
    CallsBegun,
    FromParent,
    OutputBatch,
    ProgressRelay,
    ToParent,
    calls_begun,
    pending_on,
)

_PARENT_CHECK_INTERVAL = 0.5  # seconds between a child's checks that its parent lives
_TERMINATE_GRACE = 1.0  # seconds a terminated child gets before SIGKILL
_PR_SET_PDEATHSIG = 1
_READS_PER_WAKE = 64  # messages taken from a child per wake-up of the loop (a chatty child cannot hold it)
_SKIP_CHECK = 0.005  # seconds between checks that a call asked to be skipped did not begin
_CHILD_ENTRY = "import sys; from omniq_nb.worker.child import child_main; child_main(*map(int, sys.argv[1:4]))"


class NotStarted(Exception):
    """A call's child ended before the call began, or was stopped for another call: run it elsewhere."""


class ChildProcess:
    """One long-lived child process that runs the calls sent to it one after another.

    The child is a fresh interpreter (``python -c`` running ``child_main``), not a
    multiprocessing child: it never re-imports the parent's ``__main__`` (a script without a
    ``__name__`` guard, or a notebook kernel), and gets the parent's ``sys.path``.

    A call may be sent while another runs (``load``): it waits in the socket, so the child
    starts it the moment the first one ends, without waiting for the parent to send it. The
    first call in line (``calls[0]``) is the one running once the child began it; progress and
    output are its.

    Args:
        secret: ``OMNIQ_SECRET``, so the child verifies payloads and signs results itself.
        freed: called whenever calls leave the line (answered, or the child ended).
    """

    def __init__(self, secret: str | None, freed: Callable[[], None]) -> None:
        self._freed = freed
        parent_end, child_end = socket.socketpair()
        with parent_end, child_end, calls_begun() as (self._begun, begun_fd):
            self._process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_ENTRY, str(child_end.fileno()), str(os.getpid()), str(begun_fd)],
                pass_fds=(child_end.fileno(), begun_fd),
                stdin=subprocess.DEVNULL,
            )
            self._conn = Connection(os.dup(parent_end.fileno()))
        os.set_blocking(self._conn.fileno(), True)  # as a plain socketpair's, even where gevent patched socket
        self._conn.send((list(sys.path), secret))
        self._calls: collections.deque[_Sent] = collections.deque()  # sent and not answered, in order
        self._answers = 0  # calls the child answered
        self._ran = 0  # of which ran to an answer (not skipped)
        self._loop = asyncio.get_running_loop()
        self._pending = pending_on(self._conn.fileno())
        self._loop.add_reader(self._conn.fileno(), self._readable)
        self._reading = True

    @property
    def alive(self) -> bool:
        """Return True while the child runs (asks the system: a ``waitpid``)."""
        return self._process.poll() is None

    @property
    def answered(self) -> bool:
        """Return True unless the child was stopped or went silent (seen without asking the system)."""
        return self._reading

    @property
    def load(self) -> int:
        """Return how many calls were sent to the child and not answered yet (the first one runs)."""
        return len(self._calls)

    async def run(self, call: Call, context: TaskContext) -> Outcome:
        """Send one call to the child and wait for its outcome (progress goes to ``context``).

        Raises:
            NotStarted: the child ended before the call began (a child that never answered
                nor began a call fails its first call instead: it may not start at all), or
                was stopped for another call given up on.
            asyncio.CancelledError: the caller was cancelled. If the call began, the child is
                terminated (the calls in line behind it run elsewhere); else it is skipped
                (``_stop_if_begun``).
        """
        try:
            self._conn.send(
                ("run", call.task_id, call.attempt, call.queue, call.run_id, call.payload, call.inputs, call.stored)
            )
        except OSError:  # the child died after it was handed out: the call never reached it
            worked = bool(self._calls or self._answers)
            self._drain()  # what it answered before it died still counts
            self._ended()
            if worked:  # another child runs the call (a child that never started does not loop here)
                raise NotStarted from None
            return self._died(call)
        sent = _Sent(self._loop.create_future(), call, context)
        self._calls.append(sent)
        try:
            return await asyncio.wait_for(sent.outcome, call.timeout)
        except TimeoutError:
            context.cancel()
            self._stop_if_begun(sent)
            return timed_out(call)
        except asyncio.CancelledError:
            self._stop_if_begun(sent)
            raise

    def _stop_if_begun(self, sent: _Sent) -> None:
        """Terminate the child if the call its caller gave up on began; else have the child skip it.

        What the child already sent is read first: the call may have ended (nothing to stop)
        or begun. One not begun is skipped: the child answers ``skipped`` instead of
        beginning it; should the skip come too late, the child is stopped once the call
        began (checked every ``_SKIP_CHECK``).
        """
        first = bool(self._calls) and self._calls[0] is sent  # else ``_take`` checks it once it is first
        self._readable()  # stops the child if this call, first in line, began
        if self._reading and sent in self._calls:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("skip", sent.call.run_id))
            if first:
                self._loop.call_later(_SKIP_CHECK, self._check_skip, sent)

    def _check_skip(self, sent: _Sent) -> None:
        """While a call asked to be skipped is first in line, stop its child once it began it (``_readable``)."""
        if self._reading and self._calls and self._calls[0] is sent:
            self._readable()
            self._loop.call_later(_SKIP_CHECK, self._check_skip, sent)

    def _first_began(self) -> bool:
        """Return whether the child, once ended, had begun the first call left (it began more than it answered)."""
        return self._begun.count > self._ran

    def _died(self, call: Call) -> Outcome:
        code = _wait(self._process)
        error = TaskError(
            type=type_name(WorkerLost),
            message=f"worker lost: the child process running the task exited with code {code}",
            attempt=call.attempt,
        )
        self._stop_reading()
        return Outcome(error=error, raised=(type_name(WorkerLost),))

    def _readable(self) -> None:
        """Take what the child sent; stop it if it began a call given up on (its skip came late)."""
        # A nested loop (nest_asyncio2, while a notebook cell waits) can select the socket again
        # before the callback the outer loop queued has run: the second call then finds the
        # messages already read, and a blocking recv() would hang the kernel.
        began = self._begun.count  # before the messages: a call is counted after the answers before it were sent
        for _ in range(_READS_PER_WAKE):
            if not self._reading or self._conn.closed or not self._pending():
                break
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                self._ended()
                return
            self._take(message)
        else:
            return  # more may wait: the next wake-up (or skip check) decides, with them read
        if self._calls and self._calls[0].outcome.done() and began > self._ran:
            self.terminate(interrupted=True)

    def _take(self, message: tuple[Any, ...]) -> None:
        """Apply one message: progress and output go to the first call's task, an outcome ends it."""
        if not self._calls:
            return  # the child spoke between calls (a thread a task left behind)
        first, kind = self._calls[0], message[0]
        if kind == "progress":
            first.context.report(Progress(*message[1:]))
        elif kind == "output":
            _forward(first.context, message[1])
        else:
            self._calls.popleft()
            self._answers += 1
            self._ran += kind != "skipped"
            if self._calls and self._calls[0].outcome.done():  # given up on in line: it may begin now
                self._loop.call_later(_SKIP_CHECK, self._check_skip, self._calls[0])
            if first.outcome.done():  # its caller gave up on it (cancelled, timed out)
                pass
            elif kind == "skipped":  # (only asked for a call given up on)
                first.outcome.set_exception(NotStarted())
            elif kind == "ok":
                first.outcome.set_result(Outcome(result=message[1]))
            else:
                first.outcome.set_result(Outcome(error=message[1], raised=message[2], retryable=message[3]))
            self._freed()

    def _ended(self, interrupted: bool = False) -> None:
        """The child closed its end: fail the call it began as lost, hand the others back (all, if ``interrupted``).

        A child that never answered nor began a call may not start at all: its first call
        fails, so that no call goes from one such child to the next for ever.
        """
        self._stop_reading()
        lost = not interrupted and (self._first_began() or not self._answers)
        calls, self._calls = self._calls, collections.deque()
        for index, sent in enumerate(calls):
            if not sent.outcome.done():
                if index == 0 and lost:
                    sent.outcome.set_result(self._died(sent.call))
                else:
                    sent.outcome.set_exception(NotStarted())
        if calls:
            self._freed()

    def _stop_reading(self) -> None:
        self._reading = False
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._conn.fileno())

    def terminate(self, interrupted: bool = False) -> None:
        """Stop the child at once (SIGTERM, then SIGKILL after a grace period).

        What it sent before it ended still counts; a call it began fails as lost, unless the
        child was ``interrupted`` for a call given up on: then every call left runs elsewhere
        (``NotStarted``), the one the child began after it too.
        """
        self._stop_reading()
        if self._process.poll() is None:
            self._process.terminate()
            if _wait(self._process) is None:
                self._process.kill()
                _wait(self._process)
        self._drain()
        self._conn.close()
        self._ended(interrupted)

    def _drain(self) -> None:
        """Take what the child sent and the loop has not read yet (it may have ended since)."""
        with contextlib.suppress(OSError, EOFError):
            while not self._conn.closed and self._pending():
                self._take(self._conn.recv())

    def close(self) -> None:
        """Ask an idle child to exit, and make sure it does."""
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(("stop",))
        _wait(self._process)
        self.terminate()


class _Sent(NamedTuple):
    """A call sent to a child: the future of its outcome, the call, and its task's context."""

    outcome: asyncio.Future[Outcome]
    call: Call
    context: TaskContext


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


def child_main(fd: int, parent_pid: int, begun_fd: int) -> None:
    """Run calls sent by the parent until told to stop or the parent dies (the trampoline).

    Args:
        fd: this end of the socket pair shared with the parent.
        parent_pid: the parent's process id, watched so the child never outlives it.
        begun_fd: the file of the count of calls begun (``CallsBegun``).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a kernel interrupt reaches the whole group
    _die_with_parent(parent_pid)
    os.set_blocking(fd, True)  # a gevent worker's socket pair is non-blocking, and a child reads it plainly
    conn = Connection(fd)
    path, secret = conn.recv()
    sys.path[:] = path
    serializer = BlobSerializer(secret)
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            conn.send(message)

    relay, batch, inbox, begun = ProgressRelay(send), OutputBatch(send), FromParent(conn), CallsBegun(begun_fd)
    while (message := inbox.next()) is not None and message[0] != "stop":
        if message[0] == "skip":
            continue  # of a call that began before the skip came (its parent stops this process)
        if inbox.skipped(message[4]):  # ("run", task_id, attempt, queue, run_id, ...)
            send(("skipped",))
        else:
            begun.add()
            send(_run_in_child(serializer, batch, relay, *message[1:]))


def _run_in_child(
    serializer: BlobSerializer,
    batch: OutputBatch,
    relay: ProgressRelay,
    task_id: str,
    attempt: int,
    queue: str,
    run_id: str,
    payload: bytes,
    inputs: dict[str, Input] | None,
    stored: bytes | None,
) -> tuple[Any, ...]:
    token = enter(TaskContext(task_id, attempt, queue, run_id, relay.start_task()))
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = ToParent("stdout", batch), ToParent("stderr", batch)
    try:
        fn, args, kwargs = serializer.load_call(payload, inputs, stored)
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
        return ("ok", serializer.dumps(value, label=RESULT_LABEL))
    except BaseException as exc:
        outcome = failed(exc, attempt)
        return ("error", outcome.error, outcome.raised, outcome.retryable)
    finally:
        sys.stdout, sys.stderr = streams
        batch.flush()  # what it wrote, and its last report, go out before the outcome
        relay.end_task()
        leave(token)


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
