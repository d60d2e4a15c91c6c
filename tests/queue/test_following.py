"""Promise: the hub's ``Followers`` find each live handle of a task once, forget dropped ones, and follow a batch's
handles as one until its group drops it, then the ones still held one by one."""

from __future__ import annotations

import asyncio
import gc
import weakref
from datetime import UTC, datetime

import pytest

from omniq_nb.following import Followers, HandleBatch, live, refs_of
from omniq_nb.handles import GroupHandle
from omniq_nb.models import Task, TaskEvent, TaskStatus, new_task_ids


class Held:
    """A stand-in for a handle: what the hub needs of one."""

    def __init__(self, task_id: str, status: TaskStatus = TaskStatus.PENDING) -> None:
        self.id = task_id
        self.status = status
        self.rows: list[Task] = []

    def done(self) -> bool:
        return self.status.is_terminal

    def _apply_event(self, event: TaskEvent) -> None:
        self.status = event.status

    def _apply_task(self, task: Task) -> None:
        self.rows.append(task)
        self.status = task.status

    def _finished_row(self) -> Task | None:
        return None


def _no_refresh(task_ids: list[str]) -> None:
    raise AssertionError(f"no handle missed a change here, yet {task_ids} were to be read again")


def _row(task_id: str, status: TaskStatus) -> Task:
    now = datetime.now(UTC)
    return Task(id=task_id, name="t", eta=now, created_at=now, status=status, payload=b"")


def test_a_batch_finds_its_handles_by_id() -> None:
    handles = [Held(f"{n:04x}") for n in range(0, 100, 3)]  # not ids of new_task_ids: found by bisection
    batch = HandleBatch(handles, on_drop=print)
    assert all(batch.member(h.id) is h for h in handles)
    assert batch.member("0001") is None and batch.member("ffff") is None and batch.member("") is None

    ids = new_task_ids(10)
    whole, some = [Held(i) for i in ids], [Held(i) for i in ids[1::3]]  # some: the rest were cache hits
    assert all(HandleBatch(whole, on_drop=print).member(h.id) is h for h in whole)
    assert all(HandleBatch(some, on_drop=print).member(h.id) is h for h in some)
    assert HandleBatch(some, on_drop=print).member(ids[0]) is None
    assert HandleBatch(some, on_drop=print).member(ids[2]) is None


def test_dropped_handles_do_not_pile_up_beside_a_kept_one() -> None:
    followers = Followers(_no_refresh)
    kept = Held("t1")
    followers.watch(kept)
    for _ in range(1000):
        followers.watch(Held("t1"))  # q.get(id) in a polling cell: each handle dropped at once
    assert len(refs_of(followers.watched["t1"])) <= 2
    assert followers.take(_row("t1", TaskStatus.RUNNING)) == [kept]
    assert len(refs_of(followers.watched["t1"])) == 1


def test_a_handle_followed_through_its_batch_and_by_itself_is_updated_once() -> None:
    followers = Followers(_no_refresh)
    [task_id] = new_task_ids(1)
    handle = Held(task_id)
    batch = followers.watch_batch([handle])
    handle.status = TaskStatus.SUCCEEDED  # folded from an event: the hub has not moved it to ``finished`` yet
    followers.watch(handle)  # a live view, from the finished side
    assert followers.take(_row(task_id, TaskStatus.SUCCEEDED)) == [handle]
    assert live(followers.finished[task_id], task_id) == [handle]
    del batch


@pytest.mark.anyio
async def test_a_dropped_batch_hands_its_held_handles_over_one_by_one() -> None:
    followers = Followers(_no_refresh)
    followers.loop = asyncio.get_running_loop()
    ids = new_task_ids(3)
    handles = [Held(task_id) for task_id in ids]
    batch = followers.watch_batch(handles)
    kept, gone = handles[1], weakref.ref(handles[0])
    del handles
    batch.drop()  # the group went: until the loop releases it, the batch still follows them all
    assert live(followers.watched[ids[1]], ids[1]) == [kept]
    del batch
    await asyncio.sleep(0)
    gc.collect()
    assert gone() is None
    assert live(followers.watched[ids[1]], ids[1]) == [kept]  # followed by itself now
    assert ids[0] not in followers.watched and ids[2] not in followers.watched  # forgotten with the batch


