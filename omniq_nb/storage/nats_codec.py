"""The NATS store's codec: task, worker and lead entries of the key-value bucket, events, and key names.

A task's entry is a msgpack array ``[order, task]``: ``order`` is the enqueue order (this
client's clock in nanoseconds, made strictly increasing per process), read by ``list()``
(newest first) and by claims (oldest first among equal priority and eta); the task is a map
by field name, so an entry written before a field existed (``depends_on`` and ``run_on``
came with dependencies) decodes with that field's default. Worker entries are
``WorkerInfo`` as msgpack; the maintenance turn is ``[runner, until]``. Events are
``TaskEvent`` as msgpack, their ``seq`` taken from the event stream's sequence on reading.

Bucket keys allow only ``[-/_=.a-zA-Z0-9]``: an id made of letters, digits, ``_`` and ``-``
is used as it is, any other id as ``=`` and the hex of its UTF-8 bytes (never clashing).

Example:
    >>> from datetime import datetime, timezone
    >>> now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> task = Task(id="t1", name="job", payload=b"x", eta=now, created_at=now)
    >>> decode_stored(encode_stored(7, task)) == Stored(7, task)
    True
    >>> task_key("ab-1"), task_key("a b"), key_id(task_key("a b"))
    ('t.ab-1', 't.=612062', 'a b')

"""

from __future__ import annotations

import re
import threading
import time

import msgspec

from omniq_nb.models import Task, TaskEvent, WorkerInfo

__all__ = [
    "KEPT",
    "LEAD_KEY",
    "MARK",
    "TASK",
    "WORKER",
    "Stored",
    "decode_event",
    "decode_lead",
    "decode_blob",
    "decode_stored",
    "decode_until",
    "decode_worker",
    "encode_event",
    "encode_lead",
    "encode_stored",
    "encode_until",
    "encode_worker",
    "key_id",
    "next_order",
    "task_key",
    "token",
    "worker_key",
]

TASK = "t."
"""The start of every task's key."""
WORKER = "w."
"""The start of every worker registry entry's key."""
LEAD_KEY = "lead"
"""The key of the maintenance turn."""
KEPT = "r."
"""The start of every key of a result kept for a queue in another store (``r.TOKEN.ID``)."""
MARK = "p."
"""The start of every key of an event purge mark (``p.ID``: when that task's events go)."""

_SAFE = re.compile(r"[A-Za-z0-9_\-]{1,200}")
_order_lock = threading.Lock()
_last_order = 0


class Stored(msgspec.Struct, array_like=True):
    """A task's bucket entry: its enqueue order and the task."""

    order: int
    task: Task


class _Until(msgspec.Struct, array_like=True):
    until: float | None
    blob: bytes = b""


class _Lead(msgspec.Struct, array_like=True):
    runner: str
    until: float


_encoder = msgspec.msgpack.Encoder()
_stored = msgspec.msgpack.Decoder(Stored)
_worker = msgspec.msgpack.Decoder(WorkerInfo)
_event = msgspec.msgpack.Decoder(TaskEvent)
_lead = msgspec.msgpack.Decoder(_Lead)
_until = msgspec.msgpack.Decoder(_Until)


def token(name: str) -> str:
    """Return ``name`` as a key or subject token (itself when safe, else ``=`` and its hex)."""
    return name if _SAFE.fullmatch(name) else "=" + name.encode().hex()


def task_key(task_id: str) -> str:
    """Return the bucket key of a task."""
    return TASK + token(task_id)


def worker_key(worker_id: str) -> str:
    """Return the bucket key of a worker registry entry."""
    return WORKER + token(worker_id)


def key_id(key: str) -> str:
    """Return the id a task or worker key names (the inverse of ``task_key`` and ``worker_key``)."""
    name = key[2:]
    return bytes.fromhex(name[1:]).decode() if name.startswith("=") else name


def next_order() -> int:
    """Return the next enqueue order: this clock in nanoseconds, strictly increasing in this process."""
    global _last_order
    with _order_lock:
        _last_order = max(_last_order + 1, time.time_ns())
        return _last_order


def encode_stored(order: int, task: Task) -> bytes:
    """Return a task's bucket entry."""
    return _encoder.encode(Stored(order, task))


def decode_stored(data: bytes) -> Stored:
    """Return the ``Stored`` entry of a task."""
    return _stored.decode(data)


def encode_worker(worker: WorkerInfo) -> bytes:
    """Return a worker registry entry."""
    return _encoder.encode(worker)


def decode_worker(data: bytes) -> WorkerInfo:
    """Return the ``WorkerInfo`` of a registry entry."""
    return _worker.decode(data)


def encode_lead(runner: str, until: float) -> bytes:
    """Return the maintenance turn's entry: who holds it and until when (seconds since the epoch)."""
    return _encoder.encode(_Lead(runner, until))


def decode_lead(data: bytes) -> tuple[str, float]:
    """Return ``(runner, until)`` of the maintenance turn's entry."""
    lead = _lead.decode(data)
    return lead.runner, lead.until


def encode_event(event: TaskEvent) -> bytes:
    """Return an event as the event stream stores it (its ``seq`` is the stream's)."""
    return _encoder.encode(event)


def decode_event(data: bytes, seq: int) -> TaskEvent:
    """Return the event of a stream message, with the message's stream sequence as ``seq``."""
    return msgspec.structs.replace(_event.decode(data), seq=seq)


def encode_until(until: float | None, blob: bytes = b"") -> bytes:
    """Return a kept result's or a purge mark's entry: when it goes (``None``: never), and the result."""
    return _encoder.encode(_Until(until, blob))


def decode_until(data: bytes) -> float | None:
    """Return when a kept result or a purge mark goes (seconds since the epoch, ``None``: never)."""
    return _until.decode(data).until


def decode_blob(data: bytes) -> bytes:
    """Return the result bytes of a kept result's entry."""
    return _until.decode(data).blob
