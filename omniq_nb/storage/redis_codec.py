"""The Redis store's codec: a task, a worker entry and an event as hash fields, and back.

A task's hash holds the ``rows.COLUMNS`` names; a ``None`` value is a missing field, numbers
and times are decimal text (times as seconds since the epoch, UTC: Python's ``repr`` of the
float, so they read back exactly), booleans ``1``/``0``, payloads and results raw bytes, an
error its JSON. Decoding builds the row ``rows.row_task`` reads, so every backend makes
``Task`` objects the same way. Two fields of the hash are the codec's own, written only
when they differ from the default (and so absent from tasks stored before they existed):
``depends_on`` (the ids joined by newlines, as the insert script splits them) and ``run_on``.
Events are stream entries with one-letter fields (``t`` task id, ``k`` kind, ``a`` time,
``s`` status, ``n`` attempt, ``p`` progress, ``m`` message, ``r`` run id); the entry id is
``SEQ-0``.

Example:
    >>> from datetime import datetime, timezone
    >>> now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> task = Task(id="t1", name="job", payload=b"x", eta=now, created_at=now, priority=2)
    >>> flat = [v if isinstance(v, bytes) else v.encode() for v in task_fields(task)]  # as the server returns it
    >>> decode_task(pairs_to_dict(flat)) == task
    True
    >>> waiting = Task(id="t2", name="fit", eta=now, created_at=now, depends_on=("t1", "t0"), run_on="any")
    >>> flat = [v if isinstance(v, bytes) else v.encode() for v in task_fields(waiting)]
    >>> decode_task(pairs_to_dict(flat)).depends_on
    ('t1', 't0')

"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from omniq_nb.models import Task, TaskEvent, WorkerInfo
from omniq_nb.storage.rows import (
    COLUMNS,
    EVENT_KIND_OF,
    NEW_COLUMNS,
    STATUS_OF,
    WORKER_COLUMNS,
    new_task_row,
    row_task,
    row_worker,
)

__all__ = [
    "Fields",
    "decode_event",
    "decode_task",
    "decode_worker",
    "pairs_to_dict",
    "task_fields",
    "text",
    "worker_fields",
]

Fields = Mapping[bytes, bytes]
"""A hash as redis-py returns it (field and value bytes)."""

_UTC = timezone.utc
_NEW = [name.strip() for name in NEW_COLUMNS.split(",")]
_WORKER = [name.strip() for name in WORKER_COLUMNS.split(",")]
_RUN_ON = "success"  # Task.run_on's default: left out of the hash


def text(value: object) -> str | bytes:
    """Return the stored form of one value: bytes as they are, booleans ``1``/``0``, others as text."""
    if isinstance(value, bytes | str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(value) if isinstance(value, float) else str(value)


def task_fields(task: Task) -> builtins.list[str | bytes]:
    """Return a new task's hash as a flat ``field, value, ...`` list (``None`` values left out)."""
    flat: builtins.list[str | bytes] = []
    for name, value in zip(_NEW, new_task_row(task), strict=True):
        if value is not None and (name != "run_on" or value != _RUN_ON):
            flat += (name, text(value))
    return flat


def _flag(value: bytes) -> bool:
    return value == b"1"


_DECODE: dict[str, Callable[[bytes], Any]] = {}
for _names, _reader in (
    ("priority attempt retries", int),
    (
        "timeout eta created_at started_at finished_at expires_at result_ttl interval lease_until "
        "progress progress_done progress_total",
        float,
    ),
    ("at_most_once", _flag),
):
    _DECODE.update(dict.fromkeys(_names.split(), _reader))
_RAW = {"payload", "result", "error"}  # bytes as stored (the error's JSON decoder reads bytes)
_DEFAULTS: dict[str, Any] = {
    "progress": 0.0,
    "progress_done": 0.0,
    "attempt": 0,
    "retries": 0,
    "priority": 0,
    "run_on": _RUN_ON,
}
_SPEC = [
    (name.encode(), None if name in _RAW else _DECODE.get(name, bytes.decode), _DEFAULTS.get(name))
    for name in (column.strip() for column in COLUMNS.split(","))
]


def decode_task(fields: Fields) -> Task:
    """Build a ``Task`` from its hash (on every claim, settle and read: kept lean)."""
    get = fields.get
    return row_task(
        [
            default if (value := get(name)) is None else value if reader is None else reader(value)
            for name, reader, default in _SPEC
        ]
    )


def pairs_to_dict(flat: Sequence[Any]) -> dict[bytes, bytes]:
    """Return a hash that a script returned as ``HGETALL`` does (a flat list) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def worker_fields(worker: WorkerInfo) -> builtins.list[str]:
    """Return a worker entry's hash but its times and ``stop_requested`` (the script sets those)."""
    values = {
        "id": worker.id,
        "name": worker.name,
        "host": worker.host,
        "pid": worker.pid,
        "kind": worker.kind,
        "concurrency": worker.concurrency,
        "queues": "\n".join(worker.queues),
        "kernel": worker.kernel,
        "notebook": worker.notebook,
        "ttl": worker.ttl,
        "running": worker.running,
    }
    flat: builtins.list[str] = []
    for name, value in values.items():
        if value is not None:
            flat += (name, str(text(value)))
    return flat


def decode_worker(fields: Fields) -> WorkerInfo:
    """Build a ``WorkerInfo`` from its hash."""
    got = {key.decode(): value.decode() for key, value in fields.items()}
    numbers = {"pid": int, "concurrency": int, "running": int, "started_at": float, "heartbeat": float, "ttl": float}
    row = [numbers.get(name, str)(got[name]) if name in got else None for name in _WORKER]
    row[-1] = got.get("stop_requested") == "1"
    return row_worker(row)


def decode_event(entry_id: bytes, fields: Fields) -> TaskEvent:
    """Build a ``TaskEvent`` from a stream entry (its id is ``SEQ-0``)."""
    progress, message, run_id = fields.get(b"p"), fields.get(b"m"), fields.get(b"r")
    return TaskEvent(
        seq=int(entry_id.split(b"-", 1)[0]),
        task_id=fields[b"t"].decode(),
        kind=EVENT_KIND_OF[fields[b"k"].decode()],
        at=datetime.fromtimestamp(float(fields[b"a"]), _UTC),
        status=STATUS_OF[fields[b"s"].decode()],
        attempt=int(fields[b"n"]),
        progress=None if progress is None else float(progress),
        message=None if message is None else message.decode(),
        run_id=None if run_id is None else run_id.decode(),
    )
