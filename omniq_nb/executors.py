"""Where one attempt's code runs: on the loop (async), on a thread, or in a child process.

Every executor turns one claimed task into an ``Attempt`` (the serialized result, or the
error) and enforces the task's timeout its own way: async code is cancelled, a child
process is terminated, a thread cannot be killed, so it is flagged (``current().cancelled``)
and left to finish while its task is failed. Child processes are fresh interpreters that get
each payload as bytes through the importable trampoline ``child_main``, ignore SIGINT (a
kernel interrupt reaches the whole process group) and exit when the parent process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from omniq_nb.context import Progress, TaskContext, enter, leave
from omniq_nb.errors import SignatureError, TaskTimeout, WorkerLost, type_name
from omniq_nb.models import TaskError
from omniq_nb.policy import describe_exception
from omniq_nb.serialization import BlobSerializer
from omniq_nb.threads import TaskThreads

_CHILD_PROGRESS_INTERVAL = 0.05  # seconds between progress messages from a child
_PARENT_CHECK_INTERVAL = 0.5  # seconds between a child's checks that its parent lives
_TERMINATE_GRACE = 1.0  # seconds a terminated child gets before SIGKILL
_PR_SET_PDEATHSIG = 1
_RESULT = "the task's result"  # names the value in a serialization error
_CHILD_ENTRY = "import sys; from omniq_nb.executors import child_main; child_main(int(sys.argv[1]), int(sys.argv[2]))"


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """How one attempt ended: a serialized result, or an error (retryable or not)."""

    result: bytes | None = None
    error: TaskError | None = None
    raised: tuple[str, ...] = ()
    retryable: bool = True


class Call(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt to run: the task's identity, its payload and its time limit."""

    task_id: str
    attempt: int
    queue: str
    run_id: str
    payload: bytes
    timeout: float | None


def timed_out(call: Call) -> Attempt:
    """Return the attempt of a task stopped for running longer than its timeout."""
    error = TaskError(
        type=type_name(TaskTimeout),
        message=f"the task timed out after {call.timeout:g} s",
        attempt=call.attempt,
    )
    return Attempt(error=error, raised=(type_name(TaskTimeout),))


def failed(exc: BaseException, attempt: int) -> Attempt:
    """Return the attempt of a task that raised ``exc`` (a bad signature is not retried)."""
    error, raised = describe_exception(exc, attempt)
    return Attempt(error=error, raised=raised, retryable=not isinstance(exc, SignatureError))


class LocalExecutor:
    """Run tasks in this process: coroutine functions on the loop, others on threads or inline.

    Args:
        serializer: verifies and loads payloads, serializes results.
        threads: the thread pool for sync functions, or ``None`` to call them on the loop
            (``kind="async"``: only for quick functions, since they block the loop).
    """

    def __init__(self, serializer: BlobSerializer, threads: TaskThreads[Attempt] | None) -> None:
        self._serializer = serializer
        self._threads = threads

    def runs_on_loop(self, payload: bytes) -> bool:
        """Return True when the payload's callable is a coroutine function (it runs on the loop).

        Raises:
            SignatureError: the payload's signature does not verify.
        """
        fn, _, _ = self._serializer.load_call(payload)
        return inspect.iscoroutinefunction(fn)

    async def run(self, call: Call, context: TaskContext, keep_slot: Callable[[], Callable[[], None]]) -> Attempt:
        """Run one attempt and return how it ended.

        Args:
            call: the attempt.
            context: the task as seen from inside it.
            keep_slot: called when the attempt starts a thread, which cannot be stopped and may
                outlive the attempt (a time-out, a cancel): the pool keeps the attempt's slot
                taken until the function it returns is called, when the thread is done.
        """
        try:
            fn, args, kwargs = self._serializer.load_call(call.payload)
        except Exception as exc:
            return failed(exc, call.attempt)
        if inspect.iscoroutinefunction(fn) or self._threads is None:
            return await self._on_loop(fn, args, kwargs, call, context, keep_slot)
        return await self._on_thread(fn, args, kwargs, call, context, keep_slot)

    async def _on_loop(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        call: Call,
        context: TaskContext,
        keep_slot: Callable[[], Callable[[], None]],
    ) -> Attempt:
        token = enter(context)
        try:
            value = fn(*args, **kwargs)
            if inspect.isawaitable(value) and call.timeout is None:
                value = await value
            elif inspect.isawaitable(value):
                running = asyncio.ensure_future(value)
                if not await _finished_in_time(running, call.timeout):
                    context.cancel()
                    release = keep_slot()  # its cancelled code may still be cleaning up: keep the slot
                    running.add_done_callback(lambda _: release())
                    return timed_out(call)
                value = running.result()  # the task's own exceptions, TimeoutError included
            return Attempt(result=self._serializer.dumps(value, label=_RESULT))
        except BaseException as exc:  # sys.exit(), an interrupt, a cancel the task met on its own: it fails
            if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                raise  # the attempt itself is being stopped
            return failed(exc, call.attempt)
        finally:
            leave(token)

    async def _on_thread(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        call: Call,
        context: TaskContext,
        keep_slot: Callable[[], Callable[[], None]],
    ) -> Attempt:
        def work() -> Attempt:
            token = enter(context)
            try:
                return Attempt(result=self._serializer.dumps(fn(*args, **kwargs), label=_RESULT))
            except BaseException as exc:  # SystemExit too: a thread has no process to end
                return failed(exc, call.attempt)
            finally:
                leave(token)

        assert self._threads is not None
        running = self._threads.submit(work, keep_slot())
        try:
            if call.timeout is None:
                return await running
            if not await _finished_in_time(running, call.timeout):
                context.cancel()
                return timed_out(call)
            return running.result()
        except asyncio.CancelledError:
            context.cancel()
            raise


