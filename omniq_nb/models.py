"""The data omniq_nb stores and passes around: tasks, results, errors, events, schedules.

Plain msgspec Structs with no I/O. Times are timezone-aware UTC ``datetime``s;
durations are ``float`` seconds, except ``Schedule.interval`` which is a ``timedelta``.
The allowed status changes live here, in ``TRANSITIONS``, and nowhere else.
"""

from __future__ import annotations

import enum
import random
import time
from datetime import datetime, timedelta

import msgspec

from omniq_nb.errors import InvalidTransition


class TaskStatus(str, enum.Enum):
    """Where a task is in its lifecycle; a ``str`` enum, so ``status == "succeeded"`` holds."""

    WAITING = "waiting"
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    def __str__(self) -> str:
        """Return the plain value, as in ``f"{status}"`` → ``succeeded``."""
        return self.value

    @property
    def is_terminal(self) -> bool:
        """Return True for a status no worker will move on from by itself."""
        return self in _TERMINAL


_TERMINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED})

TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    # waiting: for its dependencies; they decide whether it runs (pending) or not (failed, cancelled)
    TaskStatus.WAITING: frozenset({TaskStatus.PENDING, TaskStatus.FAILED, TaskStatus.CANCELLED}),
    TaskStatus.PENDING: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED, TaskStatus.EXPIRED}),
    # running -> pending is a retry, a rescue after a lost lease, or a graceful hand-back
    TaskStatus.RUNNING: frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.PENDING, TaskStatus.CANCELLED}),
    TaskStatus.SUCCEEDED: frozenset(),
    # -> waiting: a dependent that its failed dependency's retry re-arms
    TaskStatus.FAILED: frozenset({TaskStatus.PENDING, TaskStatus.WAITING}),
    TaskStatus.CANCELLED: frozenset({TaskStatus.PENDING, TaskStatus.WAITING}),
    TaskStatus.EXPIRED: frozenset({TaskStatus.PENDING}),
}
"""For each status, the statuses a task may move to from it."""


def sources(target: TaskStatus) -> frozenset[TaskStatus]:
    """Return the statuses from which a task may move to ``target``.

    Args:
        target: the status a store is about to write.

    Returns:
        Every status ``s`` with ``target in TRANSITIONS[s]``.

    """
    return frozenset(source for source, targets in TRANSITIONS.items() if target in targets)


def check_transition(current: TaskStatus, target: TaskStatus) -> None:
    """Refuse a status change the lifecycle does not allow.

    Args:
        current: the task's status now.
        target: the status asked for.

    Raises:
        InvalidTransition: ``target`` cannot follow ``current``.

    """
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current])) or "nothing"
        raise InvalidTransition(
            f"a task cannot go from {current.value!r} to {target.value!r}; "
            f"from {current.value!r} it may go to: {allowed}"
        )


def new_task_id() -> str:
    """Return a new task id: 32 hex digits, time-ordered to the millisecond, then 80 random bits.

    Ids need to be unique, not secret (lease tokens are the secret part), so the fast
    non-cryptographic generator serves; it is reseeded in forked children.
    """
    return f"{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"


def batch_row(template: Task, task_id: str) -> Task:
    """Return the row of ``task_id`` in a batch whose rows differ from ``template`` only by id (and series)."""
    return msgspec.structs.replace(template, id=task_id, series=task_id if template.series is not None else None)


def new_task_ids(count: int) -> list[str]:
    """Return ``count`` new task ids made at once, in increasing order.

    One clock read for the batch, then a counter and 48 random bits. Ordered ids keep the
    stores' indexes appending instead of writing all over them.
    """
    prefix = f"{time.time_ns() // 1_000_000:012x}"
    bits = random.getrandbits
    return [f"{prefix}{n:08x}{bits(48):012x}" for n in range(count)]


def batch_position(task_id: str) -> int:
    """Return the position in its batch of an id made by ``new_task_ids`` (a guess for any other id; -1 if none).

    Example:
        >>> [batch_position(task_id) for task_id in new_task_ids(3)]
        [0, 1, 2]

    """
    try:
        return int(task_id[12:20], 16)
    except ValueError:
        return -1


class EventKind(str, enum.Enum):
    """What happened to a task; one ``TaskEvent`` is recorded per transition."""

    ENQUEUED = "enqueued"
    READY = "ready"
    STARTED = "started"
    PROGRESS = "progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    RELEASED = "released"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    def __str__(self) -> str:
        """Return the plain value."""
        return self.value


