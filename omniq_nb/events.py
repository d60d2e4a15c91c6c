"""Fan stored ``TaskEvent``s out to ``on_event`` listeners, live handles and result waiters.

The store is the source of truth: one background task follows the store's event stream
(``events(since=cursor)``) and, as a safety net, re-reads the tasks someone waits on. Local
writers hand the rows they changed to ``deliver()`` and call ``nudge()``, so what happens in
this process is seen at once; what other processes do is seen at the next poll. While
nobody listens or watches, the follower only moves its cursor to the newest event (one
cheap query per poll), so a listener that subscribes later misses nothing from then on.

Handles of finished tasks are remembered too (weakly): a finished task can come back
(retried, here or by another process), and its handles then follow it again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Protocol

from omniq_nb.errors import StorageError
from omniq_nb.models import EventKind, Task, TaskEvent
from omniq_nb.storage.base import Storage

logger = logging.getLogger(__name__)

_FAST_POLL = 0.02  # seconds between polls while a result is awaited
_CLOSE_POLL = 0.1  # seconds between polls while a live view observes a task
_RECHECK_EVERY = 1.0  # seconds between direct re-reads of awaited tasks
_EVENT_BATCH = 1000
_SWEEP_EVERY = 30.0  # seconds between sweeps of the handles of finished tasks that were dropped
_PRUNE_AT_LEAST = 1000  # followed ids before ``watch`` drops those whose handles are gone

EventListener = Callable[[TaskEvent], object]
"""A callable given each event; it may be a coroutine function."""


class Watched(Protocol):
    """What the hub keeps current: anything holding a task snapshot (a handle)."""

    id: str

    def _apply_event(self, event: TaskEvent) -> None: ...

    def _apply_task(self, task: Task) -> None: ...

    def done(self) -> bool:
        """Return True once the task has finished."""
        ...


class EventHub:
    """Follow the store's events and tell listeners, handles and waiters.

    Args:
        storage: the store to follow.
        poll_interval: seconds between polls when nothing is awaited.
        events_recorded: whether the store records events (``OMNIQ_EVENTS``); without them
            only task snapshots are polled and listeners hear nothing.

    """

    def __init__(self, storage: Storage, *, poll_interval: float, events_recorded: bool) -> None:
        self._storage = storage
        self._poll_interval = poll_interval
        self._events_recorded = events_recorded
        self._listeners: list[EventListener] = []
        self._watched: dict[str, list[weakref.ref[Watched]]] = {}
        self._finished: dict[str, list[weakref.ref[Watched]]] = {}
        self._swept_at = time.monotonic()
        self._prune_at = _PRUNE_AT_LEAST
        self._waiters: dict[str, list[asyncio.Future[Task]]] = {}
        self._cursor = 0
        self._wake: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._checked_at = 0.0
        self._pending_callbacks: set[asyncio.Future[object]] = set()
        self._close: dict[str, weakref.ref[Watched]] = {}
        self._closing = False

    async def start(self) -> None:
        """Place the cursor at the newest event and start following the store."""
        self._cursor = await self._storage.last_event_seq()
        self._wake = asyncio.Event()
        self._runner = asyncio.get_running_loop().create_task(self._follow(), name="omniq-event-hub")

    def subscribe(self, listener: EventListener) -> Callable[[], None]:
        """Call ``listener`` with every event from now on; return a function that unsubscribes.

        Args:
            listener: a callable (or coroutine function) taking one ``TaskEvent``. Exceptions it
                raises are logged, never propagated.

        """
        self._listeners.append(listener)
        self.nudge()

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def watch(self, handle: Watched) -> None:
        """Keep ``handle``'s snapshot current while it lives (a finished task's only if it is retried)."""
        followed = (self._finished if handle.done() else self._watched).setdefault(handle.id, [])
        if followed and any(ref() is handle for ref in followed):
            return  # already followed (a new handle, the common case, skips this scan)
        followed.append(weakref.ref(handle))
        if len(self._watched) + len(self._finished) > self._prune_at:
            self._prune()  # amortized: a stream of enqueues outpaces the follower, whose poll also prunes

    def _prune(self) -> None:
        """Forget ids none of whose handles are alive; prune again once twice as many are followed.

        The poll prunes too, but only after reading every new event: a process that keeps
        enqueuing adds events faster than one poll reads them, so without this one entry per
        task ever enqueued would stay.
        """
        self._watched, self._finished = _alive(self._watched), _alive(self._finished)
        self._prune_at = max(_PRUNE_AT_LEAST, 2 * (len(self._watched) + len(self._finished)))

    def watch_closely(self, handle: Watched) -> None:
        """Keep ``handle`` current promptly: local writes wake the follower, which polls often."""
        self.watch(handle)
        if not handle.done():
            self._close[handle.id] = weakref.ref(handle)
            self.nudge()

    async def wait(self, task_id: str, timeout: float | None) -> Task | None:
        """Wait until the task is finished and return it (``None`` if it does not exist).

        Args:
            task_id: the task's id.
            timeout: seconds, or ``None`` to wait for ever.

        Raises:
            TimeoutError: the task did not finish in time.

        """
        future: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, []).append(future)
        if self._wake is not None:
            self._wake.set()  # poll fast from now on
        try:
            task = await self._storage.get(task_id)
            if task is None or task.status.is_terminal:
                return task
            return await asyncio.wait_for(future, timeout)
        finally:
            futures = self._waiters.get(task_id, [])
            if future in futures:
                futures.remove(future)
            if not futures:
                self._waiters.pop(task_id, None)
            future.cancel()

    def nudge(self) -> None:
        """Ask the follower to read new events now, if a listener wants them (after a local write)."""
        if self._wake is not None and (self._listeners or self._waiters or self._close):
            self._wake.set()

    async def close(self) -> None:
        """Stop following; pending waits raise ``asyncio.CancelledError``."""
        self._closing = True  # ends the loop even if the cancel below is swallowed (wait_for, 3.11)
        runner, self._runner = self._runner, None
        if runner is not None:
            if self._wake is not None:
                self._wake.set()
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    async def _follow(self) -> None:
        assert self._wake is not None
        while not self._closing:
            try:
                await self._poll()
            except asyncio.CancelledError:
                raise
            except StorageError as exc:  # the store's own one-line message says what is wrong
                logger.error("polling the store for events failed; retrying: %s", exc)
            except Exception:
                logger.exception("polling the store for events failed; retrying")
            self._wake.clear()
            interval = _FAST_POLL if self._waiters else _CLOSE_POLL if self._close else self._poll_interval
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({woken}, timeout=interval)
            finally:
                woken.cancel()

    async def _poll(self) -> None:
        if self._events_recorded:
            await self._read_events()
        now = time.monotonic()
        if self._waiters and (not self._events_recorded or now - self._checked_at >= _RECHECK_EVERY):
            self._checked_at = now
            self.deliver(await self._storage.get_many(list(self._waiters)))
        self._watched = _alive(self._watched)
        self._close = {i: ref for i, ref in self._close.items() if (h := ref()) is not None and not h.done()}
        if now - self._swept_at >= _SWEEP_EVERY:
            self._swept_at = now
            self._finished = _alive(self._finished)
        if not self._events_recorded and self._watched:
            self.deliver(await self._storage.get_many(list(self._watched)))

    async def _read_events(self) -> None:
        if not (self._listeners or self._watched or self._waiters or self._finished):
            self._cursor = await self._storage.last_event_seq()
            return
        while True:
            events = await self._storage.events(since=self._cursor, limit=_EVENT_BATCH)
            if not events:
                return
            self._cursor = events[-1].seq
            reread: set[str] = set()  # tasks whose row handles need: finished ones, and finished ones retried
            for event in events:
                for handle in self._handles(event.task_id):
                    handle._apply_event(event)
                self._tell_listeners(event)
                awaited = event.task_id in self._waiters or event.task_id in self._watched
                if (event.status.is_terminal and awaited) or (
                    event.kind is EventKind.RETRIED and event.task_id in self._finished
                ):
                    reread.add(event.task_id)
            if reread:
                self.deliver(await self._storage.get_many(list(reread)))
            if len(events) < _EVENT_BATCH:
                return

    def deliver(self, tasks: Iterable[Task]) -> None:
        """Update handles and wake waiters with fresh snapshots (from a local write or a poll).

        Handles of a finished task get it too: a retried task's handles follow it again.
        """
        for task in tasks:
            handles: list[Watched] = []
            for ref in self._watched.pop(task.id, []) + self._finished.pop(task.id, []):
                if (handle := ref()) is not None and all(handle is not seen for seen in handles):
                    handles.append(handle)
            if handles:
                followed = self._finished if task.status.is_terminal else self._watched
                followed[task.id] = [weakref.ref(handle) for handle in handles]
            for handle in handles:
                handle._apply_task(task)
            if task.status.is_terminal:
                for future in self._waiters.get(task.id, []):
                    if not future.done():
                        future.set_result(task)

    def _handles(self, task_id: str) -> list[Watched]:
        return [handle for ref in self._watched.get(task_id, ()) if (handle := ref()) is not None]

    def _tell_listeners(self, event: TaskEvent) -> None:
        for listener in list(self._listeners):
            try:
                outcome = listener(event)
                if inspect.isawaitable(outcome):
                    pending = asyncio.ensure_future(outcome)
                    self._pending_callbacks.add(pending)
                    pending.add_done_callback(self._pending_callbacks.discard)
            except Exception:
                logger.exception(
                    "on_event listener %r failed on event %s of task %s", listener, event.kind, event.task_id
                )


def _alive(followed: dict[str, list[weakref.ref[Watched]]]) -> dict[str, list[weakref.ref[Watched]]]:
    """Return ``followed`` without the tasks all of whose handles are gone."""
    return {i: refs for i, refs in followed.items() if any(ref() is not None for ref in refs)}
