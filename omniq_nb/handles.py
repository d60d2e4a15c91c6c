"""Handles: what ``enqueue`` returns; a live view of one task (``TaskHandle``) or many (``GroupHandle``).

A handle holds the latest snapshot of its task, kept current by the queue's event hub, so
``status``, ``progress`` and ``done()`` never block. ``result()``, ``cancel()`` and ``retry()``
go through the queue's *bridge* (``omniq_nb.bridge``): from ``AsyncOmniQ`` they return
coroutines to await; from ``OmniQ`` (and in a notebook) they block until done.
``await handle`` works everywhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Generator, Iterator, Sequence
from functools import partial
from typing import Any, Protocol, overload

import msgspec

from omniq_nb.bridge import LoopBridge
from omniq_nb.following import HandleBatch
from omniq_nb.history import RunHistory
from omniq_nb.inputs import Upstream, UpstreamGroup, gathered
from omniq_nb.models import EventKind, Task, TaskError, TaskEvent, TaskStatus, batch_row

logger = logging.getLogger(__name__)

display_hook: Callable[[TaskHandle | GroupHandle], Any] | None = None
"""Set by the notebook layer: returns a live view for a handle (anything with ``_repr_mimebundle_``)."""


def _mimebundle(handle: TaskHandle | GroupHandle, text: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    if display_hook is not None:
        try:
            bundle: dict[str, Any] = display_hook(handle)._repr_mimebundle_(**kwargs)
            return bundle
        except Exception:  # a view must never break showing the handle: fall back to text
            logger.exception("could not build a live view for %s", text)
    return {"text/plain": text}


class QueueCalls(Protocol):
    """What a handle asks of its queue (``AsyncOmniQ`` provides it)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """Return the loop the queue's coroutines run on."""
        ...

    @property
    def bridge(self) -> LoopBridge:
        """Return how handles run queue coroutines (hands them back, or blocks on them)."""
        ...

    async def result(self, task_id: str, /, *, timeout: float | None = None) -> Any:
        """Wait for one task's result."""
        ...

    async def results(
        self, task_ids: Sequence[str], /, *, timeout: float | None = None, return_exceptions: bool = False
    ) -> list[Any]:
        """Wait for several tasks' results."""
        ...

    async def cancel(self, task_id: str, /) -> bool:
        """Cancel a task."""
        ...

    async def retry(self, task_id: str, /) -> TaskHandle:
        """Retry a finished task."""
        ...

    async def enqueue_call(
        self, fn: Callable[..., Any], /, *, args: Sequence[Any] = (), kwargs: Any = None, **options: Any
    ) -> TaskHandle:
        """Queue a call with task options."""
        ...

    def follow_closely(self, handle: TaskHandle) -> None:
        """Poll promptly for this handle's changes (someone observes it)."""
        ...

    @property
    def history(self) -> RunHistory:
        """Return the durations of past runs (views show expected durations and ETAs from them)."""
        ...


