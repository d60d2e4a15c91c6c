"""The file store's directory: URL to path, layout, the store lock, atomic writes, task records.

One folder holds a queue (``file:///abs/dir``)::

    lock                      flock'd by every change, for the length of that change only
    counters                  the next task and event sequence numbers
    tasks/<id>                one record per task (msgpack): the truth about that task
    ready/<queue hex>/<key>   an empty marker per pending task, named priority-eta-seq-id
    running/<id>              an empty marker per running task (what rescue scans)
    expiring/<expires>-<id>   an empty marker per pending task with a TTL (what expiry scans)
    dependents/<dep>/<id>     an empty marker per dependency of a task, whatever its state (``dependents``)
    cache/<key sha256>/<id>   an empty marker per task with a ``cache_key`` (what ``cached`` lists)
    output/<id>/              a task's kept output: ``log`` (appended, trimmed by rewrite) and ``index``
    events/<first seq>.log    the event log, JSON lines, in segments
    workers/<id>              the registry of live worker pools
    tmp/                      files being written, renamed into place when whole
    batches/<token>           the ids of a batch insert under way (see ``file_change``)

Every file is written whole under ``tmp/`` and moved into place with ``os.replace``, so a
reader (which takes no lock) sees the old or the new file, never half of one. Every change
(claim, settle, renew...) holds the store lock: an exclusive ``flock`` on ``lock``, taken
through a descriptor opened for that change alone and closed when it ends. flock locks
belong to the open file, not the process, so no other open or close in this process can
drop them (the trap that POSIX ``fcntl`` locks set for SQLite), and two threads of one
process exclude each other like two processes do. Because the lease check and the write
that follows it happen under that lock, a worker that lost its lease can never write.

Markers are hints the claim scans instead of reading every record: a record is always
written before the markers of its old state go, and after the markers of its new state
exist, so a crash leaves at worst a stale marker (checked against the record and dropped),
never a pending or running task without one. The one exception is the claim, which renames
the pending marker into ``running/`` (one atomic step) before it writes the record: a claim
that dies between the two leaves a pending task whose marker is in ``running/``, and the
rescue scan gives it its pending marker back. A task's dependency markers are made before
its first record and deleted after its last, so a crash leaves at worst a stale one (naming
a task that is gone: ``dependents`` checks the record), never a dependent it cannot find.

Example:
    >>> directory_of("file:///srv/queue"), directory_of("file:///tmp/a%20b")
    ('/srv/queue', '/tmp/a b')

"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
import struct
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlsplit

import msgspec

from omniq_nb.errors import StorageError
from omniq_nb.models import Task, TaskStatus, WorkerInfo
from omniq_nb.storage.sqlite_file import _NETWORK_FILESYSTEMS, _filesystem_type
from omniq_nb.urls import redact_url

__all__ = [
    "FileLayout",
    "Record",
    "check_task_id",
    "decode_worker",
    "directory_of",
    "encode",
    "expiry_key",
    "filesystem_type",
    "marker_key",
    "now",
    "parse_marker",
]

_UTC = timezone.utc
_PRIORITY_OFFSET = 10**12  # priorities sort descending in a name: offset - priority, 13 digits
_ETA_DIGITS = 17  # microseconds since the epoch
_SEQ_DIGITS = 20
_HELD_LOCKS: set[int] = set()
"""Descriptors of the store lock held by this process's changes right now."""


def _drop_inherited_locks() -> None:
    """In a forked child, close the lock descriptors it inherited: the lock is its parent's, not its own.

    A flock belongs to the open file, which a fork shares: without this, a child forked while a
    change held the lock (a task calling ``os.fork``) would keep the lock after the parent let go.
    """
    for fd in list(_HELD_LOCKS):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)

filesystem_type = _filesystem_type
"""Return the type of the filesystem holding a path (Linux), or '' when unknown (SQLite's check)."""


class Record(msgspec.Struct, array_like=True):
    """What ``tasks/<id>`` holds: the task and its enqueue sequence number (orders equal tasks)."""

    task: Task
    seq: int


_COUNTERS = struct.Struct("<QQ")
"""The ``counters`` file: the last task and event sequence numbers, 16 bytes written in place."""


_encode = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(Record).decode
encode = _encode
"""Return the msgpack bytes of a record or registry entry."""
decode_worker = msgspec.msgpack.Decoder(WorkerInfo).decode
"""Return the registry entry held in msgpack bytes."""


def directory_of(url: str) -> str:
    """Return the absolute folder of a ``file:///abs/dir`` URL.

    Raises:
        StorageError: the URL names a host, a relative path, a query or no folder at all.

    """
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise StorageError(
            f"malformed file store URL {redact_url(url)!r}: expected file:///absolute/folder "
            "(three slashes, no host: the file store lives on this machine's own disk)"
        )
    if not path.startswith("/") or path.rstrip("/") == "":
        raise StorageError(
            f"file store URL {redact_url(url)!r} does not name an absolute folder; "
            "write file:///absolute/folder (three slashes, then the path from the root)"
        )
    return os.path.normpath(path)


