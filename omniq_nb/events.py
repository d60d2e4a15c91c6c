"""Fan stored ``TaskEvent``s out to ``on_event`` listeners, live handles and result waiters.

The store is the source of truth: one background task follows the store's event stream
(``events(since=cursor)``) and, as a safety net, re-reads the tasks someone waits on. Local
writers hand the rows they changed to ``deliver()`` and call ``nudge()``, so what happens in
this process is seen at once; what other processes do is seen at the next poll (a SQLite store
leaves out the events its own inserts, claims and settles stamped while no listener wants them
all: ``OthersEvents``; their rows came through ``deliver``). While
nobody listens or watches, the follower only moves its cursor to the newest event (one
cheap query per poll), so a listener that subscribes later misses nothing from then on.

Waiting costs what changed, not what is followed: a poll reads the new events and touches only their
tasks' handles and waiters; ``wait_many`` waits for a set of tasks with one waiter, reads the
unfinished ones in one batch, and answers from a handle that already holds a task's finished row
without asking the store. Handles whose owner dropped them are forgotten at the next poll, at a
cost that follows how many went, not how many are followed.
The new handles of one ``enqueue_many`` are followed through their ``HandleBatch`` (one weak
reference for the batch, not one per handle), which their group holds (``following.py``).

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

from omniq_nb.config import Settings
from omniq_nb.errors import StorageError, StoreLost
from omniq_nb.following import Followed, Followers, Watched, live
from omniq_nb.jobs import cancel_and_wait, keep_running, retrieve
from omniq_nb.models import EventKind, Task, TaskEvent
from omniq_nb.storage.base import OthersEvents, Storage
from omniq_nb.waiters import Expiries, Waiter

logger = logging.getLogger(__name__)

_FAST_POLL = 0.02  # seconds between polls while a result is awaited
_CLOSE_WAIT = 2.0  # seconds close() waits for the follower to stop (a healthy one takes milliseconds)
_CLOSE_POLL = 0.1  # seconds between polls while a live view observes a task
_RECHECK_EVERY = 1.0  # seconds between direct re-reads of awaited tasks
_RECHECK_AT_MOST = 500  # awaited tasks re-read each time when events are recorded (in turn, if more)
_EVENT_BATCH = 1000

EventListener = Callable[[TaskEvent], object]
"""A callable given each event; it may be a coroutine function."""


class EventHub:
    """Follow the store's events and tell listeners, handles and waiters.

    Args:
        storage: the store to follow.
        settings: ``poll_interval`` (between polls while nothing is awaited) and ``events``
            (whether the store records events; without them only task snapshots are polled).
        writes_published: every write through ``storage`` hands its rows to ``deliver`` (the
            queue made the store object itself: no one else writes through it), so the events
            it stamped as its own may be skipped.

    """

    def __init__(self, storage: Storage, settings: Settings, *, writes_published: bool = False) -> None:
        self._storage = storage
        self._others = storage if writes_published and isinstance(storage, OthersEvents) else None
        self._poll_interval = settings.poll_interval
        self._events_recorded = settings.events
        self._listeners: list[EventListener] = []
        self.followers = Followers(self._refresh)
        """The handles this hub keeps current (``watch``, ``watch_batch``)."""
        self._waiters: dict[str, list[Waiter]] = {}
        self._expiries = Expiries()
        self._batch: asyncio.Task[dict[str, Task]] | None = None  # the next read of tasks waits start on
        self._batch_ids: set[str] = set()
        self._cursor = 0
        self._wake: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._checked_at = 0.0
        self._recheck_from = 0  # where the next bounded re-read of awaited tasks starts
        self._pending_callbacks: set[asyncio.Future[object]] = set()
        self._close: dict[str, weakref.ref[Watched]] = {}
        self._closing = False
        self._hurried = False  # the follower was woken only because a wait began (it then polls sooner, not now)
        self._failure: StorageError | None = None  # why the follower's last poll failed

    async def start(self) -> None:
        """Place the cursor at the newest event and start following the store."""
        self._cursor = await self._storage.last_event_seq()
        self._checked_at = time.monotonic()  # the first safety re-read of awaited tasks comes a second from now
        self._wake = asyncio.Event()
        self.followers.loop = asyncio.get_running_loop()
        self._runner = self.followers.loop.create_task(self._follow(), name="omniq-event-hub")

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

    def watch_closely(self, handle: Watched) -> None:
        """Keep ``handle`` current promptly: local writes wake the follower, which polls often."""
        self.followers.watch(handle)
        if not handle.done():
            self._close[handle.id] = weakref.ref(handle)
            self.nudge()

    async def wait_many(
        self, task_ids: Iterable[str], timeout: float | None, *, until_failure: bool = False
    ) -> dict[str, Task | None]:
        """Wait until the tasks are finished; return each one's finished row (``None``: no such task).

        A task whose finished row a live handle already holds is answered from it (as fresh as
        the handle: a retry by another process is seen at the next poll); the others are read
        from the store in one batch (but for those a live handle follows through the events),
        then followed through local writes, the store's events and a re-read once a second.

        Args:
            task_ids: the tasks' ids.
            timeout: seconds for all of them together, or ``None`` to wait for ever.
            until_failure: return early, with only the tasks finished so far, as soon as one of
                them did not succeed.

        Raises:
            TimeoutError: not all finished in time.

        """
        waiter = Waiter(task_ids, until_failure=until_failure)
        for task_id in list(waiter.pending):
            if (task := self._finished_row(task_id)) is not None:
                waiter.settle(task_id, task)
        unknown = tuple(waiter.pending)
        if not unknown or waiter.future.done():
            return waiter.found
        if not self._waiters and self._wake is not None and not self._wake.is_set():
            self._hurried = True  # poll fast from now on, first in _FAST_POLL: the read below covers now
            self._wake.set()
        for task_id in unknown:
            self._waiters.setdefault(task_id, []).append(waiter)
        # the events keep live handles' snapshots current, as long as the follower reads them
        followed = self._events_recorded and self._runner is not None and self._failure is None
        unread = _unfollowed(self.followers.watched, unknown) if followed else unknown
        try:
            rows = await asyncio.shield(self._batched_read(unread)) if unread else {}
            for task_id in unread:
                task = rows.get(task_id)
                if task is None or task.status.is_terminal:
                    waiter.settle(task_id, task)
            tick = None if timeout is None else self._expiries.add(waiter, timeout)
            try:
                await waiter.future
            finally:
                if tick is not None:
                    self._expiries.discard(waiter, tick)
            return waiter.found
        finally:
            self._forget(waiter, unknown)

    def _batched_read(self, task_ids: Iterable[str]) -> asyncio.Future[dict[str, Task]]:
        """Read ``task_ids`` with the other waits that start in this loop iteration (one ``get_many``)."""
        if self._batch is None:
            self._batch_ids = set()
            self._batch = asyncio.get_running_loop().create_task(self._read_batch())
            self._batch.add_done_callback(retrieve)  # its waiters got its failure, or all gave up
        self._batch_ids.update(task_ids)
        return self._batch

    async def _read_batch(self) -> dict[str, Task]:
        await asyncio.sleep(0)  # the waits of an ``asyncio.gather`` start one after another: let them join
        task_ids, self._batch = list(self._batch_ids), None
        return {task.id: task for task in await self._storage.get_many(task_ids)}

    def _forget(self, waiter: Waiter, task_ids: Iterable[str]) -> None:
        """Stop telling ``waiter`` about ``task_ids``, the tasks it was registered for (it returned or gave up)."""
        for task_id in task_ids:
            waiters = self._waiters.get(task_id)
            if waiters is None:  # the common case: its finished row took them all
                continue
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                del self._waiters[task_id]
        waiter.future.cancel()

    def _finished_row(self, task_id: str) -> Task | None:
        """Return the finished row a live handle holds, if events are recorded (so a retry is seen)."""
        if self._events_recorded:
            for handle in live(self.followers.finished.get(task_id), task_id):
                if (task := handle._finished_row()) is not None:
                    return task
        return None

    def nudge(self) -> None:
        """Ask the follower to read new events now, if a listener or a live view wants them (after a local write).

        Result waiters do not need it: the rows a local write returns reach them through
        ``deliver`` (an event read per write would cost a store query for every batch the
        pool settles), and what other processes do through the fast poll.
        """
        if self._wake is not None and (self._listeners or self._close):
            self._hurried = False
            self._wake.set()

    async def close(self) -> None:
        """Stop following; pending waits raise ``asyncio.CancelledError``."""
        self._closing = True  # ends the loop even if the cancel below is swallowed (wait_for, 3.11)
        runner, self._runner = self._runner, None
        if runner is not None:
            if self._wake is not None:
                self._wake.set()
            if not await cancel_and_wait([runner], within=_CLOSE_WAIT, patience=0.05):  # it holds nothing to clean up
                logger.warning("the event follower did not stop within %s s; closing without it", _CLOSE_WAIT)
            elif not runner.cancelled() and runner.exception() is not None:
                logger.debug("the event follower ended with %r", runner.exception())
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.future.cancel()
        self._waiters.clear()

    async def _follow(self) -> None:
        while not self._closing:
            try:
                await self._poll()
                self._failure = None
            except asyncio.CancelledError:
                raise
            except StorageError as exc:  # the store's own one-line message says what is wrong
                # a store that stays unreachable is reported once, not at every poll
                log = logger.debug if self._failure is not None else logger.error
                log("polling the store for events failed; retrying: %s", exc)
                self._failure = exc
                if isinstance(exc, StoreLost):  # for good: no awaited task can finish any more
                    for waiters in list(self._waiters.values()):
                        for waiter in waiters:
                            waiter.fail(exc)
            except Exception:
                logger.exception("polling the store for events failed; retrying")
            await self._pause()

    async def _pause(self) -> None:
        """Wait for a nudge or the interval, which follows who waits (a wait that begins restarts it)."""
        assert self._wake is not None
        clock = asyncio.get_running_loop().time
        start, self._hurried = clock(), False
        while True:
            self._wake.clear()
            interval = _FAST_POLL if self._waiters else _CLOSE_POLL if self._close else self._poll_interval
            if (left := start + interval - clock()) <= 0:
                return
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                nudged, _ = await asyncio.wait({woken}, timeout=left)
            finally:
                woken.cancel()
            if self._closing or (nudged and not self._hurried):
                return
            if nudged:  # only a wait began: the fast interval, from now
                start, self._hurried = clock(), False

    async def _poll(self) -> None:
        if self._events_recorded:
            await self._read_events()
        now = time.monotonic()
        if self._waiters and (not self._events_recorded or now - self._checked_at >= _RECHECK_EVERY):
            self._checked_at = now
            wanted = self._to_recheck()
            rows = await self._storage.get_many(wanted)
            self.deliver(rows)
            for task_id in set(wanted) - {task.id for task in rows}:  # purged: there is no result to wait for
                for waiter in self._waiters.pop(task_id, ()):
                    waiter.settle(task_id, None)
        self.followers.forget_dropped()
        self._close = {i: ref for i, ref in self._close.items() if (h := ref()) is not None and not h.done()}
        if not self._events_recorded and self.followers.watched:
            self.deliver(await self._storage.get_many(list(self.followers.watched)))

    def _to_recheck(self) -> list[str]:
        """Return the awaited tasks to re-read: all without events, else a bounded share in turn.

        Events tell what finished; the re-read is only a safety net, so it must not cost a
        read of every awaited task each second while thousands are awaited.
        """
        awaited = list(self._waiters)
        if not self._events_recorded or len(awaited) <= _RECHECK_AT_MOST:
            return awaited
        start = self._recheck_from if self._recheck_from < len(awaited) else 0
        self._recheck_from = start + _RECHECK_AT_MOST
        return awaited[start : self._recheck_from]

    async def _read_events(self) -> None:
        followers = self.followers
        if not (self._listeners or followers.watched or self._waiters or followers.finished):
            self._cursor = await self._storage.last_event_seq()
            return
        while True:
            events, self._cursor = await self._next_events()
            if not events:
                return
            reread: set[str] = set()  # tasks whose row handles need: finished ones, and finished ones retried
            for event in events:
                for handle in live(followers.watched.get(event.task_id), event.task_id):
                    handle._apply_event(event)
                self._tell_listeners(event)
                awaited = event.task_id in self._waiters or event.task_id in followers.watched
                if (event.status.is_terminal and awaited) or (
                    event.kind is EventKind.RETRIED and event.task_id in followers.finished
                ):
                    reread.add(event.task_id)
            if reread:
                self.deliver(await self._storage.get_many(list(reread)))
            if len(events) < _EVENT_BATCH:
                return

    async def _next_events(self) -> tuple[list[TaskEvent], int]:
        """Read the next events (at most ``_EVENT_BATCH``) and return them with the cursor after them.

        With no listener, a store that knows its own events leaves them out: the rows of this
        process's writes reached the handles and waiters already (``deliver``).
        """
        if self._others is not None and not self._listeners:
            return await self._others.others_events(since=self._cursor, limit=_EVENT_BATCH)
        events = await self._storage.events(since=self._cursor, limit=_EVENT_BATCH)
        return events, events[-1].seq if events else self._cursor

    def deliver(self, tasks: Iterable[Task]) -> None:
        """Update handles and wake waiters with fresh snapshots (from a local write or a poll).

        Handles of a finished task get it too: a retried task's handles follow it again.
        """
        take, waiters = self.followers.take, self._waiters
        for task in tasks:
            for handle in take(task):
                handle._apply_task(task)
            if waiters and task.status.is_terminal:
                for waiter in waiters.pop(task.id, ()):
                    waiter.settle(task.id, task)

    def _refresh(self, task_ids: list[str]) -> None:
        """Read these tasks' rows again and deliver them (their handles may have missed a change); on the loop."""

        async def reread() -> None:
            try:
                self.deliver(await self._storage.get_many(task_ids))
            except StorageError as exc:  # the next change or a wait's re-read brings them
                logger.debug("reading %d followed tasks again failed: %s", len(task_ids), exc)

        keep_running(reread(), self._pending_callbacks)

    def _tell_listeners(self, event: TaskEvent) -> None:
        for listener in list(self._listeners):
            try:
                outcome = listener(event)
                if inspect.isawaitable(outcome):
                    keep_running(outcome, self._pending_callbacks)
            except Exception:
                logger.exception(
                    "on_event listener %r failed on event %s of task %s", listener, event.kind, event.task_id
                )


def _unfollowed(watched: dict[str, Followed], task_ids: tuple[str, ...]) -> tuple[str, ...]:
    """Return the tasks whose rows a wait must read: those no live handle in ``watched`` follows.

    A tuple, and a helper of its own: what a pending wait holds (its frame's values, no
    closure cells) stays out of the garbage collector's way, for the ten thousand waits of
    an ``asyncio.gather``.
    """
    return tuple(task_id for task_id in task_ids if not live(watched.get(task_id), task_id))
