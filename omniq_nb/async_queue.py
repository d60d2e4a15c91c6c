"""``AsyncOmniQ``: the task queue, async first; all queue behaviour lives here and in its roles.

Its roles live in modules of their own: building task rows (``omniq_nb.building``), reading
results (``omniq_nb.results``) and administration (``omniq_nb.admin``). Import the class
from ``omniq_nb`` or ``omniq_nb.core`` (the class's docstring has a runnable example).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import msgspec

from omniq_nb import caching, graph
from omniq_nb.admin import QueueAdmin, StatusFilter, statuses
from omniq_nb.bridge import LoopBridge, SameLoopBridge
from omniq_nb.building import BatchRows, checked_calls, task_template
from omniq_nb.config import Settings, configure_logging
from omniq_nb.errors import InvalidTransition, TaskNotFound
from omniq_nb.events import EventHub, EventListener
from omniq_nb.handles import GroupHandle, TaskHandle
from omniq_nb.history import HistoryReading, RunHistory
from omniq_nb.inputs import extract
from omniq_nb.models import Task, TaskStatus, batch_row, check_transition, new_task_id, new_task_ids
from omniq_nb.opening import OpensAndCloses
from omniq_nb.options import make_options
from omniq_nb.results import ResultReading
from omniq_nb.serialization import BlobSerializer
from omniq_nb.storage import Storage, open_stores

logger = logging.getLogger(__name__)
LIST_LIMIT = 100
"""How many tasks ``list()`` returns when no ``limit`` is given."""


class AsyncOmniQ(QueueAdmin, ResultReading, HistoryReading, OpensAndCloses):
    """The task queue, async first: enqueue, inspect, wait for, cancel and retry tasks.

    Settings come from defaults < YAML < ``OMNIQ_*`` env < the keyword arguments given here.
    Nothing runs a task without a worker pool (``AsyncWorkerPool``) on the same store.
    Administration (``purge``, ``check``, ``workers``, ...) comes from ``QueueAdmin``, and
    ``result`` / ``results`` from ``ResultReading``, ``stats`` from ``HistoryReading``.

    Args:
        settings: a complete ``Settings`` to start from instead of reading YAML and env.
        storage: a store to use instead of opening ``settings.db_url`` (with ``result_url``
            and ``events_url``).
        bridge: how code off the queue's loop runs its coroutines, handles included
            (default ``SameLoopBridge``: handles hand coroutines back to be awaited; the sync
            twin and the notebook pass a blocking bridge).
        **overrides: settings by lower-case name, such as ``db_url="sqlite:///jobs.db"``.

    Raises:
        ConfigError: a setting is invalid.
        TypeError: an override names no setting.

    Example:
        >>> import asyncio
        >>> from omniq_nb import AsyncWorkerPool
        >>> async def main():
        ...     async with AsyncOmniQ(db_url="memory://") as q:
        ...         pool = AsyncWorkerPool(q, concurrency=1)    # a result needs a worker pool
        ...         await pool.start()
        ...         try:
        ...             h = await q.enqueue(sum, [1, 2])
        ...             return await h.result(timeout=10)
        ...         finally:
        ...             await pool.stop()
        >>> asyncio.run(main())
        3

    """

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        storage: Storage | None = None,
        bridge: LoopBridge | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = settings.with_overrides(**overrides) if settings else Settings.from_env(**overrides)
        configure_logging(self.settings)
        self.storage: Storage = storage or open_stores(self.settings)
        self.serializer = BlobSerializer(self.settings.secret)
        self._bridge: LoopBridge = bridge or SameLoopBridge()
        self._hub = EventHub(self.storage, self.settings, writes_published=storage is None)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._local_writes: builtins.list[Callable[[Sequence[Task]], None]] = []
        self.history = RunHistory(self.storage)

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
    def bridge(self) -> LoopBridge:
        """Return how code off the queue's loop runs its coroutines (handles; the sync twin; pools of ``OmniQ``)."""
        return self._bridge

    def on_local_write(self, callback: Callable[[Sequence[Task]], None]) -> Callable[[], None]:
        """Call ``callback`` after each write published here (pools use it to wake at once).

        Args:
            callback: a cheap, non-blocking callable given the rows the write inserted or
                returned (empty when it returned none).

        Returns:
            A function that removes the callback.

        """
        self._local_writes.append(callback)
        return partial(self._local_writes.remove, callback)

    def publish(self, tasks: Sequence[Task] = ()) -> None:
        """Tell this process that the store changed: ``tasks`` are rows a local write inserted or returned.

        Handles and result waiters get the new snapshots at once, event listeners are woken,
        and so are idle pools of this process (``on_local_write``); the runs of succeeded
        tasks join the run history (``stats``).
        """
        self._hub.deliver(tasks)
        self._hub.nudge()
        self.history.note(tasks)
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
        task_options = make_options(**options)
        template = await task_template(fn, task_options, self.settings, self.storage)
        call_args, call_kwargs, upstream = extract(args, kwargs or {})
        keyed = caching.call_keys(fn, task_options, template.name, [(call_args, call_kwargs, upstream)])
        [hit] = await caching.reuse(self.storage, keyed.keys, task_options.cache_ttl)
        if hit is not None:
            return self._handle(hit)
        template = graph.waiting_for(template, upstream)
        task_id = new_task_id()
        task = msgspec.structs.replace(
            template,
            id=task_id,
            payload=self.serializer.dump_call(fn, call_args, call_kwargs),
            series=task_id if template.series is not None else None,
            cache_key=keyed.keys[0],
        )
        caching.warn(template.name, keyed)
        [task] = await self._insert([task])
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
        task_options = make_options(**options)
        template = await task_template(fn, task_options, self.settings, self.storage)
        extracted = [extract(args, kwargs) for args, kwargs in checked_calls(calls)]
        keyed = caching.call_keys(fn, task_options, template.name, extracted)
        hits = await caching.reuse(self.storage, keyed.keys, task_options.cache_ttl)
        todo, keys = caching.unanswered(extracted, keyed.keys, hits)
        each_own_row = bool(template.depends_on or any(upstream for _, _, upstream in todo) or any(keys))
        # a plain batch's rows name its function, kept once with them (insert_many); other rows carry it
        shared = self.serializer.share_callable(fn) if not each_own_row and len(todo) > 1 else None
        # lazy: the store pickles each call as it reads it, and one that fails inserts none
        payloads = self.serializer.dump_calls(fn, ((a, k) for a, k, _ in todo), shared)
        caching.warn(template.name, keyed)
        ids = new_task_ids(len(todo))
        queued: Iterator[tuple[Task, str]]
        if each_own_row:
            rows = zip(ids, payloads, todo, keys, strict=True)
            tasks = await self._insert(
                [
                    msgspec.structs.replace(
                        batch_row(graph.waiting_for(template, upstream), task_id), payload=payload, cache_key=key
                    )
                    for task_id, payload, (_, _, upstream), key in rows
                ]
            )
            queued = iter([(task, task.id) for task in tasks])
        else:  # rows that differ only by id and payload: the payloads go to the store, the handles share a row
            if ids:  # the store reads the payloads as it writes them: a large batch never holds them all
                await self.storage.insert_many(template, zip(ids, payloads, strict=True), shared)
                self.publish(BatchRows(template, ids))
            queued = ((template, task_id) for task_id in ids)
        del extracted, todo, keys, keyed, payloads  # freed before the handles are made: they reuse that memory
        made = [TaskHandle(self, *next(queued)) if t is None else self._handle(t) for t in hits]
        new = made if len(hits) == len(ids) else [h for h, t in zip(made, hits, strict=True) if t is None]
        return GroupHandle(self, made, self._hub.followers.watch_batch(new))  # followed as one, in id order

    async def _insert(self, tasks: builtins.list[Task]) -> builtins.list[Task]:
        """Insert tasks; those with dependencies wait, or move on at once if these already finished."""
        await graph.check_known(self.storage, tasks)
        await self.storage.insert(tasks)
        self.publish(tasks)
        moved = {task.id: task for task in await graph.followed(graph.arm(self.storage, tasks), "new tasks")}
        if moved:
            self.publish(builtins.list(moved.values()))
        return [moved.get(task.id, task) for task in tasks]

    async def get(self, task_id: str, /) -> TaskHandle:
        """Return a handle on an existing task (also one made by another process or kernel).

        Raises:
            TaskNotFound: no task has this id.

        """
        return self._handle(await self._task(task_id))

    async def list(
        self,
        *,
        status: StatusFilter = None,
        queue: str | None = None,
        limit: int = LIST_LIMIT,
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
        return await self.storage.list(statuses=statuses(status), queue=queue, limit=limit)

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
        self.publish([task, *await graph.followed(graph.settle_dependents(self.storage, [task]), task_id)])
        return task.status is TaskStatus.CANCELLED

    async def retry(self, task_id: str, /) -> TaskHandle:
        """Queue a failed, cancelled or expired task again, allowing one more attempt.

        A task that a dependency stopped waits again instead (and runs once its dependencies
        succeed); the tasks a failure stopped wait again too.

        Raises:
            TaskNotFound: no task has this id.
            InvalidTransition: the task is pending, running or has succeeded.

        """
        current = await self._task(task_id)
        if current.status in (TaskStatus.RUNNING, TaskStatus.WAITING):
            raise InvalidTransition(
                f"task {task_id} is {current.status.value}; only a finished task that failed can be retried"
            )
        check_transition(current.status, TaskStatus.PENDING)
        if rearmed := await graph.wait_again(self.storage, current):  # a dependency stopped it: it waits again
            self.publish(rearmed)
            return self._handle(rearmed[0])
        task = await self.storage.requeue(task_id)
        if task is None:
            raise TaskNotFound(f"no task with id {task_id!r} in {self.storage.url}")
        self.publish([task, *await graph.followed(graph.rearm_dependents(self.storage, task), task_id)])
        return self._handle(task)

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

    async def _task(self, task_id: str) -> Task:
        task = await self.storage.get(task_id)
        if task is None:
            raise TaskNotFound(f"no task with id {task_id!r} in {self.storage.url}")
        return task

    def _handle(self, task: Task) -> TaskHandle:
        self._hub.followers.watch(handle := TaskHandle(self, task))
        return handle
