"""One change to a file store, made under its lock: task writes, their events, and what to fsync.

``with change(layout, ...) as c:`` takes the store lock, lets the body read and write records
(``c.put``) and note events (``c.record``), then hands out sequence numbers, appends the
events and, for a durable change (enqueue, settle, cancel, requeue, expiry), fsyncs the
folders whose entries moved. Claims, renewals and progress are not fsync'd: a power loss
may hand a claimed task back to ``pending`` (it runs again: delivery is at least once).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import msgspec

from omniq_nb.models import EventKind, Task, TaskEvent
from omniq_nb.storage import lifecycle
from omniq_nb.storage.file_base import FileLayout, Record, now
from omniq_nb.storage.file_events import append_events

__all__ = ["Change", "change"]


class Change:
    """The work of one locked change (see the module docstring).

    Args:
        layout: the store's folder.
        events: record events (the ``events`` setting).
        durable: fsync what the change writes.

    """

    def __init__(self, layout: FileLayout, *, events: bool, durable: bool) -> None:
        self.layout, self.durable, self.now = layout, durable, now()
        self._events_on = events
        self._events: list[TaskEvent] = []
        self._folders: set[Path] = set()
        self._task_seq, self._event_seq = layout.counters()
        self._counted = (self._task_seq, self._event_seq)

    def next_seq(self) -> int:
        """Return the next enqueue sequence number of this folder."""
        self._task_seq += 1
        return self._task_seq

    def put(self, record: Record, old: Record | None) -> None:
        """Write a task's record (and move its markers) as part of this change."""
        self._folders |= self.layout.put(record, old, durable=self.durable)

    def claim(self, record: Record, task: Task, marker: Path) -> None:
        """Write ``task`` (now running) as the new state of the pending task ``record`` whose marker is ``marker``."""
        self.layout.claim(record, task, marker)
        self._folders |= {marker.parent, self.layout.running, self.layout.tasks}

    def update(self, old: Record, task: Task) -> None:
        """Write ``task`` as the new state of the task ``old`` records, keeping its sequence number."""
        self.put(Record(task, old.seq), old)

    def record(self, task: Task, kind: EventKind, *, at: datetime | None = None, message: str | None = None) -> None:
        """Note the event ``kind`` of ``task`` as it is now; it is written when the change ends."""
        if self._events_on:
            self._events.append(lifecycle.event_of(task, kind, at=at or self.now, message=message))

    def commit(self) -> None:
        """Store the counters, append the events, fsync what moved (still under the lock)."""
        events = [msgspec.structs.replace(e, seq=self._event_seq + n) for n, e in enumerate(self._events, 1)]
        self._event_seq += len(events)
        if (self._task_seq, self._event_seq) != self._counted:
            self.layout.set_counters(self._task_seq, self._event_seq, durable=self.durable)
        append_events(self.layout, events)
        if self.durable and self._folders:
            self.layout.sync_folders(*self._folders)


@contextlib.contextmanager
def change(layout: FileLayout, *, events: bool, durable: bool) -> Iterator[Change]:
    """Hold the store lock for one change; commit it if the body returns normally."""
    with layout.locked():
        work = Change(layout, events=events, durable=durable)
        yield work
        work.commit()