@pytest.mark.anyio
async def test_a_batch_collected_with_a_cycle_comes_not_back_and_its_survivors_are_read_again() -> None:
    """The garbage collector clears weak references before ``__del__``: the batch no longer follows anyone.

    Its handles still held elsewhere are followed one by one and read again (a change in
    between reached nobody); the garbage is not brought back to life for that.
    """
    reread: list[list[str]] = []
    followers = Followers(reread.append)
    followers.loop = asyncio.get_running_loop()
    ids = new_task_ids(3)
    handles = [Held(task_id) for task_id in ids]
    group = GroupHandle(None, handles, followers.watch_batch(handles))  # type: ignore[arg-type]
    cycle: list[object] = [group]
    cycle.append(cycle)  # as a view's observers that name the group make one
    kept, gone = handles[2], weakref.ref(handles[0])
    del group, cycle, handles
    gc.collect()  # one collection: nothing may come back to life
    assert gone() is None
    await asyncio.sleep(0)
    assert reread == [[ids[2]]]
    assert live(followers.watched[ids[2]], ids[2]) == [kept]


class Untouchable(tuple):  # type: ignore[type-arg]
    """A followed entry that fails the test if anything looks into it."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("forgetting dropped handles scanned a task none of whose handles went")


def test_forgetting_dropped_handles_looks_only_at_their_tasks() -> None:
    """A poll forgets what went since the last one without scanning every followed task (100,000 in a big map)."""
    followers = Followers(_no_refresh)
    for n in range(1000):
        followers.watched[f"other{n}"] = followers.finished[f"done{n}"] = Untouchable()
    kept = [Held(f"k{n}") for n in range(10)] + [Held(f"f{n}", TaskStatus.SUCCEEDED) for n in range(10)]
    dropped = [Held(f"d{n}") for n in range(10)] + [Held(f"g{n}", TaskStatus.FAILED) for n in range(10)]
    for handle in kept + dropped:
        followers.watch(handle)
    del dropped, handle  # the loop variable holds the last one
    gc.collect()
    followers.forget_dropped()
    assert {i for i in followers.watched if not i.startswith("other")} == {f"k{n}" for n in range(10)}
    assert {i for i in followers.finished if not i.startswith("done")} == {f"f{n}" for n in range(10)}
    for handle in kept:
        entry = followers.finished[handle.id] if handle.done() else followers.watched[handle.id]
        assert live(entry, handle.id) == [handle]


def test_handles_dropped_while_a_loop_only_enqueues_do_not_pile_up() -> None:
    """No poll runs between the enqueues of a busy loop: adding handles forgets the dropped ones itself."""
    followers = Followers(_no_refresh)
    for n in range(5000):
        followers.watch(Held(f"t{n}"))  # q.enqueue(...) in a loop, each handle dropped at once
    assert len(followers.watched) <= 1001


@pytest.mark.parametrize("loop", ["none", "closed"])
def test_a_batch_dropped_without_a_running_loop_is_forgotten_once_it_is_gone(loop: str) -> None:
    """Groups dropped before the hub started, or after its loop closed, leave no entries behind."""
    followers = Followers(_no_refresh)
    if loop == "closed":
        followers.loop = asyncio.new_event_loop()
        followers.loop.close()
    ids = new_task_ids(100)
    handles = [Held(task_id) for task_id in ids]
    batch = followers.watch_batch(handles)
    batch.drop()  # the group went
    del batch, handles
    gc.collect()
    followers.forget_dropped()
    assert followers.watched == {} and followers.finished == {}
