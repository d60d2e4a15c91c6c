"""The storage protocol, split by role, and ``Storage``: the union that one backend implements.

A store keeps ``Task`` rows and their ``TaskEvent``s. It never unpickles a payload or a
result: those are opaque bytes. Every write made after a claim is fenced on the claim's
lease token and on ``status='running'``, so a worker that lost its lease changes nothing.

Roles, each named after who calls it:

- ``StoreConnection``: whoever owns the store (the queue, a pool's own loop) opens,
  closes and clones it and reads its clock; it carries the capability flags.
- ``QueueStore``: the task transitions (insert, claim, lease upkeep, outcomes, cancel,
  requeue, expiry) the façade and the worker pool make, and the wake-up wait.
- ``ResultStore``: reads of tasks and their outcomes (handles, the event hub, listings).
- ``EventStore``: the event stream the event hub follows (``OthersEvents``: without one's own).
- ``WorkerRegistry`` (``registry_role``): the live worker pools (heartbeats, ``omniq-nb workers``, stop requests).
- ``MaintenanceStore``: the maintenance election, purge, log checkpoints and the health check.
- ``TaskOutputStore`` (``output_role``): what tasks printed or displayed, bounded per task, kept with the task.

Every backend implements all of them on one object (``Storage``), so the façade and the
pool never know which backend they talk to. A backend that can also keep the results or
the events of a queue that lives in another store (``result_url``, ``events_url``)
implements ``OutcomeStore`` too; ``storage.split`` joins such stores into one ``Storage``.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from omniq_nb.errors import NotSupported, StorageError
from omniq_nb.models import DependencyMove, StoreHealth, Task, TaskEvent, TaskResult, TaskStatus
from omniq_nb.storage.output_role import TaskOutputStore
from omniq_nb.storage.registry_role import WorkerRegistry

ResultKey = tuple[str, str]
"""A kept result's key: the task id and the lease token of the attempt that produced it."""

__all__ = [
    "EventStore",
    "MaintenanceStore",
    "OthersEvents",
    "NotSupported",
    "OutcomeStore",
    "QueueStore",
    "ResultStore",
    "Storage",
    "StorageError",
    "StoreConnection",
    "TaskOutputStore",
    "WorkerRegistry",
]


class StoreConnection(Protocol):
    """Open, close and clone a store; read its clock and its capability flags.

    Capability flags (class or instance attributes of every backend):

    - ``supports_notify``: the store can wake workers in other processes
      (``wait_for_tasks`` returns early on a hint); without it, that call just sleeps.
    - ``multi_host``: workers on other machines may share the store (SQLite: no).
    """

    url: str
    """The store's URL with any password redacted."""
    supports_notify: bool
    multi_host: bool

    async def open(self) -> None:
        """Connect and create or migrate the schema."""
        ...

    async def close(self) -> None:
        """Release every connection; the store cannot be used afterwards."""
        ...

    async def __aenter__(self) -> Self:
        """Open the store."""
        ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the store."""
        ...

    def clone(self) -> Self:
        """Return a new, unopened store on the same data, for use on another thread's loop."""
        ...

    async def now(self) -> datetime:
        """Return the store's clock (lease times are measured on it)."""
        ...


