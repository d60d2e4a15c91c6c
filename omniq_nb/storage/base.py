"""The one storage protocol every backend keeps, and the helpers all of them share.

A store keeps ``Task`` rows and their ``TaskEvent``s. It never unpickles a payload or a
result: those are opaque bytes. Every write made after a claim is fenced on the claim's
lease token and on ``status='running'``, so a worker that lost its lease changes nothing.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from omniq_nb.errors import NotSupported, StorageError
from omniq_nb.models import Task, TaskEvent, TaskResult, TaskStatus

__all__ = ["NotSupported", "Storage", "StorageError", "redact_url"]


@runtime_checkable
class Storage(Protocol):
    """What the façade and the worker pool ask of a store; every method is async.

    Capability flags: ``supports_notify`` (the store can wake workers in other processes),
    ``multi_host`` (workers on other machines may share it).
    """

    url: str
    supports_notify: bool
    multi_host: bool

    async def open(self) -> None:
        """Connect and create or migrate the schema."""
        ...

    async def close(self) -> None:
        """Release every connection; the store cannot be used afterwards."""
        ...

    async def __aenter__(self) -> Storage:
        """Open the store."""
        ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the store."""
        ...

    def clone(self) -> Storage:
        """Return a new, unopened store on the same data, for use on another thread's loop."""
        ...

    async def now(self) -> datetime:
        """Return the store's clock (lease times are measured on it)."""
        ...

    async def insert(self, tasks: Iterable[Task]) -> None:
        """Add new pending tasks, all in one transaction, recording an ``enqueued`` event each.

        ``tasks`` may be lazy; if building it raises, nothing is inserted.
        """
        ...

    async def insert_many(self, template: Task, entries: Iterable[tuple[str, bytes]]) -> None:
        """Add tasks equal to ``template`` but for ``(id, payload)``, all in one transaction.

        ``series`` is each task's own id when ``template.series`` is set. Each task gets an
        ``enqueued`` event.
        """
        ...

    async def get(self, task_id: str) -> Task | None:
        """Return the task with this id, or ``None``."""
        ...

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Return the tasks with these ids that exist, in no particular order."""
        ...

    async def list(
        self, *, statuses: Sequence[TaskStatus] = (), queue: str | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Return up to ``limit`` tasks, newest first, filtered by status and queue."""
        ...

    async def count(self, *, task_ids: Sequence[str] | None = None) -> dict[TaskStatus, int]:
        """Return how many tasks (of ``task_ids``, or all) are in each status."""
        ...

    async def claim(self, *, queues: Sequence[str], limit: int, lease: float, worker: str) -> builtins.list[Task]:
        """Atomically take up to ``limit`` ready tasks: highest priority, then earliest eta, then oldest.

        Each claimed task is ``running`` with ``attempt`` one higher, a new random
        ``lease_token`` and ``lease_until = now + lease`` on the store's clock. No two
        claims ever return the same attempt.
        """
        ...

    async def renew(self, *, leases: Mapping[str, str], lease: float) -> set[str]:
        """Extend the leases ``{task_id: token}`` still held; return the ids whose renewal held."""
        ...

    async def progress(
        self, *, task_id: str, lease_token: str, done: float, total: float | None, message: str | None
    ) -> bool:
        """Store progress of a running task (fenced on the lease); return whether it was written."""
        ...

    async def settle(
        self, results: Sequence[TaskResult], *, successors: Mapping[str, Task] = {}
    ) -> builtins.list[Task]:
        """Apply attempt outcomes together; return the tasks whose outcome was accepted.

        An outcome is accepted only while its lease token still holds a running task (and,
        with ``rescue=True``, that lease has run out). ``successors`` maps a task id to the
        next run of its periodic series, inserted only when that task's outcome is accepted
        and the series has no other unfinished run.
        """
        ...

    async def release(self, *, leases: Mapping[str, str]) -> builtins.list[Task]:
        """Hand running tasks back to ``pending`` without using an attempt (graceful stop)."""
        ...

    async def expired_leases(self, *, limit: int) -> builtins.list[Task]:
        """Return running tasks whose lease has run out on the store's clock."""
        ...

    async def cancel(self, task_id: str) -> Task | None:
        """Cancel a pending or running task; return its new state, or ``None`` if it is unknown.

        The pending and running runs of its periodic series are cancelled too, so cancelling
        any run of an interval or cron task stops the schedule. A task already finished is
        returned unchanged.
        """
        ...

    async def requeue(self, task_id: str) -> Task | None:
        """Put a failed, cancelled or expired task back to ``pending`` with one more attempt allowed.

        Returns the task as it is afterwards (unchanged when it was not in such a status), or
        ``None`` if it is unknown.
        """
        ...

    async def expire(self) -> builtins.list[Task]:
        """Move pending tasks whose ``expires_at`` has passed to ``expired``; return them."""
        ...

    async def purge(
        self, *, finished_before: datetime | None = None, statuses: Sequence[TaskStatus] = (), everything: bool = False
    ) -> int:
        """Delete tasks and their events; return how many tasks went.

        With ``everything=True`` the store is emptied. Otherwise only finished tasks go: those
        past their own ``result_ttl``, plus those that finished before ``finished_before``
        (optionally only in ``statuses``).
        """
        ...

    async def events(
        self, *, task_id: str | None = None, since: int = 0, limit: int = 1000
    ) -> builtins.list[TaskEvent]:
        """Return recorded events with ``seq > since``, oldest first (of one task, or all)."""
        ...

    async def last_event_seq(self) -> int:
        """Return the ``seq`` of the newest recorded event (0 when there is none)."""
        ...

    async def wait_for_tasks(self, timeout: float) -> None:
        """Return when another process hints that it added ready tasks, or after ``timeout``.

        A hint only wakes a worker early; without ``supports_notify`` this just sleeps.
        """
        ...


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, safe for messages and logs.

    Args:
        url: a store URL such as ``postgresql://user:pw@host/db``.

    Example:
        >>> redact_url("postgresql://me:secret@db:5432/q")
        'postgresql://me:***@db:5432/q'

    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # as written: an IPv6 host keeps its brackets, a bad port shows
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
