"""Which handles follow which task, so that the event hub keeps their snapshots current.

The hub holds handles weakly, by task id, unfinished and finished apart (a finished task's
handles only need its retry). One weak reference per handle cost more than the handle
(100,000 handles of a ``.map()``: 8 MB), so the new handles of one ``enqueue_many`` are
followed through their ``HandleBatch``, one reference for all, which their group holds. When
the group goes, the members still held elsewhere are followed one by one from the next turn
of the hub's loop: until then the batch follows them, or, when the cyclic garbage collector
took the group (weak references to garbage are cleared first), their rows are read again.
Forgetting what went costs what went: a handle's own reference (``HandleRef``) names its task
when the handle goes, and a released batch names its tasks; no poll scans every followed task.

Example:
    >>> class Held:
    ...     def __init__(self, task_id: str) -> None:
    ...         self.id = task_id
    >>> batch = HandleBatch([Held("a"), Held("b")], on_drop=print)
    >>> [held.id for held in live(weakref.ref(batch), "b")], live(weakref.ref(batch), "c")
    (['b'], [])

"""

from __future__ import annotations

import asyncio
import bisect
import collections
import operator
import weakref
from collections.abc import Callable, Sequence
from typing import Protocol

from omniq_nb.models import Task, TaskEvent, batch_position

_FORGET_AT = 1000  # handles gone before ``_add`` forgets them itself (the hub's poll does otherwise)


class Watched(Protocol):
    """What the hub keeps current: anything holding a task snapshot (a handle)."""

    id: str

    def _apply_event(self, event: TaskEvent) -> None: ...

    def _apply_task(self, task: Task) -> None: ...

    def done(self) -> bool:
        """Return True once the task has finished."""
        ...

    def _finished_row(self) -> Task | None:
        """Return the task's stored row if it is finished (not a snapshot folded from events)."""
        ...


class HandleBatch:
    """The new tasks' handles of one ``enqueue_many``, followed as one: the hub keeps one weak reference for all.

    A weak reference per handle cost more than the handle itself (100,000 handles of a
    ``.map()``: 8 MB of them). The group holds its batch and calls ``drop`` when it goes;
    the members still held elsewhere are then followed one by one (``Followers``).

    Args:
        handles: the batch's handles, in increasing id order (``new_task_ids`` makes them so).
        on_drop: called with the batch by ``drop``.

    """

    __slots__ = ("__weakref__", "_on_drop", "handles", "ref")

    def __init__(self, handles: Sequence[Watched], on_drop: Callable[[HandleBatch], object]) -> None:
        self.handles = tuple(handles)  # its own: reordering the group's list must not hide a handle
        self._on_drop = on_drop
        self.ref: Follower = weakref.ref(self)
        """The reference the hub follows the handles by (dead once the garbage collector took the batch)."""

    def drop(self) -> None:
        """Say that the group is gone (any thread): its handles still held are to be followed one by one."""
        self._on_drop(self)

    def member(self, task_id: str) -> Watched | None:
        """Return the handle of ``task_id``, or ``None`` if it is not in this batch."""
        handles = self.handles
        index = batch_position(task_id)  # where new_task_ids put it: found at once
        if not (0 <= index < len(handles) and handles[index].id == task_id):
            index = bisect.bisect_left(handles, task_id, key=_ID_OF)
        if index < len(handles) and (handle := handles[index]).id == task_id:
            return handle
        return None


_ID_OF = operator.attrgetter("id")


Follower = weakref.ref[Watched | HandleBatch]
"""A weak reference to a followed handle, or to the batch of handles it belongs to."""
Followed = Follower | tuple[Follower, ...]
"""Who follows one task: a weak reference (to a handle or its batch), or a tuple of them when there are several.

One handle per task is the rule (100,000 submitted tasks, 100,000 handles): a bare weak
reference saves a container per task.
"""


def refs_of(followed: Followed | None) -> tuple[Follower, ...]:
    """Return the weak references of one task's ``Followed`` entry (none for ``None``)."""
    if followed is None:
        return ()
    return (followed,) if isinstance(followed, weakref.ref) else followed


