"""``q.events`` and ``q.on_event`` listeners."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from emulated_worker import add, announce, claim, succeed

from omniq_nb import (
    AsyncOmniQ,
    EventKind,
    TaskEvent,
)

pytestmark = pytest.mark.anyio

Wait = Callable[..., Any]


async def test_events_since_cursor(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1)
    other = await q.enqueue(add, 2)
    [task] = await claim(q)
    await succeed(q, task, 1)
    events = await q.events(task_id=h.id)
    assert [e.kind for e in events] == [EventKind.ENQUEUED, EventKind.STARTED, EventKind.SUCCEEDED]
    assert [e.status for e in events] == ["pending", "running", "succeeded"]
    assert [e.attempt for e in events] == [0, 1, 1]
    everything = await q.events()
    assert [e.seq for e in everything] == sorted(e.seq for e in everything)
    assert {e.task_id for e in everything} == {h.id, other.id}
    later = await q.events(since=events[0].seq)
    assert events[0] not in later
    assert events[1] in later
    assert await q.events(since=everything[-1].seq) == []
    assert len(await q.events(limit=2)) == 2


async def test_on_event_listener_receives_the_events_of_a_task(q: AsyncOmniQ, wait_until: Wait) -> None:
    seen: list[TaskEvent] = []
    unsubscribe = q.on_event(seen.append)
    h = await q.enqueue(add, 1)
    [task] = await claim(q)
    await succeed(q, task, 1)

    def kinds() -> list[EventKind]:
        return [e.kind for e in seen if e.task_id == h.id]

    await wait_until(lambda: EventKind.SUCCEEDED in kinds(), timeout=5)
    assert kinds() == [EventKind.ENQUEUED, EventKind.STARTED, EventKind.SUCCEEDED]
    unsubscribe()
    count = len(seen)
    later: list[TaskEvent] = []
    q.on_event(later.append)
    other = await q.enqueue(add, 2)
    await q.cancel(other.id)
    await wait_until(lambda: any(e.kind is EventKind.CANCELLED for e in later), timeout=5)
    assert len(seen) == count  # the unsubscribed listener heard nothing more


async def test_on_event_listener_after_activity_hears_later_events(q: AsyncOmniQ, wait_until: Wait) -> None:
    h = await q.enqueue(add, 1)
    seen: list[TaskEvent] = []

    async def listener(event: TaskEvent) -> None:  # coroutine listeners are awaited too
        seen.append(event)

    q.on_event(listener)
    await anyio.lowlevel.checkpoint()  # the hub's first poll sets its cursor; events from here on are heard
    await q.list()
    [task] = await claim(q)
    announce(q, [task])
    await wait_until(lambda: any(e.kind is EventKind.STARTED for e in seen), timeout=5)
    await succeed(q, task, 1)
    await wait_until(lambda: any(e.kind is EventKind.SUCCEEDED for e in seen), timeout=5)
    assert all(e.task_id == h.id for e in seen)


async def test_failing_listener_does_not_stop_others(q: AsyncOmniQ, wait_until: Wait) -> None:
    seen: list[TaskEvent] = []

    def broken(event: TaskEvent) -> None:
        raise RuntimeError("listener bug")

    q.on_event(broken)
    q.on_event(seen.append)
    h = await q.enqueue(add, 1)
    [task] = await claim(q)
    await succeed(q, task, 1)
    await wait_until(lambda: any(e.task_id == h.id and e.kind is EventKind.SUCCEEDED for e in seen), timeout=5)
