"""The queue façade: ``AsyncOmniQ`` (all behaviour, async) and ``OmniQ``, its blocking twin.

Example:
    >>> import asyncio, operator
    >>> async def main():
    ...     async with AsyncOmniQ(db_url="memory://") as q:
    ...         h = await q.enqueue(operator.add, 1, 2)
    ...         return h.status
    >>> asyncio.run(main())
    <TaskStatus.PENDING: 'pending'>

"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from functools import partial
from types import TracebackType
from typing import Any, Protocol, TypeVar

import msgspec

from omniq_nb._portal import Portal
from omniq_nb.config import Settings, configure_logging
from omniq_nb.context import origin, owner
from omniq_nb.errors import InvalidTransition, TaskFailed, TaskNotFound, failure_class, type_name
from omniq_nb.events import EventHub, EventListener
from omniq_nb.handles import GroupHandle, Runner, TaskHandle, return_coroutine
from omniq_nb.models import (
    StoreHealth,
    Task,
    TaskError,
    TaskEvent,
    TaskStatus,
    WorkerInfo,
    check_transition,
    new_task_id,
    new_task_ids,
)
from omniq_nb.opening import OpensAndCloses
from omniq_nb.options import DEFAULT, TaskOptions, deadline, make_options
from omniq_nb.schedule import duration_text, first_run, next_run, seconds
from omniq_nb.serialization import BlobSerializer
from omniq_nb.storage import Storage, open_storage

logger = logging.getLogger(__name__)
_UTC = timezone.utc
T = TypeVar("T")
_LIST_LIMIT = 100


class AsyncOmniQ(OpensAndCloses):
    """The task queue, async first: enqueue, inspect, wait for, cancel and retry tasks.

    Settings come from defaults < YAML < ``OMNIQ_*`` env < the keyword arguments given here.
    Nothing runs a task without a worker pool (``AsyncWorkerPool``) on the same store.

    Args:
        settings: a complete ``Settings`` to start from instead of reading YAML and env.
        storage: a store to use instead of opening ``settings.db_url``.
        runner: how handles run queue coroutines (for sync twins and notebooks).
        **overrides: settings by lower-case name, such as ``db_url="sqlite:///jobs.db"``.

    Raises:
        ConfigError: a setting is invalid.
        TypeError: an override names no setting.

    Example:
        >>> async def main():                                   # doctest: +SKIP
        ...     async with AsyncOmniQ(db_url="sqlite:///jobs.db") as q:
        ...         h = await q.enqueue(print, "hello")
        ...         await h.result(timeout=10)                  # needs a worker pool

    """

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        storage: Storage | None = None,
        runner: Runner = return_coroutine,
        **overrides: Any,
    ) -> None:
        self.settings = settings.with_overrides(**overrides) if settings else Settings.from_env(**overrides)
        configure_logging(self.settings)
        self.storage: Storage = storage or open_storage(self.settings.db_url, settings=self.settings)
        self.serializer = BlobSerializer(self.settings.secret)
        self._runner = runner
        self._hub = EventHub(
            self.storage, poll_interval=self.settings.poll_interval, events_recorded=self.settings.events
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._local_writes: builtins.list[Callable[[Sequence[Task]], None]] = []

    @classmethod
    def from_env(cls, **overrides: Any) -> AsyncOmniQ:
        """Build a queue from YAML and ``OMNIQ_*`` settings (``overrides`` win).

        Args:
            **overrides: settings by lower-case name.

        """
        return cls(**overrides)

    async def open(self) -> None:
        """Open the store (creating the SQLite file and schema if needed).

        Raises:
            StorageError: the store cannot be opened; the message names the path or URL.

        """
        self._loop = asyncio.get_running_loop()
        await self.storage.open()
        await self._hub.start()

    async def close(self) -> None:
        """Stop following events and close the store's connections."""
        await self._hub.close()
        await self.storage.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """Return the event loop the queue was opened on."""
        if self._loop is None:
            raise RuntimeError("the queue is not open; use 'async with AsyncOmniQ(...) as q' or await q.open()")
        return self._loop

    @property
    def runner(self) -> Runner:
        """Return how this queue's handles run coroutines (returned, or blocked on)."""
        return self._runner

    def on_local_write(self, callback: Callable[[Sequence[Task]], None]) -> Callable[[], None]:
        """Call ``callback`` after each write published here (pools use it to wake at once).

        Args:
            callback: a cheap, non-blocking callable given the rows the write returned
                (empty when it returned none).

        Returns:
            A function that removes the callback.

        """
        self._local_writes.append(callback)
        return partial(self._local_writes.remove, callback)

    def publish(self, tasks: Sequence[Task] = ()) -> None:
        """Tell this process that the store changed: ``tasks`` are rows a local write returned.

        Handles and result waiters get the new snapshots at once, event listeners are woken,
        and so are idle pools of this process (``on_local_write``).
        """
        self._hub.deliver(tasks)
        self._hub.nudge()
        for callback in builtins.list(self._local_writes):
            try:
                callback(tasks)
            except Exception:  # a failing callback must not stop the pool loop that wrote
                logger.exception("on_local_write callback %r failed", callback)

    async def enqueue(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskHandle:
        """Queue ``fn(*args, **kwargs)`` with default options and return its handle at once.

        Args:
            fn: any callable cloudpickle can serialize (notebook functions travel by value).
            *args: positional arguments, captured now.
            **kwargs: keyword arguments, captured now (all go to ``fn``; use ``enqueue_call``
                for task options).

        Raises:
            SerializationError: ``fn`` or an argument cannot be serialized (named in the message).

        """
        return await self.enqueue_call(fn, args=args, kwargs=kwargs)

    async def enqueue_call(
        self,
        fn: Callable[..., Any],
        /,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> TaskHandle:
        """Queue ``fn(*args, **kwargs)`` with task options and return its handle at once.

        Args:
            fn: the callable.
            args: positional arguments.
            kwargs: keyword arguments.
            **options: ``retries``, ``retry_on``, ``timeout``, ``delay``, ``eta``, ``interval``,
                ``cron``, ``priority``, ``queue``, ``ttl``, ``result_ttl``, ``at_most_once``,
                ``shared`` (any pool may run it, not only its kernel's), ``kind``, ``name``.
                Left out, ``ttl`` and ``result_ttl`` take their settings
                (``TASK_TTL``, ``RESULT_TTL``); ``ttl=None`` never expires and
                ``result_ttl=None`` keeps the finished task until it is purged by age, whatever
                the settings say (``omniq_nb.DEFAULT`` asks for the setting explicitly).

        Raises:
            TypeError: an unknown option, or a value of the wrong type.
            ValueError: an invalid value (negative delay, bad cron, eta with delay, ...).
            SerializationError: ``fn`` or an argument cannot be serialized.

        """
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"args={args!r} must be a tuple or list of positional arguments")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError(f"kwargs={kwargs!r} must be a mapping of keyword arguments")
        template = await self._template(fn, make_options(**options))
        task_id = new_task_id()
        task = msgspec.structs.replace(
            template,
            id=task_id,
            payload=self.serializer.dump_call(fn, args, kwargs or {}),
            series=task_id if template.series is not None else None,
        )
        await self.storage.insert([task])
        self.publish()
        return self._handle(task)

    async def enqueue_many(
        self, fn: Callable[..., Any], /, calls: Iterable[Sequence[Any]], **options: Any
    ) -> GroupHandle:
        """Queue ``fn(*args)`` for each ``args`` in ``calls``, in one transaction.

        Args:
            fn: the callable.
            calls: one tuple of positional arguments per task.
            **options: task options, the same for every task.

        Returns:
            A group handle, in input order.

        Raises:
            TypeError: an item of ``calls`` is not a tuple or list, or a bad option.
            SerializationError: ``fn`` or an argument cannot be serialized.

        """
        template = await self._template(fn, make_options(**options))
        payloads = builtins.list(self.serializer.dump_calls(fn, _checked_calls(calls)))  # all fail before any insert
        ids = new_task_ids(len(payloads))
        if ids:
            await self.storage.insert_many(template, zip(ids, payloads, strict=True))
            self.publish()
        periodic = template.series is not None
        tasks = [
            msgspec.structs.replace(template, id=task_id, payload=payload, series=task_id if periodic else None)
            for task_id, payload in zip(ids, payloads, strict=True)
        ]
        return GroupHandle(self, [self._handle(task) for task in tasks])

    async def get(self, task_id: str, /) -> TaskHandle:
        """Return a handle on an existing task (also one made by another process or kernel).

        Raises:
            TaskNotFound: no task has this id.

        """
        return self._handle(await self._task(task_id))

    async def list(
        self,
        *,
        status: str | TaskStatus | Iterable[str | TaskStatus] | None = None,
        queue: str | None = None,
        limit: int = _LIST_LIMIT,
    ) -> builtins.list[Task]:
        """Return snapshots of up to ``limit`` tasks, newest first.

        Args:
            status: one status or several (``"pending"``, ``TaskStatus.FAILED``, ...).
            queue: only tasks of this queue.
            limit: at most this many.

        Raises:
            ValueError: an unknown status, or ``limit < 1``.

        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit={limit!r} must be a whole number >= 1")
        return await self.storage.list(statuses=_statuses(status), queue=queue, limit=limit)

    async def cancel(self, task_id: str, /) -> bool:
        """Cancel a pending or running task; return True if it is now cancelled.

        For an interval or cron task, the unfinished runs of its series are cancelled too:
        cancelling any run (even a finished first one) stops the schedule.

        A running task is marked cancelled at once; its worker stops it when it learns of it
        (async tasks are cancelled, process tasks terminated, thread tasks only abandoned:
        a thread cannot be killed). A finished task is left as it is (returns False).

        Raises:
            TaskNotFound: no task has this id.

        """
        task = await self.storage.cancel(task_id)
        if task is None:
            raise TaskNotFound(f"no task with id {task_id!r} in {self.storage.url}")
        self.publish([task])
        return task.status is TaskStatus.CANCELLED

    async def retry(self, task_id: str, /) -> TaskHandle:
        """Queue a failed, cancelled or expired task again, allowing one more attempt.

        Raises:
            TaskNotFound: no task has this id.
            InvalidTransition: the task is pending, running or has succeeded.

        """
        current = await self._task(task_id)
        if current.status is TaskStatus.RUNNING:
            raise InvalidTransition(f"task {task_id} is running; only a finished task that failed can be retried")
        check_transition(current.status, TaskStatus.PENDING)
        task = await self.storage.requeue(task_id)
        if task is None:
            raise TaskNotFound(f"no task with id {task_id!r} in {self.storage.url}")
        self.publish([task])
        return self._handle(task)

    async def purge(
        self,
        *,
        older_than: float | timedelta | None = None,
        status: str | TaskStatus | Iterable[str | TaskStatus] | None = None,
        everything: bool = False,
    ) -> int:
        """Delete finished tasks and their events; return how many tasks were deleted.

        With no arguments, finished tasks past their own ``result_ttl`` go: those enqueued
        without one took ``RESULT_TTL`` (7 days unless set), and ``result_ttl=None`` keeps a
        task until it is purged by age. Live pools do the same every minute. With
        ``older_than``, finished tasks that finished longer ago go too (only those in
        ``status`` when given; ``older_than=0``: every finished task). ``everything=True``
        deletes every task, running ones included. ``purge_report`` does the same and says
        why nothing went.

        Raises:
            ValueError: a negative ``older_than`` or an unknown status.

        """
        age = seconds(older_than, name="older_than")
        before = None if age is None else datetime.now(_UTC) - timedelta(seconds=age)
        return await self.storage.purge(finished_before=before, statuses=_statuses(status), everything=everything)

    async def purge_report(
        self,
        *,
        older_than: float | timedelta | None = None,
        status: str | TaskStatus | Iterable[str | TaskStatus] | None = None,
        everything: bool = False,
        command: str = "purge",
    ) -> str:
        """Purge as ``purge`` does and return one line for people saying what went.

        ``omniq-nb purge``, ``%omniq purge`` and the dashboard's "Purge finished" button print
        it. When nothing went, it says why, and what to pass instead (``--older-than``, ``--all``).

        Args:
            older_than: as for ``purge``.
            status: as for ``purge``.
            everything: as for ``purge``.
            command: how the reader purges, for the suggestions (``omniq-nb purge``, ``%omniq purge``).

        Raises:
            ValueError: a negative ``older_than`` or an unknown status.

        Example:
            >>> with OmniQ(db_url="memory://") as q:
            ...     q.purge_report()
            'purged 0 finished tasks: no task has finished yet (pending and running ones go only with purge --all)'

        """
        count = await self.purge(older_than=older_than, status=status, everything=everything)
        if everything:
            return f"purged {_tasks(count)}"
        if count:
            return f"purged {_tasks(count, 'finished')}"
        picked = set(_statuses(status)) or {s for s in TaskStatus if s.is_terminal}
        counts = await self.storage.count()
        finished = sum(n for s, n in counts.items() if s in picked)
        if not finished:
            none = "no task has finished yet"
            return f"purged 0 finished tasks: {none} (pending and running ones go only with {command} --all)"
        default = self.settings.result_ttl
        setting = "RESULT_TTL is none" if default is None else f"RESULT_TTL: {duration_text(default)}"
        why = f"none past its result_ttl ({setting}; a task without one stays until purged by age)"
        age = seconds(older_than, name="older_than")
        if age is None:
            instead = f"{command} --older-than 7d deletes those finished over 7 days ago (0: every finished task)"
        else:
            why += f" or finished over {duration_text(age)} ago"
            instead = f"a shorter --older-than deletes more ({command} --older-than 0: every finished task)"
        kept = f"{_tasks(finished, 'finished')} kept, {why}"
        return f"purged 0 finished tasks: {kept}. {instead}; {command} --all deletes every task, running ones too"

    async def check(self, *, stale_after: float | timedelta | None = None) -> StoreHealth:
        """Report the store's health: integrity, schema version, WAL size, tasks per status, lapsed leases.

        Works on an open queue and on one never opened (as ``omniq-nb check`` does): the store
        is then inspected as it is, and nothing is created or migrated. See ``StoreHealth``
        for what counts as a problem; ``ok`` is False when there is one.

        Args:
            stale_after: how long a running task's lease may have run out before that is a
                problem (its worker died and no live pool rescued it); default one lease,
                ``LEASE_SECONDS``. A live pool rescues a lapsed lease within about a second.

        Raises:
            StorageError: there is no store at ``db_url`` (none is created), or it cannot be reached.
            ValueError: a negative ``stale_after``.

        Example:
            >>> with OmniQ(db_url="memory://") as q:
            ...     q.check().ok
            True

        """
        grace = seconds(stale_after, name="stale_after")
        return await self.storage.check(stale_after=self.settings.lease_seconds if grace is None else grace)

    async def workers(self) -> builtins.list[WorkerInfo]:
        """Return the live worker pools of the store (in-kernel and standalone), oldest first.

        Every pool records itself when it starts, heartbeats while it runs and removes itself
        when it stops; a pool that died drops out once its heartbeat is a few leases old.
        """
        return await self.storage.workers()

    async def stop_worker(self, worker_id: str, /) -> bool:
        """Ask a live pool of the store, in any process, to drain and stop; return whether it was found.

        The pool sees the request at its next heartbeat (within ``LEASE_SECONDS / 3``, at most
        2 s), stops claiming, lets running tasks finish (or hands them back) and leaves the
        registry; a standalone ``omniq-nb worker`` then exits with status 0.

        Args:
            worker_id: the pool's id, as ``workers()`` lists it.
        """
        return await self.storage.request_stop(worker_id)

    async def events(
        self, *, task_id: str | None = None, since: int = 0, limit: int = 1000
    ) -> builtins.list[TaskEvent]:
        """Return recorded events after cursor ``since``, oldest first (pass the last ``seq`` back).

        Args:
            task_id: only this task's events.
            since: a ``TaskEvent.seq`` already seen (0 for all).
            limit: at most this many.

        """
        for name, value in (("since", since), ("limit", limit)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} must be a whole number >= 0")
        return await self.storage.events(task_id=task_id, since=since, limit=limit)

    def follow_closely(self, handle: TaskHandle) -> None:
        """Keep ``handle`` current promptly, progress included (live views call this)."""
        self._hub.watch_closely(handle)

    def on_event(self, listener: EventListener) -> Callable[[], None]:
        """Call ``listener(event)`` for every event recorded in the store from now on.

        Events from any process sharing the store arrive, those of this process at once and
        others' at the next poll. Call from the queue's loop.

        Returns:
            A function that unsubscribes.

        """
        return self._hub.subscribe(listener)

    async def result(self, task_id: str, /, *, timeout: float | None = None) -> Any:
        """Wait for a task to finish and return its result.

        Raises:
            TaskFailed: the task did not succeed (a subclass says why).
            TimeoutError: it did not finish within ``timeout`` seconds.
            TaskNotFound: no task has this id.

        """
        wait = seconds(timeout, name="timeout")
        try:
            task = await self._hub.wait(task_id, wait)
        except TimeoutError:
            raise TimeoutError(f"task {task_id} did not finish within {timeout} s") from None
        if task is None:
            raise TaskNotFound(f"no task with id {task_id!r} in {self.storage.url}")
        if task.status is TaskStatus.SUCCEEDED:
            return None if task.result is None else self.serializer.loads(task.result)
        raise failure(task)

    async def results(
        self, task_ids: Sequence[str], /, *, timeout: float | None = None, return_exceptions: bool = False
    ) -> builtins.list[Any]:
        """Wait for several tasks and return their results in order.

        Args:
            task_ids: the tasks.
            timeout: seconds for all of them together.
            return_exceptions: return each failure's exception in the list instead of raising.

        Raises:
            TaskFailed: the first failure in order, unless ``return_exceptions``.
            TimeoutError: not all finished in time.

        """
        if isinstance(task_ids, (str, bytes)):
            raise TypeError(f"task_ids={task_ids!r} must be a sequence of task ids, not one id")
        limit = seconds(timeout, name="timeout")
        end = None if limit is None else time.monotonic() + limit
        values: builtins.list[Any] = []
        for task_id in task_ids:
            left = None if end is None else max(0.0, end - time.monotonic())
            try:
                values.append(await self.result(task_id, timeout=left))
            except TaskFailed as exc:
                if not return_exceptions:
                    raise
                values.append(exc)
        return values

    async def _task(self, task_id: str) -> Task:
        task = await self.storage.get(task_id)
        if task is None:
            raise TaskNotFound(f"no task with id {task_id!r} in {self.storage.url}")
        return task

    def _handle(self, task: Task) -> TaskHandle:
        handle = TaskHandle(self, task)
        self._hub.watch(handle)
        return handle

    async def _template(self, fn: Callable[..., Any], options: TaskOptions) -> Task:
        if not callable(fn):
            raise TypeError(f"expected a callable to run as a task, got {fn!r}")
        return new_task(fn, b"", options, self.settings, await self.storage.now())


def new_task(fn: Callable[..., Any], payload: bytes, options: TaskOptions, settings: Settings, now: datetime) -> Task:
    """Build a pending task from its payload, options and the settings' defaults.

    Args:
        fn: the callable (for the task's name).
        payload: the serialized call.
        options: validated options.
        settings: defaults for what the options leave unset.
        now: the store's clock.

    """
    eta = first_run(now, eta=options.eta, delay=options.delay)
    if options.schedule is not None and options.eta is None and options.delay is None:
        eta = next_run(options.schedule, previous=now, now=now)
    task_id = new_task_id()
    return Task(
        id=task_id,
        name=options.name or task_name(fn),
        queue=options.queue or settings.default_queue,
        priority=options.priority,
        payload=payload,
        retries=settings.default_retries if options.retries is None else options.retries,
        retry_on=options.retry_on,
        timeout=options.timeout,
        eta=eta,
        created_at=now,
        expires_at=deadline(eta, settings.task_ttl if options.ttl is DEFAULT else options.ttl),
        result_ttl=settings.result_ttl if options.result_ttl is DEFAULT else options.result_ttl,
        schedule=options.schedule,
        series=task_id if options.schedule is not None else None,
        at_most_once=options.at_most_once,
        kind=options.kind,
        origin=origin(),
        owner=None if options.shared else owner(),
    )


def task_name(fn: Callable[..., Any]) -> str:
    """Return a readable name for a callable: ``module.qualname`` (``__main__`` left out)."""
    target = getattr(fn, "func", fn)  # functools.partial
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or type(target).__name__
    module = getattr(target, "__module__", None)
    return name if module in (None, "__main__", "builtins") else f"{module}.{name}"


def failure(task: Task) -> TaskFailed:
    """Return the exception ``result()`` raises for a task that did not succeed.

    Args:
        task: a finished task whose status is not ``succeeded``.

    """
    error = task.error
    if task.status is TaskStatus.CANCELLED:
        error = TaskError(type="omniq_nb.errors.TaskCancelled", message="the task was cancelled", attempt=task.attempt)
    elif task.status is TaskStatus.EXPIRED:
        error = TaskError(
            type="omniq_nb.errors.TaskExpired", message="its ttl passed before a worker ran it", attempt=task.attempt
        )
    elif error is None:
        error = TaskError(
            type=type_name(TaskFailed), message=f"task ended as {task.status.value}", attempt=task.attempt
        )
    return failure_class(error.type)(error, task.id)


def _checked_calls(calls: Iterable[Sequence[Any]]) -> Iterator[tuple[Sequence[Any], Mapping[str, Any]]]:
    if not isinstance(calls, Iterable) or isinstance(calls, (str, bytes)):
        raise TypeError(f"calls={calls!r} must be an iterable of argument tuples such as [(1,), (2,)]")
    for index, args in enumerate(calls):
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"calls[{index}]={args!r} must be a tuple of positional arguments such as (x,)")
        yield args, {}


def _tasks(count: int, kind: str = "") -> str:
    """Return ``"1 task"`` or ``"3 finished tasks"``."""
    return f"{count} {kind + ' ' if kind else ''}task{'' if count == 1 else 's'}"


def _statuses(value: str | TaskStatus | Iterable[str | TaskStatus] | None) -> builtins.list[TaskStatus]:
    if value is None:
        return []
    if not isinstance(value, (str, Iterable)):
        raise TypeError(f"status={value!r} must be a status name or several, such as 'failed'")
    items = [value] if isinstance(value, str) else list(value)
    try:
        return [TaskStatus(item) for item in items]
    except ValueError:
        known = ", ".join(s.value for s in TaskStatus)
        raise ValueError(f"status={value!r} is not a task status; expected one of {known}") from None


class Caller(Protocol):
    """Runs coroutines of an ``AsyncOmniQ`` on its loop and waits for them (a portal, or a kernel)."""

    def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` to completion on the queue's loop and return its result."""
        ...

    def close(self) -> None:
        """Close the queue and release the loop."""
        ...


class OmniQ:
    """Blocking twin of ``AsyncOmniQ``: each method is one call through a private loop thread.

    Works in scripts, in threads, and in notebook cells (its loop runs on its own thread).
    Handles it returns block in ``result()``; ``await handle`` also works.

    Args:
        **options: as for ``AsyncOmniQ``.

    Example:
        >>> import operator
        >>> with OmniQ(db_url="memory://") as q:
        ...     q.enqueue(operator.add, 1, 2).status
        <TaskStatus.PENDING: 'pending'>

    """

    def __init__(self, **options: Any) -> None:
        portal = Portal(name="omniq-sync", owner="OmniQ", alternative="AsyncOmniQ")
        try:
            core = portal.call(_create, runner=portal.call, **options)
            portal.enter(core)
        except BaseException:
            portal.close()
            raise
        self._portal: Caller = portal
        self._core: AsyncOmniQ = core

    @classmethod
    def attached(cls, core: AsyncOmniQ, caller: Caller) -> OmniQ:
        """Wrap an open ``AsyncOmniQ`` whose loop ``caller`` runs coroutines on.

        The notebook layer uses this so that the kernel's queue, on the kernel's own loop, has
        the same blocking methods as any ``OmniQ``; ``close()`` then calls ``caller.close()``.

        Args:
            core: the open async queue.
            caller: runs ``core``'s coroutines to completion and blocks (``call``), and closes.
        """
        queue = cls.__new__(cls)
        queue._portal, queue._core = caller, core
        return queue

    @classmethod
    def from_env(cls, **overrides: Any) -> OmniQ:
        """Blocking version of ``AsyncOmniQ.from_env``."""
        return cls(**overrides)

    def __enter__(self) -> OmniQ:
        """Return the open queue."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the queue."""
        self.close()

    @property
    def settings(self) -> Settings:
        """Return the queue's settings."""
        return self._core.settings

    @property
    def core(self) -> AsyncOmniQ:
        """Return the ``AsyncOmniQ`` this twin drives (it lives on the twin's own loop)."""
        return self._core

    def close(self) -> None:
        """Blocking version of ``AsyncOmniQ.close``; also ends the loop thread."""
        self._portal.close()

    def enqueue(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskHandle:
        """Blocking version of ``AsyncOmniQ.enqueue``."""
        return self._portal.call(self._core.enqueue, fn, *args, **kwargs)

    def enqueue_call(
        self,
        fn: Callable[..., Any],
        /,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> TaskHandle:
        """Blocking version of ``AsyncOmniQ.enqueue_call``."""
        return self._portal.call(self._core.enqueue_call, fn, args=args, kwargs=kwargs, **options)

    def enqueue_many(self, fn: Callable[..., Any], /, calls: Iterable[Sequence[Any]], **options: Any) -> GroupHandle:
        """Blocking version of ``AsyncOmniQ.enqueue_many``."""
        return self._portal.call(self._core.enqueue_many, fn, calls, **options)

    def get(self, task_id: str, /) -> TaskHandle:
        """Blocking version of ``AsyncOmniQ.get``."""
        return self._portal.call(self._core.get, task_id)

    def list(
        self,
        *,
        status: str | TaskStatus | Iterable[str | TaskStatus] | None = None,
        queue: str | None = None,
        limit: int = _LIST_LIMIT,
    ) -> builtins.list[Task]:
        """Blocking version of ``AsyncOmniQ.list``."""
        return self._portal.call(self._core.list, status=status, queue=queue, limit=limit)

    def cancel(self, task_id: str, /) -> bool:
        """Blocking version of ``AsyncOmniQ.cancel``."""
        return self._portal.call(self._core.cancel, task_id)

    def retry(self, task_id: str, /) -> TaskHandle:
        """Blocking version of ``AsyncOmniQ.retry``."""
        return self._portal.call(self._core.retry, task_id)

    def purge(
        self,
        *,
        older_than: float | timedelta | None = None,
        status: str | TaskStatus | Iterable[str | TaskStatus] | None = None,
        everything: bool = False,
    ) -> int:
        """Blocking version of ``AsyncOmniQ.purge``."""
        return self._portal.call(self._core.purge, older_than=older_than, status=status, everything=everything)

    def purge_report(
        self,
        *,
        older_than: float | timedelta | None = None,
        status: str | TaskStatus | Iterable[str | TaskStatus] | None = None,
        everything: bool = False,
        command: str = "purge",
    ) -> str:
        """Blocking version of ``AsyncOmniQ.purge_report``."""
        return self._portal.call(
            self._core.purge_report, older_than=older_than, status=status, everything=everything, command=command
        )

    def check(self, *, stale_after: float | timedelta | None = None) -> StoreHealth:
        """Blocking version of ``AsyncOmniQ.check``."""
        return self._portal.call(self._core.check, stale_after=stale_after)

    def workers(self) -> builtins.list[WorkerInfo]:
        """Blocking version of ``AsyncOmniQ.workers``."""
        return self._portal.call(self._core.workers)

    def stop_worker(self, worker_id: str, /) -> bool:
        """Blocking version of ``AsyncOmniQ.stop_worker``."""
        return self._portal.call(self._core.stop_worker, worker_id)

    def events(self, *, task_id: str | None = None, since: int = 0, limit: int = 1000) -> builtins.list[TaskEvent]:
        """Blocking version of ``AsyncOmniQ.events``."""
        return self._portal.call(self._core.events, task_id=task_id, since=since, limit=limit)

    def on_event(self, listener: EventListener) -> Callable[[], None]:
        """Blocking version of ``AsyncOmniQ.on_event`` (the listener runs on the twin's loop thread)."""
        return self._portal.call(_subscribe, self._core, listener)

    def result(self, task_id: str, /, *, timeout: float | None = None) -> Any:
        """Blocking version of ``AsyncOmniQ.result``."""
        return self._portal.call(self._core.result, task_id, timeout=timeout)

    def results(
        self, task_ids: Sequence[str], /, *, timeout: float | None = None, return_exceptions: bool = False
    ) -> builtins.list[Any]:
        """Blocking version of ``AsyncOmniQ.results``."""
        return self._portal.call(self._core.results, task_ids, timeout=timeout, return_exceptions=return_exceptions)


async def _create(**options: Any) -> AsyncOmniQ:
    return AsyncOmniQ(**options)  # built on the portal's loop, which its locks and connections belong to


async def _subscribe(core: AsyncOmniQ, listener: EventListener) -> Callable[[], None]:
    return core.on_event(listener)