def check_task_id(task_id: str) -> None:
    """Refuse a task id that cannot be a file name of its own.

    Raises:
        ValueError: the id is empty, starts with a dot, or holds a slash or a NUL byte.

    """
    if not task_id or task_id.startswith(".") or "/" in task_id or "\x00" in task_id:
        raise ValueError(
            f"task id {task_id!r} cannot be stored in a file store: an id is a file name there "
            "(no '/', no NUL, not empty, no leading '.'); nothing was inserted"
        )


def marker_key(task: Task, seq: int) -> str:
    """Return the name of a pending task's marker: sorting names sorts by priority, eta, then seq."""
    eta = max(0, round(task.eta.timestamp() * 1_000_000))
    priority = min(max(_PRIORITY_OFFSET - task.priority, 0), 2 * _PRIORITY_OFFSET)
    return f"{priority:013d}-{eta:0{_ETA_DIGITS}d}-{seq:0{_SEQ_DIGITS}d}-{task.id}"


def expiry_key(task: Task) -> str:
    """Return the name of a pending task's expiry marker: sorting names sorts by ``expires_at``."""
    expires = 0 if task.expires_at is None else max(0, round(task.expires_at.timestamp() * 1_000_000))
    return f"{expires:0{_ETA_DIGITS}d}-{task.id}"


