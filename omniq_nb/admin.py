"""The administration role of the queue: purge, the result cache, health check, worker registry, event log, output.

``QueueAdmin`` gives ``AsyncOmniQ`` these methods; ``BlockingQueueAdmin`` gives ``OmniQ``
their blocking twins, each one call through the twin's bridge.

Example:
    >>> statuses(["failed", "cancelled"])
    [<TaskStatus.FAILED: 'failed'>, <TaskStatus.CANCELLED: 'cancelled'>]

"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from omniq_nb.bridge import BlockingBridge
from omniq_nb.config import Settings
from omniq_nb.history import stats_name
from omniq_nb.models import StoreHealth, Task, TaskEvent, TaskOutput, TaskStatus, WorkerInfo
from omniq_nb.schedule import duration_text, seconds
from omniq_nb.storage import Storage

_UTC = timezone.utc

StatusFilter = str | TaskStatus | Iterable[str | TaskStatus] | None
"""One status or several, by name or member (``"failed"``, ``[TaskStatus.FAILED, "expired"]``); None: all."""


class QueueAdmin:
    """The administration role of ``AsyncOmniQ``: purge, check, the worker registry and the event log."""

    storage: Storage
    settings: Settings

    async def purge(
        self,
        *,
        older_than: float | timedelta | None = None,
        status: StatusFilter = None,
        everything: bool = False,
    ) -> int:
        """Delete finished tasks and their events; return how many tasks were deleted.

        With no arguments, finished tasks past their own ``result_ttl`` go: those enqueued
        without one took ``RESULT_TTL`` (7 days unless set), and ``result_ttl=None`` keeps a
        task until it is purged by age. Live pools do the same every minute. With
        ``older_than``, finished tasks that finished longer ago go too (only those in
        ``status`` when given; ``older_than=0``: every finished task). ``everything=True``
        deletes every task, running ones included. ``purge_report`` does the same and says
        why nothing went.

        Raises:
            ValueError: a negative ``older_than`` or an unknown status.

        """
        age = seconds(older_than, name="older_than")
        before = None if age is None else datetime.now(_UTC) - timedelta(seconds=age)
        return await self.storage.purge(finished_before=before, statuses=statuses(status), everything=everything)

    async def purge_report(
        self,
        *,
        older_than: float | timedelta | None = None,
        status: StatusFilter = None,
        everything: bool = False,
        command: str = "purge",
        cache: bool = False,
    ) -> str:
        """Purge as ``purge`` does and return one line for people saying what went.

        ``omniq-nb purge``, ``%omniq purge`` and the dashboard's "Purge finished" button print
        it. When nothing went, it says why, and what to pass instead (``--older-than``, ``--all``).
        With ``cache=True`` alone (``--cache``) only the result cache is forgotten
        (``cache_clear``); with other arguments too, both happen.

        Args:
            older_than: as for ``purge``.
            status: as for ``purge``.
            everything: as for ``purge``.
            command: how the reader purges, for the suggestions (``omniq-nb purge``, ``%omniq purge``).
            cache: forget every cached result (the tasks stay).

        Raises:
            ValueError: a negative ``older_than`` or an unknown status.

        Example:
            >>> from omniq_nb import OmniQ
            >>> with OmniQ(db_url="memory://") as q:
            ...     q.purge_report()
            'purged 0 finished tasks: no task has finished yet (pending and running ones go only with purge --all)'

        """
        if cache:
            count = await self.cache_clear()
            forgot = f"forgot {count} cache entr{'y' if count == 1 else 'ies'} (the tasks and their results stay)"
            if older_than is None and status is None and not everything:
                return forgot
            return (
                forgot
                + "; "
                + await self.purge_report(older_than=older_than, status=status, everything=everything, command=command)
            )
        count = await self.purge(older_than=older_than, status=status, everything=everything)
        if everything:
            return f"purged {_tasks(count)}"
        if count:
            return f"purged {_tasks(count, 'finished')}"
        picked = set(statuses(status)) or {s for s in TaskStatus if s.is_terminal}
        counts = await self.storage.count()
        finished = sum(n for s, n in counts.items() if s in picked)
        if not finished:
            none = "no task has finished yet"
            return f"purged 0 finished tasks: {none} (pending and running ones go only with {command} --all)"
        default = self.settings.result_ttl
        setting = "RESULT_TTL is none" if default is None else f"RESULT_TTL: {duration_text(default)}"
        why = f"none past its result_ttl ({setting}; a task without one stays until purged by age)"
        age = seconds(older_than, name="older_than")
        if age is None:
            instead = f"{command} --older-than 7d deletes those finished over 7 days ago (0: every finished task)"
        else:
            why += f" or finished over {duration_text(age)} ago"
            instead = f"a shorter --older-than deletes more ({command} --older-than 0: every finished task)"
        kept = f"{_tasks(finished, 'finished')} kept, {why}"
        return f"purged 0 finished tasks: {kept}. {instead}; {command} --all deletes every task, running ones too"

    async def cache_clear(self, fn: Any = None, /) -> int:
        """Forget cached results (of ``fn``'s tasks, or all): later submissions with ``cache=True`` run again.

        The tasks and their results stay (``purge`` removes those); returns how many tasks
        lost their cache key (finished or not: a task still running no longer becomes an entry).

        Args:
            fn: an ``@omniq.task`` function, a plain callable or a task name; ``None``: every task.

        Raises:
            TypeError: ``fn`` is neither callable nor a string.
            ValueError: ``fn`` is an empty string.

        """
        return await self.storage.forget_cached(name=None if fn is None else stats_name(fn, caller="cache_clear()"))

    async def check(self, *, stale_after: float | timedelta | None = None) -> StoreHealth:
        """Report the store's health: integrity, schema version, WAL size, tasks per status, lapsed leases.

        Works on an open queue and on one never opened (as ``omniq-nb check`` does): the store
        is then inspected as it is, and nothing is created or migrated. See ``StoreHealth``
        for what counts as a problem; ``ok`` is False when there is one.

        Args:
            stale_after: how long a running task's lease may have run out before that is a
                problem (its worker died and no live pool rescued it); default one lease,
                ``LEASE_SECONDS``. A live pool rescues a lapsed lease within about a second.

        Raises:
            StorageError: there is no store at ``db_url`` (none is created), or it cannot be reached.
            ValueError: a negative ``stale_after``.

        Example:
            >>> from omniq_nb import OmniQ
            >>> with OmniQ(db_url="memory://") as q:
            ...     q.check().ok
            True

        """
        grace = seconds(stale_after, name="stale_after")
        return await self.storage.check(stale_after=self.settings.lease_seconds if grace is None else grace)

    async def workers(self) -> list[WorkerInfo]:
        """Return the live worker pools of the store (in-kernel and standalone), oldest first.

        Every pool records itself when it starts, heartbeats while it runs and removes itself
        when it stops; a pool that died drops out once its heartbeat is a few leases old.
        """
        return await self.storage.workers()

    async def stop_worker(self, worker_id: str, /) -> bool:
        """Ask a live pool of the store, in any process, to drain and stop; return whether it was found.

        The pool sees the request at its next heartbeat (within ``LEASE_SECONDS / 3``, at most
        2 s), stops claiming, lets running tasks finish (or hands them back) and leaves the
        registry; a standalone ``omniq-nb worker`` then exits with status 0.

        Args:
            worker_id: the pool's id, as ``workers()`` lists it.
        """
        return await self.storage.request_stop(worker_id)

    async def events(self, *, task_id: str | None = None, since: int = 0, limit: int = 1000) -> list[TaskEvent]:
        """Return recorded events after cursor ``since``, oldest first (pass the last ``seq`` back).

        Args:
            task_id: only this task's events.
            since: a ``TaskEvent.seq`` already seen (0 for all).
            limit: at most this many.

        """
        for name, value in (("since", since), ("limit", limit)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} must be a whole number >= 0")
        return await self.storage.events(task_id=task_id, since=since, limit=limit)

    async def dependents(self, task_id: str, /) -> list[Task]:
        """Return the tasks that depend on task ``task_id`` (waiting for it, or done), oldest first."""
        return sorted(await self.storage.dependents([task_id]), key=lambda task: task.created_at)

    async def output(self, task_id: str, /, *, after: int = 0, limit: int = 1000) -> TaskOutput:
        """Return what the task printed or displayed, as kept (``OUTPUT_LIMIT``): chunks after ``seq`` ``after``.

        Pass the last chunk's ``seq`` back as ``after`` for the next page; ``dropped`` says the
        oldest output was dropped to keep within the limits. An unknown task has none.
        """
        return await self.storage.output(task_id, after=after, limit=limit)


class BlockingQueueAdmin:
    """The administration role of ``OmniQ``: ``QueueAdmin``'s methods, each blocking on the bridge."""

    _bridge: BlockingBridge
    _core: QueueAdmin

    def purge(
        self,
        *,
        older_than: float | timedelta | None = None,
        status: StatusFilter = None,
        everything: bool = False,
    ) -> int:
        """Blocking version of ``AsyncOmniQ.purge``."""
        return self._bridge.call(self._core.purge, older_than=older_than, status=status, everything=everything)

    def purge_report(
        self,
        *,
        older_than: float | timedelta | None = None,
        status: StatusFilter = None,
        everything: bool = False,
        command: str = "purge",
        cache: bool = False,
    ) -> str:
        """Blocking version of ``AsyncOmniQ.purge_report``."""
        return self._bridge.call(
            self._core.purge_report,
            older_than=older_than,
            status=status,
            everything=everything,
            command=command,
            cache=cache,
        )

    def cache_clear(self, fn: Any = None, /) -> int:
        """Blocking version of ``AsyncOmniQ.cache_clear``."""
        return self._bridge.call(self._core.cache_clear, fn)

    def check(self, *, stale_after: float | timedelta | None = None) -> StoreHealth:
        """Blocking version of ``AsyncOmniQ.check``."""
        return self._bridge.call(self._core.check, stale_after=stale_after)

    def workers(self) -> list[WorkerInfo]:
        """Blocking version of ``AsyncOmniQ.workers``."""
        return self._bridge.call(self._core.workers)

    def stop_worker(self, worker_id: str, /) -> bool:
        """Blocking version of ``AsyncOmniQ.stop_worker``."""
        return self._bridge.call(self._core.stop_worker, worker_id)

    def events(self, *, task_id: str | None = None, since: int = 0, limit: int = 1000) -> list[TaskEvent]:
        """Blocking version of ``AsyncOmniQ.events``."""
        return self._bridge.call(self._core.events, task_id=task_id, since=since, limit=limit)

    def output(self, task_id: str, /, *, after: int = 0, limit: int = 1000) -> TaskOutput:
        """Blocking version of ``AsyncOmniQ.output``."""
        return self._bridge.call(self._core.output, task_id, after=after, limit=limit)

    def dependents(self, task_id: str, /) -> list[Task]:
        """Blocking version of ``AsyncOmniQ.dependents``."""
        return self._bridge.call(self._core.dependents, task_id)


def statuses(value: StatusFilter) -> list[TaskStatus]:
    """Return the statuses a ``status=`` filter names (``[]`` for None: no filter).

    Raises:
        TypeError: ``value`` is neither a status name nor an iterable of them.
        ValueError: a name is not a task status.

    """
    if value is None:
        return []
    if not isinstance(value, (str, Iterable)):
        raise TypeError(f"status={value!r} must be a status name or several, such as 'failed'")
    items = [value] if isinstance(value, str) else list(value)
    try:
        return [TaskStatus(item) for item in items]
    except ValueError:
        known = ", ".join(s.value for s in TaskStatus)
        raise ValueError(f"status={value!r} is not a task status; expected one of {known}") from None


def _tasks(count: int, kind: str = "") -> str:
    """Return ``"1 task"`` or ``"3 finished tasks"``."""
    return f"{count} {kind + ' ' if kind else ''}task{'' if count == 1 else 's'}"
