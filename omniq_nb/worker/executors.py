"""Where a call runs: on the loop, on a thread, in a child process or as a greenlet; one interface for all.

Every executor has ``run(call, context, slot) -> Outcome`` and enforces the task's timeout its
own way: code on the loop is cancelled, a child process is terminated, a greenlet is killed at
its next wait (``greenlets.py``), a thread cannot be killed, so it is flagged
(``current().cancelled``) and left to finish, holding its slot, while its task is failed.
``Executors.choose`` picks one by the task's kind, in one place; coroutine functions always
run on the loop, and the call's header says which ones are (nothing is unpickled in this
process for a process call).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Protocol

from omniq_nb.blob_format import is_coroutine_call
from omniq_nb.context import TaskContext, enter, leave
from omniq_nb.serialization import BlobSerializer
from omniq_nb.worker.calls import RESULT_LABEL, Call, Outcome, Slot, failed, timed_out
from omniq_nb.worker.child import ChildProcess, NotStarted
from omniq_nb.worker.greenlets import GeventExecutor, GreenletHub
from omniq_nb.worker.threads import TaskThreads

PIPELINE_DEPTH = 2  # calls a child holds at once while runs are quick: the running one, and the next in line
IN_LINE_BYTES = 32 * 1024  # the largest call sent to a busy child (well inside a socket pair's buffer)


class Executor(Protocol):
    """Runs one call and says how it ended."""

    async def run(self, call: Call, context: TaskContext, slot: Slot) -> Outcome:
        """Run ``call`` and return its outcome.

        Args:
            call: what to run.
            context: the task as seen from inside it (progress, output, cancel flag).
            slot: the run's concurrency slot: code that may outlive the run (a thread, a
                cancelled coroutine still cleaning up) keeps it taken with ``slot.keep()``.
        """
        ...


class LoopExecutor:
    """Run calls on the running loop: coroutine functions, and sync functions of ``kind="async"``.

    Args:
        serializer: verifies and loads payloads, serializes results.
    """

    def __init__(self, serializer: BlobSerializer) -> None:
        self._serializer = serializer

    async def run(self, call: Call, context: TaskContext, slot: Slot) -> Outcome:
        """Run ``call`` on this loop (see ``Executor.run``); a sync function blocks the loop while it runs."""
        try:
            fn, args, kwargs = self._serializer.load_call(call.payload, call.inputs, call.stored)
        except Exception as exc:
            return failed(exc, call.attempt)
        token = enter(context)
        try:
            value = fn(*args, **kwargs)
            if inspect.isawaitable(value) and call.timeout is None:
                value = await value
            elif inspect.isawaitable(value):
                running = asyncio.ensure_future(value)
                if not await _finished_in_time(running, call.timeout):
                    context.cancel()
                    release = slot.keep()  # its cancelled code may still be cleaning up: keep the slot
                    running.add_done_callback(lambda _: release())
                    return timed_out(call)
                value = running.result()  # the task's own exceptions, TimeoutError included
            return Outcome(result=self._serializer.dumps(value, label=RESULT_LABEL))
        except BaseException as exc:  # sys.exit(), an interrupt, a cancel the task met on its own: it fails
            if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                raise  # the run itself is being stopped
            return failed(exc, call.attempt)
        finally:
            leave(token)


class ThreadExecutor:
    """Run sync functions on long-lived threads of this process.

    Args:
        serializer: verifies and loads payloads, serializes results.
        threads: the threads to run them on.
    """

    def __init__(self, serializer: BlobSerializer, threads: TaskThreads[Outcome]) -> None:
        self._serializer = serializer
        self._threads = threads

    async def run(self, call: Call, context: TaskContext, slot: Slot) -> Outcome:
        """Run ``call`` on a thread (see ``Executor.run``); on a time-out the thread runs on, flagged."""
        try:
            fn, args, kwargs = self._serializer.load_call(call.payload, call.inputs, call.stored)
        except Exception as exc:
            return failed(exc, call.attempt)

        def work() -> Outcome:
            token = enter(context)
            try:
                return Outcome(result=self._serializer.dumps(fn(*args, **kwargs), label=RESULT_LABEL))
            except BaseException as exc:  # SystemExit too: a thread has no process to end
                return failed(exc, call.attempt)
            finally:
                leave(token)

        running = self._threads.submit(work, slot.keep())
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

    def close(self) -> None:
        """Let the threads end once their current calls return (call on the loop)."""
        self._threads.shutdown()


class ProcessExecutor:
    """Run calls in long-lived child processes, at most ``children`` of them.

    A call goes to an idle child, else to a new one while there are fewer than ``children``,
    else in line behind the running call of the least busy child that holds fewer than
    ``PIPELINE_DEPTH`` (only a small call without a time-out: ``_fits_in_line``); else it
    waits for a child to answer. The pool sends more calls than there are children only
    while runs are quick, only plain process calls, and only while process calls hold every
    slot (``Pace.may_start``), so that no child waits for the parent between calls.

    Args:
        secret: ``OMNIQ_SECRET``, so children verify payloads and sign results themselves.
        children: the most child processes at once (the pool's concurrency).
    """

    def __init__(self, secret: str | None, children: int) -> None:
        self._secret, self._most = secret, children
        self.children: list[ChildProcess] = []
        """The children started and not stopped, busy or idle."""
        self._answered = asyncio.Event()

    async def run(self, call: Call, context: TaskContext, slot: Slot) -> Outcome:
        """Run ``call`` in a child (see ``Executor.run``); a timed-out or cancelled running call's child is stopped."""
        while True:
            child = await self._child_for(call)
            try:
                return await child.run(call, context)
            except NotStarted:  # it waited behind a call whose child ended: it goes to another child
                continue

    def close(self) -> None:
        """Stop every child (a busy one at once)."""
        for child in self.children:
            if child.load:
                child.terminate()
            else:
                child.close()
        self.children.clear()

    async def _child_for(self, call: Call) -> ChildProcess:
        """Return the child to send ``call`` to, starting one if there is room (dead idle ones are reaped)."""
        while True:
            for child in [child for child in self.children if not child.answered]:
                child.terminate()  # it ended: reap it
                self.children.remove(child)
            for child in [child for child in self.children if not child.load]:
                if child.alive:  # (one waitpid per call sent to an idle child)
                    return child
                child.terminate()
                self.children.remove(child)
            if len(self.children) < self._most:
                self.children.append(ChildProcess(self._secret, self._answered.set))
                return self.children[-1]
            if _fits_in_line(call):
                child = min(self.children, key=_load)
                if child.load < PIPELINE_DEPTH:
                    return child
            self._answered.clear()
            await self._answered.wait()


def _fits_in_line(call: Call) -> bool:
    """Return whether ``call`` may wait in line in a busy child.

    Not with a time-out (its time would run while it waits), nor with large values: the send
    of a call in line must fit in the socket's buffer at once, as the child reads it only
    when the call ahead has ended (a send that waited would hold the loop, and the child's
    answer of a large result could then never be read).
    """
    size = len(call.payload) + len(call.stored or b"")
    return call.timeout is None and call.inputs is None and size <= IN_LINE_BYTES


def _load(child: ChildProcess) -> int:
    return child.load


class Executors:
    """The executors of one pool, and the one place that picks which runs a call.

    Args:
        serializer: verifies and loads payloads, serializes results.
        secret: ``OMNIQ_SECRET``, for child processes.
        threads: the pool's concurrency: the most threads for sync calls (started as needed),
            and the most child processes.

    Example:
        >>> from omniq_nb.serialization import BlobSerializer
        >>> async def fetch() -> None: ...
        >>> s = BlobSerializer()
        >>> pick = Executors(s, None, 2).choose
        >>> [type(pick(kind, s.dump_call(fetch, (), {}))).__name__ for kind in ("thread", "process")]
        ['LoopExecutor', 'LoopExecutor']
        >>> type(pick("process", s.dump_call(len, ([],), {}))).__name__
        'ProcessExecutor'
    """

    def __init__(self, serializer: BlobSerializer, secret: str | None, threads: int) -> None:
        self._serializer = serializer
        self._thread_count = threads
        self.loop = LoopExecutor(serializer)
        self.processes = ProcessExecutor(secret, threads)
        self._threads: ThreadExecutor | None = None
        self._greenlets: GeventExecutor | None = None

    def choose(self, kind: str, payload: bytes) -> Executor:
        """Return the executor for a call of a task of ``kind``.

        Coroutine functions run on the loop whatever the kind; sync ones on threads
        (``"thread"``), in child processes (``"process"``), as greenlets (``"gevent"``, in a
        pool that checked it may) or on the loop (any other kind).
        The call's header says whether its callable is a coroutine function; only a call
        written before the header said so is loaded here to find out.

        Args:
            kind: the task's kind, or the pool's.
            payload: the call's blob.
        """
        if kind not in ("thread", "process", "gevent"):
            return self.loop
        coroutine = is_coroutine_call(payload)
        if coroutine is None:
            coroutine = self._loads_as_coroutine(payload)
        if coroutine:
            return self.loop
        if kind == "gevent":
            return self._on_greenlets()
        return self.processes if kind == "process" else self._on_threads()

    def close(self) -> None:
        """Stop the child processes and let the threads and greenlets end (call on the loop)."""
        self.processes.close()
        if self._threads is not None:
            self._threads.close()
        if self._greenlets is not None:
            self._greenlets.close()

    def _on_greenlets(self) -> GeventExecutor:
        if self._greenlets is None:
            self._greenlets = GeventExecutor(self._serializer, GreenletHub(asyncio.get_running_loop()))
        return self._greenlets

    def _on_threads(self) -> ThreadExecutor:
        if self._threads is None:
            threads: TaskThreads[Outcome] = TaskThreads(self._thread_count, asyncio.get_running_loop())
            self._threads = ThreadExecutor(self._serializer, threads)
        return self._threads

    def _loads_as_coroutine(self, payload: bytes) -> bool:
        """Load an older call (no flag in its header) to see whether it is a coroutine function."""
        try:
            fn, _, _ = self._serializer.load_call(payload)
        except Exception:
            return True  # the loop executor reports the failure without running anything
        return inspect.iscoroutinefunction(fn)


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
        future.cancel()  # the run was abandoned: stop the task too (a thread only loses its waiter)
        raise
    if done:
        return True
    future.cancel()
    return False