def _being_cancelled() -> bool:
    """Return True when the running asyncio task itself was asked to stop."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _finished_in_time(future: asyncio.Future[Any], timeout: float | None) -> bool:
    """Wait for ``future`` up to ``timeout``; on time-out cancel it and return False.

    Unlike ``wait_for``, this never mistakes a ``TimeoutError`` raised by the task for its own.
    """
    try:
        done, _ = await asyncio.wait({future}, timeout=timeout)
    except asyncio.CancelledError:
        future.cancel()  # the attempt was abandoned: stop the task too (a thread only loses its waiter)
        raise
    if done:
        return True
    future.cancel()
    return False


class ChildProcess:
    """One long-lived child process that runs attempts sent to it, one at a time.

    The child is a fresh interpreter (``python -c`` running ``child_main``), not a
    multiprocessing child: it never re-imports the parent's ``__main__`` (a script without a
    ``__name__`` guard, or a notebook kernel), and gets the parent's ``sys.path``.

    Args:
        secret: ``OMNIQ_SECRET``, so the child verifies payloads and signs results itself.
    """

    def __init__(self, secret: str | None) -> None:
        parent_end, child_end = socket.socketpair()
        with parent_end, child_end:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_ENTRY, str(child_end.fileno()), str(os.getpid())],
                pass_fds=(child_end.fileno(),),
                stdin=subprocess.DEVNULL,
            )
            self._conn = Connection(os.dup(parent_end.fileno()))
        self._conn.send((list(sys.path), secret))
        self._messages: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._conn.fileno(), self._readable)

    @property
    def alive(self) -> bool:
        """Return True while the child runs."""
        return self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """Return the child's process id."""
        return self._process.pid

    async def run(self, call: Call, context: TaskContext) -> Attempt:
        """Send one attempt to the child and wait for its outcome (progress goes to ``context``).

        Raises:
            asyncio.CancelledError: the caller was cancelled; the child is then terminated.
        """
        try:
            self._conn.send(("run", call.task_id, call.attempt, call.queue, call.run_id, call.payload))
        except OSError:  # the child died after it was handed out
            return self._died(call)
        deadline = None if call.timeout is None else time.monotonic() + call.timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                message = await asyncio.wait_for(self._messages.get(), left)
            except TimeoutError:
                context.cancel()
                self.terminate()
                return timed_out(call)
            except asyncio.CancelledError:
                self.terminate()
                raise
            kind = message[0]
            if kind == "progress":
                context.report(Progress(*message[1:]))
            elif kind == "output":
                context.output(message[1], message[2])
            elif kind == "ok":
                return Attempt(result=message[1])
            elif kind == "error":
                return Attempt(error=message[1], raised=message[2], retryable=message[3])
            else:  # "eof": the child died
                return self._died(call)

    def _died(self, call: Call) -> Attempt:
        code = _wait(self._process)
        error = TaskError(
            type=type_name(WorkerLost),
            message=f"worker lost: the child process running the task exited with code {code}",
            attempt=call.attempt,
        )
        self._stop_reading()
        return Attempt(error=error, raised=(type_name(WorkerLost),))

    def _readable(self) -> None:
        try:
            message = self._conn.recv()
        except (EOFError, OSError):
            self._stop_reading()
            message = ("eof",)
        self._messages.put_nowait(message)

    def _stop_reading(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._conn.fileno())

    def terminate(self) -> None:
        """Stop the child at once (SIGTERM, then SIGKILL after a grace period)."""
        self._stop_reading()
        if self._process.poll() is None:
            self._process.terminate()
            if _wait(self._process) is None:
                self._process.kill()
                _wait(self._process)
        self._conn.close()

    def close(self) -> None:
        """Ask an idle child to exit, and make sure it does."""
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(("stop",))
        _wait(self._process)
        self.terminate()


