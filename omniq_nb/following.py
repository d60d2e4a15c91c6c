"""Which handles follow which task, so that the event hub keeps their snapshots current.

The hub holds handles weakly, by task id, unfinished and finished apart (a finished task's
handles only need its retry). One weak reference per handle cost more than the handle
(100,000 handles of a ``.map()``: 8 MB), so the new handles of one ``enqueue_many`` are
followed through their ``HandleBatch``, one reference for all, which their group holds. When
the group goes, the members still held elsewhere are followed one by one from the next turn
of the hub's loop: until then the batch follows them, or, when the cyclic garbage collector
took the group (weak references to garbage are cleared first), their rows are read again.

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
import contextlib
import operator
import weakref
from collections.abc import Callable, Sequence
from typing import Protocol

from omniq_nb.models import Task, TaskEvent, batch_position

_PRUNE_AT_LEAST = 1000  # followed ids before ``_add`` first forgets those whose handles are gone


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


def alive(followed: dict[str, Followed]) -> dict[str, Followed]:
    """Return ``followed`` without the tasks all of whose handles (or batches) are gone."""
    return {i: refs for i, refs in followed.items() if any(ref() is not None for ref in refs_of(refs))}


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
        self._prune_at = _PRUNE_AT_LEAST

    def watch(self, handle: Watched) -> None:
        """Keep ``handle``'s snapshot current while it lives (a finished task's only if it is retried)."""
        followed = self.finished if handle.done() else self.watched
        entry = followed.get(handle.id)
        if entry is not None and any(known is handle for known in live(entry, handle.id)):
            return  # already followed (a new handle, the common case, skips this scan)
        self._add(followed, handle.id, weakref.ref(handle))

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

    def forget_dropped(self, *, finished: bool = False) -> None:
        """Forget the unfinished tasks (with ``finished``: the finished ones) none of whose handles are alive."""
        if finished:
            self.finished = alive(self.finished)
        else:
            self.watched = alive(self.watched)

    def _add(self, followed: dict[str, Followed], task_id: str, ref: Follower) -> None:
        """Add ``ref`` to who follows ``task_id`` in ``followed``; forget dropped handles now and then.

        The hub's poll forgets them too, on each poll while nobody awaits a result and once a
        second while results are awaited (a scan of every followed id on each fast poll cost
        more than the events it read); this bound, twice what was alive at the last sweep,
        keeps a process that enqueues fast from holding an entry per task ever enqueued.
        """
        followed[task_id] = followed_by([*living(followed.get(task_id)), ref])
        if len(self.watched) + len(self.finished) > self._prune_at:
            self.watched, self.finished = alive(self.watched), alive(self.finished)
            self._prune_at = max(_PRUNE_AT_LEAST, 2 * (len(self.watched) + len(self.finished)))

    def _dropped(self, batch: HandleBatch) -> None:
        """Hand a dropped batch over to the loop (any thread), which follows its surviving handles one by one.

        Dropped by its group's last reference, the batch itself goes: it follows its handles
        until ``_release`` runs. Taken with a reference cycle by the garbage collector, its
        reference is dead already and the cycle (a view's observers that name the group) must
        not come back to life: only weak references to its handles go, and the survivors'
        rows are read again (a change in between reached nobody).
        """
        if self.loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing is followed any more
            if batch.ref() is None:  # taken by the garbage collector
                self.loop.call_soon_threadsafe(self._follow_survivors, [weakref.ref(h) for h in batch.handles], True)
            else:
                self.loop.call_soon_threadsafe(self._release, [batch])

    def _release(self, holder: list[HandleBatch]) -> None:
        """Empty the batch in ``holder``, let it go, and follow one by one its handles still held elsewhere."""
        batch = holder.pop()
        handles, batch.handles = batch.handles, ()  # a copy of the group may hold it still: it follows none now
        refs = [weakref.ref(handle) for handle in handles]
        del batch, handles  # the handles nobody else holds go now
        self._follow_survivors(refs, False)

    def _follow_survivors(self, refs: list[weakref.ref[Watched]], missed: bool) -> None:
        """Follow one by one the handles of ``refs`` still alive; with ``missed``, have their rows read again."""
        survivors = [handle for ref in refs if (handle := ref()) is not None]
        for handle in survivors:
            self.watch(handle)
        if missed and survivors:
            self._refresh([handle.id for handle in survivors])
