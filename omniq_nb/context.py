"""What code running inside a task can ask: ``progress()``, ``track()``, ``current()``.

The running task is held in a ``contextvars.ContextVar``, set by the executor in whichever
thread or process runs the task. Reporting only records the latest value (thread-safe, no
I/O); the worker pool writes it to the store at a bounded rate, so a loop that reports a
million times costs no more store writes than one that reports ten.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

OutputSink = Callable[[str, Any], None]
"""Where a task's output goes: called with ``(kind, payload)``, from any thread."""


class Progress(msgspec.Struct, frozen=True):
    """One progress report: ``done`` of ``total`` (``None`` when unknown), with a message."""

    done: float
    total: float | None = None
    message: str | None = None


class TaskContext:
    """The running task, as seen from inside it (returned by ``current()``).

    Args:
        task_id: the task's id (stable across retries and runs).
        attempt: this attempt's number, from 1. A graceful handback (a worker stopping) gives
            the attempt back, so a re-run after it sees the same number again.
        queue: the task's queue.
        run_id: unique per claim, so two runs of a task never share it: the idempotency key.
        on_progress: called with each report (must be cheap and thread-safe).
        on_output: where the task's output goes live (its notebook cell or view), or ``None``.
        on_keep: also called with all of the task's output, to keep it with the task (``OUTPUT_LIMIT``).
    """

    __slots__ = ("_cancelled", "_on_keep", "_on_output", "_on_progress", "attempt", "queue", "run_id", "task_id")

    def __init__(
        self,
        task_id: str,
        attempt: int,
        queue: str,
        run_id: str,
        on_progress: Callable[[Progress], None] | None = None,
        on_output: OutputSink | None = None,
        on_keep: OutputSink | None = None,
    ) -> None:
        self.task_id, self.attempt, self.queue, self.run_id = task_id, attempt, queue, run_id
        self._on_progress = on_progress
        self._on_output = on_output
        self._on_keep = on_keep
        self._cancelled = False

    @property
    def id(self) -> str:
        """Return the task's id."""
        return self.task_id

    @property
    def cancelled(self) -> bool:
        """Return True once the task was cancelled or timed out (thread tasks should then stop)."""
        return self._cancelled

    def cancel(self) -> None:
        """Flag the task as cancelled; code running in a thread can check ``cancelled``."""
        self._cancelled = True

    def report(self, progress: Progress) -> None:
        """Hand a progress report to the pool (dropped once cancelled: a later attempt may be running)."""
        if self._on_progress is not None and not self._cancelled:
            self._on_progress(progress)

    @property
    def captures_output(self) -> bool:
        """Return True when this task's output is kept or routed somewhere (e.g. its notebook cell)."""
        return self._on_output is not None or self._on_keep is not None

    def output(self, kind: str, payload: Any) -> bool:
        """Keep and route what the task wrote: ``("stdout" | "stderr", text)`` or ``("display", (data, metadata))``.

        Returns:
            Whether a sink took it; if not, the caller shows it where it would have gone
            (this process's stdout or stderr, the kernel's display).
        """
        if self._on_keep is not None:
            self._on_keep(kind, payload)
        if self._on_output is None:
            return False
        self._on_output(kind, payload)
        return True

    def __repr__(self) -> str:
        """Return ``TaskContext(task_id=..., attempt=..., queue=..., run_id=...)``."""
        return (
            f"TaskContext(task_id={self.task_id!r}, attempt={self.attempt}, queue={self.queue!r}, "
            f"run_id={self.run_id!r})"
        )


_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar("omniq_task", default=None)
_origin: contextvars.ContextVar[str | None] = contextvars.ContextVar("omniq_origin", default=None)


def current() -> TaskContext | None:
    """Return the running task's id, attempt, queue and ``run_id``, or ``None`` outside a task.

    Use ``run_id`` as the idempotency key of a task's side effects: it is unique per claim,
    while ``attempt`` repeats after a graceful handback.

    Example:
        >>> current() is None
        True
    """
    return _current.get()


def enter(context: TaskContext) -> contextvars.Token[TaskContext | None]:
    """Make ``context`` the running task of this thread or coroutine (executors call this)."""
    return _current.set(context)


def leave(token: contextvars.Token[TaskContext | None]) -> None:
    """Undo ``enter``."""
    _current.reset(token)


_kernel: str | None = None  # one kernel per process: not a context variable


def owner() -> str | None:
    """Return the kernel session that tasks enqueued in this process belong to (set by the notebook layer)."""
    return _kernel


def set_owner(kernel: str | None) -> None:
    """Make tasks enqueued from now on in this process belong to ``kernel`` (``None``: to no kernel)."""
    global _kernel
    _kernel = kernel


def origin() -> str | None:
    """Return where tasks enqueued now are launched from (set by the notebook layer), or ``None``."""
    return _origin.get()


def set_origin(value: str | None) -> contextvars.Token[str | None]:
    """Record where tasks enqueued in this context are launched from (e.g. a notebook cell)."""
    return _origin.set(value)


def progress(done: float, total: float | None = None, message: str | None = None) -> None:
    """Report the running task's progress: ``done`` of ``total`` units, with an optional message.

    Outside a task this does nothing, so a function can report progress whether it runs as
    a task or inline.

    Args:
        done: units done so far (>= 0).
        total: units in all, or ``None`` when unknown.
        message: a short note shown beside the progress.

    Raises:
        ValueError: ``done`` or ``total`` is negative or not finite.
    """
    if not math.isfinite(done) or done < 0:
        raise ValueError(f"progress done={done!r} must be a finite number >= 0")
    if total is not None and (not math.isfinite(total) or total < 0):
        raise ValueError(f"progress total={total!r} must be a finite number >= 0, or None")
    context = _current.get()
    if context is not None:
        context.report(Progress(float(done), None if total is None else float(total), message))


def track(iterable: Iterable[T], total: int | None = None) -> Iterator[T]:
    """Yield from ``iterable`` and report progress after each item (like tqdm).

    Args:
        iterable: the items.
        total: how many there are; taken from ``len(iterable)`` when it has one.

    Example:
        >>> list(track(range(3)))
        [0, 1, 2]
    """
    if total is None and isinstance(iterable, Sized):
        total = len(iterable)
    progress(0, total)
    for count, item in enumerate(iterable, start=1):
        yield item
        progress(count, total)