def _wait(process: subprocess.Popen[bytes]) -> int | None:
    try:
        return process.wait(_TERMINATE_GRACE)
    except subprocess.TimeoutExpired:
        return None


def child_main(fd: int, parent_pid: int) -> None:
    """Run attempts sent by the parent until told to stop or the parent dies (the trampoline).

    Args:
        fd: this end of the socket pair shared with the parent.
        parent_pid: the parent's process id, watched so the child never outlives it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a kernel interrupt reaches the whole group
    _die_with_parent(parent_pid)
    conn = Connection(fd)
    path, secret = conn.recv()
    sys.path[:] = path
    serializer = BlobSerializer(secret)
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            conn.send(message)

    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message[0] == "stop":
            return
        _, task_id, attempt, queue, run_id, payload = message
        send(_run_in_child(serializer, send, task_id, attempt, queue, run_id, payload))


def _run_in_child(
    serializer: BlobSerializer,
    send: Callable[[tuple[Any, ...]], None],
    task_id: str,
    attempt: int,
    queue: str,
    run_id: str,
    payload: bytes,
) -> tuple[Any, ...]:
    reports = _ProgressRelay(send)
    token = enter(TaskContext(task_id, attempt, queue, run_id, reports.report))
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _ToParent("stdout", send), _ToParent("stderr", send)
    try:
        fn, args, kwargs = serializer.load_call(payload)
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
        return ("ok", serializer.dumps(value, label=_RESULT))
    except BaseException as exc:
        outcome = failed(exc, attempt)
        return ("error", outcome.error, outcome.raised, outcome.retryable)
    finally:
        sys.stdout, sys.stderr = streams
        reports.close()  # the last report goes out before the outcome
        leave(token)


class _ProgressRelay:
    """Send a child's progress to the parent at most every ``_CHILD_PROGRESS_INTERVAL``.

    The latest report is never dropped, only delayed: a timer thread sends it.
    """

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        self._send = send
        self._latest: Progress | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._timer = threading.Thread(target=self._every_interval, name="omniq-progress", daemon=True)
        self._timer.start()

    def report(self, progress: Progress) -> None:
        with self._lock:
            self._latest = progress

    def close(self) -> None:
        self._done.set()
        self._timer.join()
        self._flush()

    def _every_interval(self) -> None:
        while not self._done.wait(_CHILD_PROGRESS_INTERVAL):
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            latest, self._latest = self._latest, None
        if latest is not None:
            self._send(("progress", latest.done, latest.total, latest.message))


class _ToParent(io.TextIOBase):
    """A child's stdout or stderr during a task: each write goes to the parent, which routes it."""

    def __init__(self, name: str, send: Callable[[tuple[Any, ...]], None]) -> None:
        self._name, self._send = name, send

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            self._send(("output", self._name, text))
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
