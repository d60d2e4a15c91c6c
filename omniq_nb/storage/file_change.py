"""One change to a file store, made under its lock: task writes, their events, and what to fsync.

``with change(layout, ...) as c:`` takes the store lock, lets the body read and write records
(``c.put``) and note events (``c.record``), then hands out sequence numbers, fsyncs the
folders whose entries moved when the change is durable (enqueue, settle, cancel, requeue,
expiry, dependency moves), and appends the events. Claims, renewals and progress are not fsync'd: a power loss
may hand a claimed task back to ``pending`` (it runs again: delivery is at least once).

An insert of several tasks is all or none: before its first record it writes (and fsyncs)
a journal naming them and their dependency markers (``<dependency id>/<task id>``: an id
holds no ``/``) in ``batches/``, and deletes it once every record is on disk. A journal found
under the lock belongs to a writer that died (or failed) mid-batch: the tasks and markers it
names are deleted before anything else is done (``roll_back_batches``), at every change and
when a store opens.

A new task with a ``cache_key`` gets its cache marker (``cache/<key sha256>/<id>``) after its
record, and ``FileLayout.remove`` deletes it before the record: a crash leaves at worst a task
that ``cached`` does not find (it runs again), never a marker naming a task that is gone.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import msgspec

from omniq_nb.models import EventKind, Task, TaskEvent
from omniq_nb.storage import lifecycle
from omniq_nb.storage.file_base import FileLayout, Record, now
from omniq_nb.storage.file_events import append_events

__all__ = ["Change", "change", "roll_back_batches"]

_BATCHES = "batches"


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
        self._journal: Path | None = None

    def begin_batch(self, tasks: Sequence[Task]) -> None:
        """Make this change's inserts all or none: journal their ids and dependency markers (fsync'd) first."""
        folder = self.layout.root / _BATCHES
        folder.mkdir(exist_ok=True, mode=0o700)
        self._journal = folder / secrets.token_hex(8)
        entries = [t.id for t in tasks] + [f"{dependency}/{t.id}" for t in tasks for dependency in t.depends_on]
        self.layout.write(self._journal, "\n".join(entries).encode(), durable=True)
        self.layout.sync_folders(folder)

    def next_seq(self) -> int:
        """Return the next enqueue sequence number of this folder."""
        self._task_seq += 1
        return self._task_seq

    def put(self, record: Record, old: Record | None) -> None:
        """Write a task's record (and move its markers; a new one's cache marker after it) as part of this change."""
        self._folders |= self.layout.put(record, old, durable=self.durable)
        if old is None and (cached := self.layout.cache_marker(record.task)) is not None:
            cached.parent.mkdir(mode=0o700, exist_ok=True)
            os.close(os.open(cached, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            self._folders |= {cached.parent, self.layout.cache}

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
        """Store the counters, fsync what moved, end the batch, append the events (still under the lock)."""
        events = [msgspec.structs.replace(e, seq=self._event_seq + n) for n, e in enumerate(self._events, 1)]
        self._event_seq += len(events)
        if (self._task_seq, self._event_seq) != self._counted:
            self.layout.set_counters(self._task_seq, self._event_seq, durable=self.durable)
        if self.durable and self._folders:
            self.layout.sync_folders(*self._folders)
        if self._journal is not None:  # every record is on disk: the batch is done
            self._journal.unlink()
            self.layout.sync_folders(self._journal.parent)
        append_events(self.layout, events)


@contextlib.contextmanager
def change(layout: FileLayout, *, events: bool, durable: bool) -> Iterator[Change]:
    """Hold the store lock for one change; commit it if the body returns normally."""
    with layout.locked():
        roll_back_batches(layout)
        work = Change(layout, events=events, durable=durable)
        try:
            yield work
        except BaseException:
            roll_back_batches(layout)  # a batch insert that failed half way leaves nothing
            raise
        work.commit()


def roll_back_batches(layout: FileLayout) -> None:
    """Delete the tasks of batch inserts that never finished (call under the store lock)."""
    folder = layout.root / _BATCHES
    try:
        journals = os.listdir(folder)
    except FileNotFoundError:
        return
    for name in journals:
        journal = folder / name
        for entry in journal.read_text().split():
            if "/" in entry:  # a dependency marker, made before its task's record
                layout.drop_links([layout.dependents / entry])
            elif (record := layout.read(entry)) is not None:
                layout.remove(record)
        journal.unlink()
    if journals:
        layout.sync_folders(layout.tasks, folder)