class QueueStore(Protocol):
    """The task transitions the façade and the worker pool make, each atomic; and the wake-up wait."""

    async def insert(self, tasks: Iterable[Task]) -> None:
        """Add new tasks, all in one transaction, recording an ``enqueued`` event each.

        A task is ``pending``, or ``waiting`` for the tasks its ``depends_on`` names (never
        claimed while waiting; ``move_dependents`` moves it on). ``tasks`` may be lazy; if
        building it raises, nothing is inserted.
        """
        ...

    async def insert_many(
        self, template: Task, entries: Iterable[tuple[str, bytes]], kept: tuple[str, bytes] | None = None
    ) -> None:
        """Add tasks equal to ``template`` but for ``(id, payload)``, all in one transaction.

        ``series`` is each task's own id when ``template.series`` is set. Each task gets an
        ``enqueued`` event. ``entries`` may be lazy (``enqueue_many`` pickles each call as it is
        read) and is read once; if reading it raises, nothing is inserted. ``kept`` is the
        ``(digest, body)`` of the batch's pickled callable, which the payloads name by its
        SHA-256 digest: it is kept in the same transaction (once: keeping it again changes
        nothing), so no stored task names a callable the store lacks. Kept callables stay
        until ``purge`` of everything.
        """
        ...

    async def kept_callables(self, digests: Collection[str]) -> dict[str, bytes]:
        """Return the kept callables of these digests; a digest the store does not keep is left out."""
        ...

    async def claim(
        self,
        *,
        queues: Sequence[str],
        limit: int,
        lease: float,
        worker: str,
        unowned_only: bool = False,
        owner: str | None = None,
        skip_kinds: Sequence[str] = (),
    ) -> builtins.list[Task]:
        """Atomically take up to ``limit`` ready tasks: highest priority, then earliest eta, then oldest.

        Each claimed task is ``running`` with ``attempt`` one higher, a new random
        ``lease_token`` and ``lease_until = now + lease`` on the store's clock. No two
        claims ever return the same attempt.

        With ``unowned_only`` (kernel affinity) only tasks without an ``owner``, owned by
        ``owner``, or whose owner has no live row in the worker registry are taken. Tasks whose
        ``kind`` is in ``skip_kinds`` are left for another pool (``"gevent"``: only a gevent
        worker runs them); a task without a kind is never skipped.
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
        """Cancel a waiting, pending or running task; return its new state, or ``None`` if it is unknown.

        The pending and running runs of its periodic series are cancelled too, so cancelling
        any run of an interval or cron task stops the schedule. A task already finished is
        returned unchanged.
        """
        ...

    async def dependents(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Return the tasks whose ``depends_on`` names any of ``task_ids``, each once, in any status.

        Indexed by dependency where the store has indexes: the caller asks after every batch
        of finished tasks, mostly to learn that there are none.
        """
        ...

    async def move_dependents(self, moves: Sequence[DependencyMove]) -> builtins.list[Task]:
        """Apply each move whose task is still in ``move.source``; return the tasks moved, as they are now.

        Atomic per task (a compare-and-set on the status), all in one transaction where the
        store has them: two processes that decide the same move apply it once. A moved task
        gets ``status = target`` and ``error = move.error``; ``finished_at`` is now for a
        finished target, empty otherwise; a task moved to ``pending`` becomes claimable (its
        eta is kept). Each move records one event (``lifecycle.moved_event``).
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

    async def forget_cached(self, *, name: str | None = None) -> int:
        """Clear the ``cache_key`` of tasks that have one (those named ``name``, or all); return how many.

        The tasks and their results stay; only later submissions no longer reuse them.
        """
        ...

    async def wait_for_tasks(self, timeout: float) -> None:
        """Return when another process hints that it added ready tasks, or after ``timeout``.

        A hint only wakes a worker early; without ``supports_notify`` this just sleeps.
        """
        ...


class ResultStore(Protocol):
    """Reads of tasks and their outcomes: handles, the event hub, listings and counts."""

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

    async def cached(self, keys: Sequence[str], *, finished_after: datetime | None = None) -> dict[str, Task]:
        """Return, for each of ``keys`` some succeeded task has as ``cache_key``, the newest such task.

        Newest by ``finished_at``; with ``finished_after``, only a task that finished at or
        after it counts (a cache entry's ``cache_ttl``). A key no task answers is left out.
        Indexed by key: a submission with ``cache=True`` asks once per batch of tasks.
        """
        ...


class EventStore(Protocol):
    """The recorded ``TaskEvent`` stream that the event hub follows by ``seq``."""

    async def events(
        self, *, task_id: str | None = None, since: int = 0, limit: int = 1000
    ) -> builtins.list[TaskEvent]:
        """Return recorded events with ``seq > since``, oldest first (of one task, or all)."""
        ...

    async def last_event_seq(self) -> int:
        """Return the ``seq`` of the newest recorded event (0 when there is none)."""
        ...


@runtime_checkable
class OthersEvents(Protocol):
    """A store that can leave out what its own object's writes recorded (SQLite): their rows reached the hub."""

    async def others_events(self, *, since: int, limit: int) -> tuple[builtins.list[TaskEvent], int]:
        """Return the events after ``since`` but this object's inserts', claims' and settles', and the next cursor.

        So are events of a task this object wrote later (the row it handed on is newer). The
        cursor is the last event returned when ``limit`` came back, else the newest event.
        """
        ...


class MaintenanceStore(Protocol):
    """Keeping the store bounded and healthy: who runs the upkeep, purge, log checkpoints, the health check."""

    async def lead_maintenance(self, runner: str, *, term: float) -> bool:
        """Return whether ``runner`` may run rescue, expiry and purge for the next ``term`` seconds.

        At most one runner per store holds the turn at a time; the holder keeps it by calling
        again before it runs out, and once a holder stops calling (it died), another caller
        takes the turn after ``term``. Correctness never depends on the election (each rescue
        is fenced on its lease): it only keeps a hundred pools from all scanning. A store used
        by one process or one machine (memory, SQLite) may let every caller lead.

        Args:
            runner: the caller's id, unique per maintenance runner (a pool's name and a token).
            term: seconds the turn lasts after this call, on the store's clock.

        """
        ...

    async def purge(
        self, *, finished_before: datetime | None = None, statuses: Sequence[TaskStatus] = (), everything: bool = False
    ) -> int:
        """Delete tasks with their events and output; return how many tasks went.

        With ``everything=True`` the store is emptied. Otherwise only finished tasks go: those
        past their own ``result_ttl``, plus those that finished before ``finished_before``
        (optionally only in ``statuses``).
        """
        ...

    async def checkpoint(self) -> None:
        """Keep the store's log bounded (SQLite: reset a write-ahead log that readers kept growing).

        Worker pools call it after writing outcomes and about once a second; it must be cheap
        when there is nothing to do.
        """
        ...

    async def check(self, *, stale_after: float) -> StoreHealth:
        """Report the store's health (see ``StoreHealth`` for what counts as a problem).

        Works on an open store and on one never opened: the store is then inspected as it
        is (through a connection of its own, where it has connections), and nothing is
        created or migrated.

        Args:
            stale_after: seconds after which a running task's lapsed lease is a problem.

        Raises:
            StorageError: there is no store at the URL (nothing is created), or it cannot be reached.

        """
        ...


@runtime_checkable
class Storage(
    StoreConnection, QueueStore, ResultStore, EventStore, WorkerRegistry, MaintenanceStore, TaskOutputStore, Protocol
):
    """Every role together: what the façade and the worker pool ask of a store; every method is async.

    One backend object implements all of them (``SQLiteStorage``, ``MemoryStorage``).
    """


@runtime_checkable
class OutcomeStore(StoreConnection, EventStore, MaintenanceStore, Protocol):
    """Results and events of a queue whose tasks live in another store (``result_url``, ``events_url``).

    Results are kept under the task id *and* the lease token of the attempt that produced
    them, so a worker that lost its lease can write its result without effect: the queue's
    row names the token of the outcome it accepted, and only that result is ever read.
    Events get their ``seq`` here, in the order they are appended.
    """

    async def keep_results(self, results: Sequence[TaskResult]) -> None:
        """Store the ``result`` bytes of these outcomes under ``(task_id, lease_token)``.

        Each is kept for its ``result_ttl`` seconds (forever when ``None``); writing the same
        key again replaces it.
        """
        ...

    async def kept_results(self, keys: Sequence[ResultKey]) -> dict[ResultKey, bytes]:
        """Return the kept result bytes of these keys; a key with nothing kept is left out."""
        ...

    async def append_events(self, events: Sequence[TaskEvent], *, purge_at: Mapping[str, datetime] = {}) -> None:
        """Record events of the queue's transitions, in this order (their ``seq`` is ignored).

        ``purge_at`` maps the id of a task that finished to the time its row is purged from
        the queue (``finished_at + result_ttl``): its events go then too, unless newer events
        (it was requeued) came after.
        """
        ...

    async def forget_outcomes(self, *, everything: bool = False) -> int:
        """Delete kept results past their time, and the events of tasks past their ``purge_at``.

        A kept result goes ``result_ttl`` (plus an hour, for clocks that differ) after it was
        written; a task's events go at the ``purge_at`` its newest event carries. With
        ``everything=True`` every kept result and event goes. Returns how many results went.
        """
        ...