class Schedule(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """How a periodic task repeats: every ``interval`` or on a ``cron`` expression (not both)."""

    interval: timedelta | None = None
    cron: str | None = None


class TaskError(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Why an attempt failed: the remote exception's type name, message and traceback."""

    type: str
    message: str
    traceback: str = ""
    attempt: int = 0


class Task(msgspec.Struct, gc=False):
    """A snapshot of one task as stored.

    ``payload`` and ``result`` are serialized blobs (see ``omniq_nb.serialization``);
    a store never looks inside them. ``origin`` says where the task was launched from (in a
    notebook, the kernel session and cell message), so its output can be routed back there.
    ``owner`` is the kernel session the task belongs to (``None``: no kernel, or ``shared``):
    in-kernel pools of other kernels leave it alone while that kernel has a live pool.
    ``run_id`` names the latest claim: unique per claim, kept after the run ends.
    ``depends_on`` names the tasks it waits for (status ``waiting`` until they finish), and
    ``run_on`` when it runs then: ``success`` (all succeeded), ``any`` (all finished) or
    ``failure`` (all finished, one of them not successfully).
    ``cache_key`` is set on a task submitted with ``cache=True``: a later submission with the
    same key reuses this task's result once it succeeded (``ResultStore.cached``).

    Build one with keyword arguments: the positional order serves the stores, which build a
    task per row claimed or settled (positional is several times faster), and may change.
    """

    id: str
    name: str
    eta: datetime
    created_at: datetime
    queue: str = "default"
    status: TaskStatus = TaskStatus.PENDING
    priority: int = 0
    payload: bytes = b""
    attempt: int = 0
    retries: int = 0
    retry_on: tuple[str, ...] = ()
    timeout: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    result_ttl: float | None = None
    schedule: Schedule | None = None
    series: str | None = None
    at_most_once: bool = False
    kind: str | None = None
    lease_token: str | None = None
    lease_until: datetime | None = None
    worker: str | None = None
    progress: float = 0.0
    progress_done: float = 0.0
    progress_total: float | None = None
    progress_message: str | None = None
    result: bytes | None = None
    error: TaskError | None = None
    origin: str | None = None
    run_id: str | None = None
    owner: str | None = None
    depends_on: tuple[str, ...] = ()
    run_on: str = "success"
    cache_key: str | None = None

    @property
    def has_value(self) -> bool:
        """Return whether the task succeeded with a result to read.

        False for a succeeded task whose result, kept in a separate result store, is no
        longer there: its ``error`` then says so.
        """
        return self.status is TaskStatus.SUCCEEDED and self.error is None

    @property
    def max_attempts(self) -> int:
        """Return how many claims this task may have in all (first run plus retries)."""
        return self.retries + 1


RUN_ON = ("success", "any", "failure")
"""When a task with dependencies runs: all succeeded, all finished, or all finished and one did not succeed."""


class DependencyMove(msgspec.Struct, frozen=True, kw_only=True):
    """A change of a task that depends on others, decided from their states (see ``QueueStore.move_dependents``).

    ``source`` is the status the task must still have for the move to apply: ``waiting`` when
    its dependencies finished (``target`` pending, failed or cancelled, with ``error`` saying
    which dependency stopped it), ``failed`` or ``cancelled`` when a retried dependency
    re-arms it (``target`` waiting).
    """

    task_id: str
    source: TaskStatus
    target: TaskStatus
    error: TaskError | None = None


class TaskResult(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The outcome of one attempt, as a worker (or a rescuer) reports it to the store.

    The store applies it only while ``lease_token`` still holds the task and the task is
    running; with ``rescue=True`` only while that lease has also run out. ``result_ttl`` is
    the task's own: a store that keeps results apart from the queue (``result_url``) keeps
    the result that long.
    """

    task_id: str
    lease_token: str
    status: TaskStatus
    result: bytes | None = None
    error: TaskError | None = None
    eta: datetime | None = None
    rescue: bool = False
    result_ttl: float | None = None


class OutputChunk(msgspec.Struct, frozen=True, kw_only=True):
    """A batch of what a task printed or displayed, as a store keeps it (``TaskOutputStore``).

    ``seq`` orders the chunks of one task (from 1, given by the store). ``stream`` is
    ``stdout``, ``stderr`` or ``display``; for ``display``, ``text`` is the JSON of
    ``{"data": ..., "metadata": ...}`` as the kernel's display publisher got them.
    """

    seq: int
    stream: str
    text: str


class TaskOutput(msgspec.Struct, frozen=True, kw_only=True):
    """A page of a task's kept output: its chunks after a ``seq``, and whether the head was dropped.

    ``dropped`` is true when older output of the task was removed to keep it within its limit
    (``OUTPUT_LIMIT``), so the first chunk kept is not the first the task wrote.
    """

    chunks: list[OutputChunk]
    dropped: bool = False


class TaskEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One recorded transition of a task; ``seq`` orders events within a store.

    ``run_id`` names the claim the event belongs to (``None`` before the first claim).
    """

    seq: int
    task_id: str
    kind: EventKind
    at: datetime
    status: TaskStatus
    attempt: int = 0
    progress: float | None = None
    message: str | None = None
    run_id: str | None = None


class WorkerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One live worker pool as recorded in the store's registry (``omniq-nb workers``).

    A pool writes its row when it starts, refreshes ``heartbeat`` (and ``running``) from its
    lease-keeper thread, and deletes it when it stops gracefully. A row whose heartbeat is
    older than its ``ttl`` belongs to a pool that died: stores leave it out.
    """

    id: str
    """Short printable id (8 hex digits), what ``%omniq workers stop ID`` takes."""
    name: str
    """The pool's name, stored on the tasks it claims."""
    host: str
    pid: int
    kind: str
    """Where its sync tasks run: ``async``, ``thread``, ``process`` or ``gevent``."""
    concurrency: int
    queues: tuple[str, ...]
    kernel: str | None = None
    """The kernel session it serves (in-kernel pools), the ``owner`` of that kernel's tasks."""
    notebook: str | None = None
    """The notebook's path, where Jupyter tells the kernel (``JPY_SESSION_NAME``)."""
    started_at: datetime | None = None
    heartbeat: datetime | None = None
    """When the store last heard from it (the store sets it)."""
    ttl: float = 90.0
    """Seconds after ``heartbeat`` at which the row counts as dead."""
    running: int = 0
    """Attempts it held leases for at its last heartbeat."""
    stop_requested: bool = False
    """Someone asked it to drain and stop; it does so at its next heartbeat."""

    @property
    def serves(self) -> str:
        """Return whose tasks it runs: its kernel's notebook (or session), or ``all tasks`` (standalone)."""
        if self.notebook:
            return self.notebook
        return f"kernel {self.kernel[:8]}" if self.kernel else "all tasks"

    def seen(self, now: datetime) -> float | None:
        """Return the seconds from its last heartbeat to ``now`` (``None`` before the first one)."""
        return None if self.heartbeat is None else max(0.0, (now - self.heartbeat).total_seconds())


class StoreHealth(msgspec.Struct, frozen=True, kw_only=True):
    """What ``check()`` found in a store: a few facts, and the problems among them.

    ``ok`` is False exactly when ``problems`` is not empty. A problem is: the database file is
    damaged (``integrity`` is not ``"ok"``), its schema is newer than this omniq_nb
    understands, it cannot be read, or running tasks have had their lease run out for more
    than ``stale_after`` seconds (their worker died and no live pool has rescued them: a
    live pool does so about a second after a lease runs out). A lease that ran out more
    recently is normal while a pool is about to rescue it: it is counted in
    ``expired_leases`` only.
    """

    url: str
    """The store's URL, password redacted."""
    ok: bool
    problems: tuple[str, ...]
    """One sentence per problem found; empty when ``ok``."""
    integrity: str
    """``"ok"``, or the first lines of the database's own integrity report ("ok" where the
    backend has no such check)."""
    schema_version: int | None
    """The stored schema version (``None`` for a store without one, such as ``memory://``)."""
    wal_bytes: int | None
    """Size of the SQLite write-ahead log file (``None`` where there is none)."""
    counts: dict[TaskStatus, int]
    """How many tasks are in each status (empty when the tasks could not be read)."""
    expired_leases: int
    """Running tasks whose lease has run out, however recently."""
    stale_leases: int
    """Running tasks whose lease ran out more than ``stale_after`` seconds ago."""
    stale_ids: tuple[str, ...]
    """The ids of the first stale tasks (at most 10, longest expired first)."""
    stale_after: float
    """Seconds after which a lease that ran out counts as a problem."""
    warnings: tuple[str, ...] = ()
    """Facts worth knowing that are not problems (``ok`` stays True): a Redis server that keeps
    nothing on disk, say."""
