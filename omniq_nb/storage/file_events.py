"""The file store's event log: JSON lines in segment files named by their first ``seq``.

Writers append under the store lock, each change's events in one ``write`` (``O_APPEND``);
readers take no lock and ignore a last line without its newline (a write still under way).
A segment holds about ``_SEGMENT_EVENTS`` events, so a reader following the log by ``seq``
reads only the newest segment or two. Purging a task's events rewrites the segments that
hold them (to a temporary file, moved into place); ``seq`` keeps counting from the store's
counters, so a cursor never misses an event written after a purge.

Events are not fsync'd: after a power loss the log may lack its last events (the tasks'
own records, which are fsync'd on enqueue and settle, still say where each task is).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Sequence
from pathlib import Path

import msgspec

from omniq_nb.models import TaskEvent
from omniq_nb.storage.file_base import FileLayout

__all__ = ["append_events", "drop_events", "last_seq", "read_events"]

_SEGMENT_EVENTS = 1000
_SUFFIX = ".log"
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(TaskEvent).decode


def _segments(layout: FileLayout) -> list[tuple[int, Path]]:
    """Return ``(first seq, path)`` of every segment, oldest first."""
    found = []
    for name in os.listdir(layout.events):
        stem = name.removesuffix(_SUFFIX)
        if name.endswith(_SUFFIX) and stem.isdigit():
            found.append((int(stem), layout.events / name))
    return sorted(found)


def _lines(path: Path) -> list[TaskEvent]:
    """Return the whole events of a segment (a torn or unfinished line is left out)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    events = []
    for line in data.split(b"\n")[:-1]:  # the part after the last newline is unfinished
        with contextlib.suppress(msgspec.DecodeError):
            events.append(_decode(line))
    return events


def append_events(layout: FileLayout, events: Sequence[TaskEvent]) -> None:
    """Append events whose ``seq`` is set, in order (call under the store lock)."""
    if not events:
        return
    segments = _segments(layout)
    first = events[0].seq
    if segments and first - segments[-1][0] < _SEGMENT_EVENTS:
        path = segments[-1][1]
    else:
        path = layout.events / f"{first:020d}{_SUFFIX}"
    data = b"".join(_encode(event) + b"\n" for event in events)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a writer died mid-line: end its torn line first
        os.write(fd, data)
    finally:
        os.close(fd)


def read_events(layout: FileLayout, *, task_id: str | None, since: int, limit: int) -> list[TaskEvent]:
    """Return up to ``limit`` events with ``seq > since``, oldest first (of one task, or all)."""
    segments = _segments(layout)
    found: list[TaskEvent] = []
    for n, (_, path) in enumerate(segments):
        following = segments[n + 1][0] if n + 1 < len(segments) else None
        if following is not None and following - 1 <= since:
            continue  # every event of this segment is at or before the cursor
        found.extend(e for e in _lines(path) if e.seq > since and (task_id is None or e.task_id == task_id))
        if len(found) >= limit:
            break
    return found[:limit]


def last_seq(layout: FileLayout) -> int:
    """Return the ``seq`` of the newest whole event in the log (0 when there is none)."""
    for _, path in reversed(_segments(layout)):
        events = _lines(path)
        if events:
            return events[-1].seq
    return 0


def drop_events(layout: FileLayout, task_ids: Collection[str] | None) -> None:
    """Delete the events of these tasks, or every event with ``None`` (call under the store lock)."""
    for _, path in _segments(layout):
        if task_ids is None:
            path.unlink(missing_ok=True)
            continue
        events = _lines(path)
        kept = [e for e in events if e.task_id not in task_ids]
        if len(kept) == len(events):
            continue
        if kept:
            layout.write(path, b"".join(_encode(e) + b"\n" for e in kept), durable=False)
        else:
            path.unlink(missing_ok=True)