def followed_by(refs: Sequence[Follower]) -> Followed:
    """Return the ``Followed`` entry of ``refs`` (at least one)."""
    return refs[0] if len(refs) == 1 else tuple(refs)


def living(followed: Followed | None) -> list[Follower]:
    """Return the references of ``followed`` whose handle or batch is alive."""
    return [ref for ref in refs_of(followed) if ref() is not None]


class HandleRef(weakref.ref["Watched | HandleBatch"]):
    """A weak reference to one handle that keeps its task id: when the handle goes, it names the entry to tidy.

    Args:
        handle: the handle followed.
        on_gone: called with this reference once the handle is gone (in any thread).

    """

    __slots__ = ("task_id",)

    def __init__(self, handle: Watched, on_gone: Callable[[HandleRef], object]) -> None:
        # weakref.ref.__new__ took both arguments already
        self.task_id = handle.id


def live(followed: Followed | None, task_id: str) -> list[Watched]:
    """Return the live handles of task ``task_id`` in its ``Followed`` entry, each once.

    A handle may be followed twice over, through its batch and by itself (``watch`` from
    the other side while its task moves between ``watched`` and ``finished``).
    """
    if followed is None:
        return []
    if isinstance(followed, weakref.ref):  # the rule: one handle, or one batch
        held = followed()
        handle = held.member(task_id) if isinstance(held, HandleBatch) else held
        return [] if handle is None else [handle]
    found: list[Watched] = []
    for ref in followed:
        held = ref()
        handle = held.member(task_id) if isinstance(held, HandleBatch) else held
        if handle is not None and all(handle is not known for known in found):
            found.append(handle)
    return found