def parse_marker(name: str) -> tuple[int, str] | None:
    """Return ``(eta in microseconds, task id)`` of a marker name, or ``None`` for a foreign file."""
    parts = name.split("-", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    return int(parts[1]), parts[3]


class FileLayout:
    """Paths of one store folder and the few primitives every change is made of.

    Args:
        root: the store's absolute folder.

    """

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.tasks, self.ready, self.running = self.root / "tasks", self.root / "ready", self.root / "running"
        self.events, self.workers, self.tmp = self.root / "events", self.root / "workers", self.root / "tmp"
        self.expiring, self.dependents = self.root / "expiring", self.root / "dependents"
        self.cache, self.output, self.callables = self.root / "cache", self.root / "output", self.root / "callables"
        self._lock_path = self.root / "lock"
        self._counters = self.root / "counters"

    def prepare(self) -> None:
        """Create the folders (owner-only), or say why the folder cannot hold a queue.

        Raises:
            StorageError: a folder cannot be created, or the folder is on a network filesystem.

        """
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            folders = (self.tasks, self.ready, self.running, self.expiring, self.dependents, self.events, self.workers)
            for folder in (*folders, self.cache, self.output, self.callables, self.tmp):
                folder.mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StorageError(f"cannot create the file store's folder {self.root}: {exc.strerror}") from exc
        kind = filesystem_type(self.root.resolve())
        if kind in _NETWORK_FILESYSTEMS:
            raise StorageError(
                f"{self.root} is on a network filesystem ({kind}); the file store needs atomic renames and "
                "locks that such filesystems do not give reliably, and could run a task twice or lose it. "
                "Put the folder on a local disk, or use a PostgreSQL or Redis store to share tasks between machines."
            )

    def exists(self) -> bool:
        """Return whether the folder holds a store (its ``tasks`` folder exists)."""
        return self.tasks.is_dir()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store lock (blocking) for one change; the descriptor is this change's alone."""
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        _HELD_LOCKS.add(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            _HELD_LOCKS.discard(fd)
            os.close(fd)  # releases the flock

    def write(self, path: Path, data: bytes, *, durable: bool) -> None:
        """Write ``data`` whole to a temporary file, then move it to ``path`` (fsync'd when ``durable``)."""
        scratch = self.tmp / f"{path.name}.{secrets.token_hex(6)}"
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(scratch, path)

    def sync_folders(self, *folders: Path) -> None:
        """Flush folders to disk (fsync) so that the names made or moved in them survive a power loss."""
        for folder in dict.fromkeys(folders):
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    def read(self, task_id: str) -> Record | None:
        """Return the record of a task, or ``None`` when there is none (or the id cannot be a file name)."""
        if not _is_file_name(task_id):
            return None
        try:
            data = (self.tasks / task_id).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return _decode_record(data)
        except msgspec.DecodeError as exc:
            raise StorageError(f"the file store's task file {self.tasks / task_id} cannot be read: {exc}") from exc

    def task_ids(self) -> list[str]:
        """Return the ids of every stored task."""
        return os.listdir(self.tasks)

    def dependent_ids(self, task_id: str) -> list[str]:
        """Return the ids that dependency markers name as waiting on ``task_id`` (one listing; no folder, none)."""
        if not _is_file_name(task_id):
            return []
        try:
            return os.listdir(self.dependents / task_id)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def queue_folder(self, queue: str) -> Path:
        """Return the folder of a queue's pending markers (its name in hex: any queue name is safe)."""
        return self.ready / queue.encode().hex()

    def markers(self, record: Record) -> set[Path]:
        """Return the markers of a task in this state: its queue's (with a TTL, ``expiring/`` too) while pending.

        A running task has its ``running/`` marker; a finished one has none.
        """
        task = record.task
        if task.status is TaskStatus.PENDING and task.expires_at is not None:
            return {self.queue_folder(task.queue) / marker_key(task, record.seq), self.expiring / expiry_key(task)}
        if task.status is TaskStatus.PENDING:
            return {self.queue_folder(task.queue) / marker_key(task, record.seq)}
        if task.status is TaskStatus.RUNNING:
            return {self.running / task.id}
        return set()

    def links(self, task: Task) -> set[Path]:
        """Return a task's dependency markers: ``dependents/<dependency id>/<task id>``, one per dependency."""
        return {self.dependents / dependency / task.id for dependency in task.depends_on}

    def cache_folder(self, key: str) -> Path:
        """Return the folder of a cache key's markers, named by the key's SHA-256 (any key makes a file name)."""
        return self.cache / hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    def cache_marker(self, task: Task) -> Path | None:
        """Return a task's result-cache marker ``cache/<key sha256>/<id>``, or ``None`` when it has no key."""
        return None if task.cache_key is None else self.cache_folder(task.cache_key) / task.id

    def put(self, record: Record, old: Record | None, *, durable: bool) -> set[Path]:
        """Write a task's record: new markers first (a new task's dependency ones too), the record, then old ones go.

        Returns:
            The folders whose entries changed (to fsync when the change must be durable).

        """
        new_markers, old_markers = self.markers(record), self.markers(old) if old is not None else set()
        made = (new_markers - old_markers) | (self.links(record.task) if old is None else set())
        changed = {self.tasks} | {m.parent for m in made | (old_markers - new_markers)}
        for marker in made:
            with contextlib.suppress(FileExistsError):
                marker.parent.mkdir(mode=0o700)
                changed.add(marker.parent.parent)  # a new folder: its name is an entry of its parent
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        self.write(self.tasks / record.task.id, _encode(record), durable=durable)
        for marker in old_markers - new_markers:
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()
        return changed

    def remove(self, record: Record) -> None:
        """Delete a task's markers (its cache marker too), its record, its output, then its dependency markers."""
        cached = self.cache_marker(record.task)
        self.drop_links([cached] if cached is not None else [])  # before the record: never a marker of a gone task
        for marker in self.markers(record):
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.tasks / record.task.id).unlink()
        shutil.rmtree(self.output / record.task.id, ignore_errors=True)
        self.drop_links(self.links(record.task))

    @staticmethod
    def drop_links(links: Iterable[Path]) -> None:
        """Delete dependency (or cache) markers; a folder goes with its last marker (call under the lock)."""
        for link in links:
            link.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty: other tasks depend on it too
                link.parent.rmdir()

    def counters(self) -> tuple[int, int]:
        """Return the last task and event sequence numbers handed out (call under the lock)."""
        try:
            data = self._counters.read_bytes()
        except FileNotFoundError:
            return 0, 0
        if len(data) < _COUNTERS.size:
            return 0, 0
        task_seq, event_seq = _COUNTERS.unpack_from(data)
        return task_seq, event_seq

    def set_counters(self, task_seq: int, event_seq: int, *, durable: bool) -> None:
        """Store the last sequence numbers handed out (call under the lock, before using them).

        Written in place: 16 bytes at the start of a file never straddle a disk sector.
        """
        fd = os.open(self._counters, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.pwrite(fd, _COUNTERS.pack(task_seq, event_seq), 0)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)

    def claim(self, record: Record, task: Task, marker: Path) -> None:
        """Move a pending task's marker into ``running/`` (one atomic rename), then write it as running.

        A claim that dies between the two leaves a pending record with a running marker; the
        rescue scan gives it its pending markers back (``FileAdmin``).
        """
        os.rename(marker, self.running / task.id)
        self.write(self.tasks / task.id, _encode(Record(task, record.seq)), durable=False)
        for other in self.markers(record) - {marker}:  # its expiry marker
            other.unlink(missing_ok=True)


def _is_file_name(task_id: str) -> bool:
    """Return whether a task id can name a file of its own (see ``check_task_id``)."""
    return bool(task_id) and "/" not in task_id and not task_id.startswith(".")


def now() -> datetime:
    """Return the store's clock: this machine's, which every process on the folder shares."""
    return datetime.now(_UTC)