class TaskHandle:
    """A live handle on one task.

    Args:
        queue: the queue that made it.
        task: the task's latest snapshot, or the row its batch shares (``BatchRows.template``).
        task_id: the task's id, when ``task`` is its batch's shared row (its own is made on first use).

    Example:
        >>> # h = await q.enqueue(fn, 1); value = await h   (AsyncOmniQ)
        >>> # h = q.enqueue(fn, 1); value = h.result()      (OmniQ)

    """

    __slots__ = ("__weakref__", "_folded", "_observers", "_queue", "_task", "id")

    def __init__(self, queue: QueueCalls, task: Task, task_id: str | None = None) -> None:
        self._queue = queue
        self._task = _without_payload(task)  # until the task changes, maybe the row its batch shares
        self._folded = False  # whether events were folded into the snapshot since the last row
        self._observers: list[Callable[[TaskHandle], None]] | None = None
        self.id: str = task.id if task_id is None else task_id

    @property
    def task(self) -> Task:
        """Return the latest known snapshot of the task, without its payload (``payload`` is empty).

        A handle never keeps the pickled call: a hundred thousand handles of a ``.map()``
        would otherwise hold every argument twice (the store has it).
        """
        if self._task.id != self.id:  # the row its batch shares: its own is made once, now
            self._task = batch_row(self._task, self.id)
        return self._task

    @property
    def status(self) -> TaskStatus:
        """Return the task's status (a ``str`` enum: ``h.status == "succeeded"`` holds)."""
        return self._task.status

    @property
    def attempt(self) -> int:
        """Return how many times the task has been claimed so far."""
        return self._task.attempt

    @property
    def progress(self) -> float:
        """Return the task's progress as a fraction from 0.0 to 1.0."""
        return self._task.progress

    @property
    def error(self) -> TaskError | None:
        """Return the error of the last failed attempt, or ``None``."""
        return self._task.error

    def done(self) -> bool:
        """Return True once the task has finished (succeeded, failed, cancelled or expired)."""
        return self._task.status.is_terminal

    def result(self, timeout: float | None = None) -> Any:
        """Return the task's result, waiting for it (a coroutine from ``AsyncOmniQ``).

        Args:
            timeout: seconds to wait at most; ``None`` waits for ever.

        Raises:
            TaskFailed: the task failed (``TaskTimeout``, ``WorkerLost``, ``TaskCancelled``,
                ``TaskExpired`` are subclasses); ``.error`` has the remote traceback.
            TimeoutError: the task did not finish within ``timeout``.

        """
        return self._queue.bridge.call(_result_of, self, timeout)

    def cancel(self) -> Any:
        """Cancel the task; return True if it is now cancelled (a coroutine from ``AsyncOmniQ``)."""
        return self._queue.bridge.call(self._queue.cancel, self.id)

    def retry(self) -> Any:
        """Run a failed, cancelled or expired task again; return its handle (a coroutine from ``AsyncOmniQ``)."""
        return self._queue.bridge.call(self._queue.retry, self.id)

    def then(self, fn: Callable[..., Any], /, *args: Any, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        """Queue ``fn(this task's result, *args, **kwargs)`` to run once this task succeeded; return its handle.

        ``fn`` may be an ``@omniq.task`` function (its options apply, ``options`` on top) or any
        callable; ``options`` are task options (``run_on="any"`` runs it after a failure too,
        with the ``TaskError`` as the value). A coroutine from ``AsyncOmniQ``.
        """
        return _enqueue_after(self._queue, fn, (self, *args), options, kwargs)

    def __omniq_upstream__(self) -> Upstream:
        """Stand for this task's result when passed as another task's argument."""
        return Upstream(self.id)

    def __await__(self) -> Generator[Any, None, Any]:
        """Wait for the result without blocking the event loop."""
        return _on_queue_loop(self._queue, self._queue.result(self.id)).__await__()

    def __repr__(self) -> str:
        """Return ``<TaskHandle id name status>``."""
        return f"<TaskHandle {self.id} {self._task.name} {self._task.status.value}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """Show a live view in a notebook with the extension loaded, else the text repr."""
        return _mimebundle(self, repr(self), kwargs)

    def observe(self, callback: Callable[[TaskHandle], None]) -> Callable[[], None]:
        """Call ``callback(handle)`` on the queue's loop each time the snapshot changes.

        Observed handles are followed closely (progress included); live views use this.

        Returns:
            A function that stops the calls.
        """
        if self._observers is None:
            self._observers = []
        self._observers.append(callback)
        self._queue.follow_closely(self)
        return partial(_discard, self._observers, callback)

    def _apply_event(self, event: TaskEvent) -> None:
        """Fold an event into the snapshot until the hub brings the task's row (result, error)."""
        if event.task_id == self.id and not self._task.status.is_terminal:
            task = self.task
            self._task = msgspec.structs.replace(
                task,
                status=event.status,
                attempt=event.attempt,
                progress=task.progress if event.progress is None else event.progress,
                progress_message=event.message if event.kind is EventKind.PROGRESS else task.progress_message,
                started_at=event.at if event.kind is EventKind.STARTED else task.started_at,
                finished_at=event.at if event.status.is_terminal else None,
            )
            self._folded = True
            self._changed()

    def _apply_task(self, task: Task) -> None:
        """Take the task's stored row; a finished task may come back (retried) and is then followed again."""
        if task.id == self.id:
            before, self._task, self._folded = self._task, _without_payload(task), False
            if self._observers:  # most handles have none, and nothing more to do
                if before.status.is_terminal and not task.status.is_terminal:
                    self._queue.follow_closely(self)
                self._changed()

    def _finished_row(self) -> Task | None:
        """Return the task's stored row if it is finished (a snapshot folded from events lacks the result)."""
        return self._task if self._task.status.is_terminal and not self._folded else None

    def _changed(self) -> None:
        for callback in list(self._observers or ()):
            callback(self)


def gather(*handles: TaskHandle | GroupHandle, **options: Any) -> Any:
    """Return a handle whose result is the list of the given handles' results (a fan-in task).

    A group stands for the list of its results. ``options`` are task options of the fan-in
    task (``run_on="any"``: failures arrive as ``TaskError`` values). A coroutine when the
    handles come from an ``AsyncOmniQ``.

    Raises:
        ValueError: no handles, or handles of different queues.
        TypeError: an argument is not a handle.
    """
    if not handles:
        raise ValueError("gather() needs at least one task handle or group handle")
    wrong = [h for h in handles if not isinstance(h, (TaskHandle, GroupHandle))]
    if wrong:
        raise TypeError(f"gather() takes task handles and group handles, got {wrong[0]!r}")
    queue = handles[0]._queue
    if any(h._queue is not queue for h in handles):
        raise ValueError("gather() needs handles of one queue: tasks of two stores cannot wait for each other")
    return _enqueue_after(queue, gathered, handles, options)


def _enqueue_after(
    queue: QueueCalls,
    fn: Callable[..., Any],
    args: Sequence[Any],
    options: dict[str, Any],
    kwargs: dict[str, Any] | None = None,
) -> Any:
    """Queue ``fn(*args, **kwargs)`` (handles among them become its dependencies) through the queue's bridge."""
    spec: Callable[[], tuple[Callable[..., Any], dict[str, Any]]] | None = getattr(fn, "__omniq_task__", None)
    target, base = spec() if spec is not None else (fn, {})
    return queue.bridge.call(queue.enqueue_call, target, args=tuple(args), kwargs=kwargs, **{**base, **options})


def _discard(observers: list[Callable[[TaskHandle], None]], callback: Callable[[TaskHandle], None]) -> None:
    if callback in observers:
        observers.remove(callback)


def _without_payload(task: Task) -> Task:
    return msgspec.structs.replace(task, payload=b"") if task.payload else task


class GroupHandle(Sequence[TaskHandle]):
    """Handles of many tasks (from ``enqueue_many`` or ``.map()``), in input order.

    Args:
        queue: the queue that made them.
        handles: one handle per input.
        batch: what follows the new tasks' handles as one (``enqueue_many``), dropped with the group.

    """

    def __init__(self, queue: QueueCalls, handles: Sequence[TaskHandle], batch: HandleBatch | None = None) -> None:
        self._batch, self._queue = batch, queue
        self.handles: list[TaskHandle] = list(handles)

    def __del__(self) -> None:
        """Drop the batch: the hub then follows one by one the handles still held elsewhere."""
        if (batch := getattr(self, "_batch", None)) is not None:  # None too if __init__ failed
            batch.drop()

    @property
    def queue(self) -> QueueCalls:
        """Return the queue that made the tasks (its ``history`` gives their expected durations)."""
        return self._queue

    @property
    def ids(self) -> list[str]:
        """Return the task ids, in input order."""
        return [h.id for h in self.handles]

    @property
    def counts(self) -> dict[TaskStatus, int]:
        """Return how many of the tasks are in each status."""
        counts = dict.fromkeys(TaskStatus, 0)
        for handle in self.handles:
            counts[handle.status] += 1
        return counts

    @property
    def progress(self) -> float:
        """Return the mean progress of the tasks, from 0.0 to 1.0."""
        return sum(h.progress for h in self.handles) / len(self.handles) if self.handles else 1.0

    def done(self) -> bool:
        """Return True once every task has finished."""
        return all(h.done() for h in self.handles)

    def result(self, timeout: float | None = None, return_exceptions: bool = False) -> Any:
        """Return every result in input order (a coroutine from ``AsyncOmniQ``).

        Args:
            timeout: seconds to wait at most for all of them.
            return_exceptions: put each failure's exception in the list instead of raising the first.

        Raises:
            TaskFailed: the first failed task, unless ``return_exceptions``.
            TimeoutError: not all finished within ``timeout``.

        """
        return self._queue.bridge.call(
            self._queue.results, self.ids, timeout=timeout, return_exceptions=return_exceptions
        )

    def then(self, fn: Callable[..., Any], /, *args: Any, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        """Queue ``fn([results], *args, **kwargs)`` to run once every task of the group succeeded; return its handle.

        See ``TaskHandle.then``. A coroutine from ``AsyncOmniQ``.
        """
        return _enqueue_after(self._queue, fn, (self, *args), options, kwargs)

    def __omniq_upstream__(self) -> UpstreamGroup:
        """Stand for the list of the group's results when passed as another task's argument."""
        return UpstreamGroup(tuple(self.ids))

    def __await__(self) -> Generator[Any, None, Any]:
        """Wait for every result without blocking the event loop."""
        return _on_queue_loop(self._queue, self._queue.results(self.ids)).__await__()

    def __len__(self) -> int:
        """Return the number of tasks."""
        return len(self.handles)

    @overload
    def __getitem__(self, index: int) -> TaskHandle: ...

    @overload
    def __getitem__(self, index: slice) -> list[TaskHandle]: ...

    def __getitem__(self, index: int | slice) -> TaskHandle | list[TaskHandle]:
        """Return one handle, or a list of them for a slice."""
        return self.handles[index]

    def __iter__(self) -> Iterator[TaskHandle]:
        """Iterate over the handles in input order."""
        return iter(self.handles)

    def __repr__(self) -> str:
        """Return a one-line summary with counts per status."""
        shown = ", ".join(f"{s.value}={n}" for s, n in self.counts.items() if n)
        return f"<GroupHandle {len(self.handles)} tasks: {shown}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """Show a live aggregate view in a notebook with the extension loaded, else the text repr."""
        return _mimebundle(self, repr(self), kwargs)


async def _on_queue_loop(queue: QueueCalls, coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Await ``coroutine`` on the queue's loop, from whichever loop awaits the handle."""
    if asyncio.get_running_loop() is queue.loop:
        return await coroutine
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, queue.loop))


async def _result_of(handle: TaskHandle, timeout: float | None) -> Any:
    """Wait for ``handle``'s result, keeping the handle alive meanwhile (the hub follows it, no read needed)."""
    return await handle._queue.result(handle.id, timeout=timeout)