class Followers:
    """The handles that follow each task, held weakly: ``watched`` (unfinished tasks) and ``finished``.

    Runs on the hub's loop, but for a dropped batch (``HandleBatch.drop``, from the group's
    ``__del__`` in any thread), which only hands the batch to ``loop``.

    Args:
        refresh: called on the loop with ids whose handles may have missed a change (the
            hub reads their rows again).

    """

    def __init__(self, refresh: Callable[[list[str]], object]) -> None:
        self.watched: dict[str, Followed] = {}
        self.finished: dict[str, Followed] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        """The hub's loop (set when it starts): where a dropped batch's survivors are followed."""
        self._refresh = refresh
        self._gone: collections.deque[str] = collections.deque()  # tasks one of whose handles went (any thread)
        self._on_gone = self._note_gone  # made once: a bound method per reference would cost memory

    def watch(self, handle: Watched) -> None:
        """Keep ``handle``'s snapshot current while it lives (a finished task's only if it is retried)."""
        followed = self.finished if handle.done() else self.watched
        entry = followed.get(handle.id)
        if entry is not None and any(known is handle for known in live(entry, handle.id)):
            return  # already followed (a new handle, the common case, skips this scan)
        self._add(followed, handle.id, HandleRef(handle, self._on_gone))

    def watch_batch(self, handles: Sequence[Watched]) -> HandleBatch:
        """Keep the snapshots of ``handles``, new handles of one batch in id order, current; return their batch.

        One weak reference (to the ``HandleBatch``) follows them all while the batch lives.
        Its group holds it and drops it when it goes: from then on the handles still held
        elsewhere (``list(group)`` outlives the group) are followed one by one.
        """
        batch = HandleBatch(handles, self._dropped)
        for handle in handles:
            self._add(self.finished if handle.done() else self.watched, handle.id, batch.ref)
        return batch

    def take(self, task: Task) -> list[Watched]:
        """Return the live handles of ``task``'s fresh row, filed again by whether it is finished."""
        task_id = task.id
        entry, other = self.watched.pop(task_id, None), self.finished.pop(task_id, None)
        if other is not None or isinstance(entry, tuple):  # rare: several references (one may be dead)
            kept = living(entry)
            kept += [ref for ref in living(other) if all(ref is not known for known in kept)]
            entry = followed_by(kept) if kept else None
        if entry is None or not (handles := live(entry, task_id)):
            return []
        (self.finished if task.status.is_terminal else self.watched)[task_id] = entry
        return handles

    def forget_dropped(self) -> None:
        """Forget the handles that went since the last call: the work follows how many went, not how many are followed.

        A handle's reference names its task when the handle goes (``HandleRef``); a dropped
        batch's tasks are tidied when the batch is released. The hub calls this on every poll.
        """
        gone = self._gone
        while gone:  # popleft: a handle going in another thread meanwhile is taken too, or at the next call
            self._tidy(gone.popleft())

    def _note_gone(self, ref: HandleRef) -> None:
        """Note that the handle of ``ref`` went (the garbage collector's callback, in any thread)."""
        self._gone.append(ref.task_id)

    def _add(self, followed: dict[str, Followed], task_id: str, ref: Follower) -> None:
        """Add ``ref`` to who follows ``task_id`` in ``followed`` (and forget what went, now and then).

        Forgetting here too keeps a loop busy enqueueing (no poll in between) from holding an
        entry per task ever enqueued.
        """
        entry = followed.get(task_id)  # none, the rule: a new task
        followed[task_id] = ref if entry is None else followed_by([*living(entry), ref])
        if len(self._gone) >= _FORGET_AT:
            self.forget_dropped()

    def _tidy(self, task_id: str, gone: Follower | None = None) -> None:
        """Drop the references that died (and ``gone``) from who follows ``task_id``; forget it if none is left."""
        for followed in (self.watched, self.finished):
            if (entry := followed.get(task_id)) is None:
                continue
            kept = [ref for ref in living(entry) if ref is not gone]
            if kept:
                followed[task_id] = followed_by(kept)
            else:
                del followed[task_id]

    def _dropped(self, batch: HandleBatch) -> None:
        """Hand a dropped batch over to the loop (any thread), which follows its surviving handles one by one.

        Dropped by its group's last reference, the batch itself goes: it follows its handles
        until ``_release`` runs. Taken with a reference cycle by the garbage collector, its
        reference is dead already and the cycle (a view's observers that name the group) must
        not come back to life: only weak references to its handles go, and the survivors'
        rows are read again (a change in between reached nobody). With no loop (not started,
        or closed) its tasks are noted as gone: ``forget_dropped`` forgets them once it is.
        """
        loop = self.loop
        try:
            if loop is not None:
                if batch.ref() is None:  # taken by the garbage collector
                    handles = batch.handles
                    refs = [weakref.ref(h) for h in handles]
                    loop.call_soon_threadsafe(self._follow_survivors, batch.ref, [h.id for h in handles], refs, True)
                else:
                    loop.call_soon_threadsafe(self._release, [batch])
                return
        except RuntimeError:  # the loop is closed: nothing is followed any more
            pass
        self._gone.extend(handle.id for handle in batch.handles)  # no loop to release it: forgotten once it is gone

    def _release(self, holder: list[HandleBatch]) -> None:
        """Empty the batch in ``holder``, let it go, and follow one by one its handles still held elsewhere."""
        batch = holder.pop()
        handles, batch.handles = batch.handles, ()  # a copy of the group may hold it still: it follows none now
        ref, task_ids, refs = batch.ref, [h.id for h in handles], [weakref.ref(h) for h in handles]
        del batch, handles  # the handles nobody else holds go now
        self._follow_survivors(ref, task_ids, refs, False)

    def _follow_survivors(
        self, batch: Follower, task_ids: list[str], refs: list[weakref.ref[Watched]], missed: bool
    ) -> None:
        """Stop following ``task_ids`` through ``batch``; follow one by one the handles of ``refs`` still alive.

        With ``missed``, have the survivors' rows read again.
        """
        for task_id in task_ids:
            self._tidy(task_id, batch)
        survivors = [handle for ref in refs if (handle := ref()) is not None]
        for handle in survivors:
            self.watch(handle)
        if missed and survivors:
            self._refresh([handle.id for handle in survivors])
