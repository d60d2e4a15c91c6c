"""``SplitStorage``: a queue in one store, its results and events in others (``result_url``, ``events_url``).

The transitions go to the queue's store, in this order when parts are apart:

1. an outcome's result is written to the result store first, under the task id and the
   attempt's lease token, and the queue's row gets a mark naming that token instead;
2. the transition is made in the queue's store (fenced on the lease as always);
3. its events are appended to the events store.

So a reader never sees ``succeeded`` without its result, and a worker that lost its lease
writes a result that nobody reads. An event is written after the change it records: a
process that dies between the two loses that event, never the change (the event hub polls
task rows as the truth). Events of one task written by two processes are in the order they
were appended: a worker in another process that claims a task at once may append its
``started`` before the enqueuer appends ``enqueued`` (both are there; each event's ``at``
tells the true order). When results and events share the queue's store,
``open_stores`` returns that store itself and none of this applies.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

import msgspec

from omniq_nb.errors import StorageError
from omniq_nb.models import DependencyMove, EventKind, StoreHealth, Task, TaskEvent, TaskResult, TaskStatus
from omniq_nb.storage import lifecycle
from omniq_nb.storage.split_base import SplitParts, SplitQueueSide, kept_mark

__all__ = ["SplitStorage"]

logger = logging.getLogger(__name__)  # one name with split_base's


def _event(task: Task, kind: EventKind, at: datetime | None, *, message: str | None = None) -> TaskEvent:
    return lifecycle.event_of(task, kind, at=at, message=message)


def _purge_times(tasks: Iterable[Task]) -> dict[str, datetime]:
    """Return when the queue purges each finished task with a ``result_ttl`` (its events go then too)."""
    return {
        t.id: t.finished_at + timedelta(seconds=t.result_ttl)
        for t in tasks
        if t.status in lifecycle.FINISHED and t.finished_at is not None and t.result_ttl is not None
    }


class SplitStorage(SplitParts, SplitQueueSide):
    """The ``Storage`` of a queue whose results or events live in stores of their own.

    Built by ``open_stores`` from the settings; see ``SplitParts`` for the arguments.
    """

    async def _record(self, events: Iterable[TaskEvent], finished: Iterable[Task] = ()) -> None:
        """Append events to the events store (if apart), with the purge times of the ``finished`` tasks.

        Best effort: the change they record is already made, so an events store that fails
        loses these events (logged once until it answers again) and never fails the change.
        """
        listed = builtins.list(events)
        if self.events_store is None or not listed:
            return
        try:
            await self.events_store.append_events(listed, purge_at=_purge_times(finished))
        except StorageError as exc:
            if not self._events_failing:
                logger.warning("events are not recorded while %s fails: %s", self.events_store.url, exc)
            self._events_failing = True
        else:
            if self._events_failing:
                logger.warning("events are recorded again in %s", self.events_store.url)
            self._events_failing = False

    async def insert(self, tasks: Iterable[Task]) -> None:
        """Add new tasks to the queue's store, then record their ``enqueued`` events."""
        listed = builtins.list(tasks)
        await self.queue.insert(listed)
        await self._record(_event(task, EventKind.ENQUEUED, task.created_at) for task in listed)

    async def insert_many(
        self, template: Task, entries: Iterable[tuple[str, bytes]], kept: tuple[str, bytes] | None = None
    ) -> None:
        """Add tasks like ``template`` (and ``kept``) to the queue's store, then record their events."""
        listed = builtins.list(entries)
        await self.queue.insert_many(template, listed, kept)
        at = template.created_at
        await self._record(
            _event(msgspec.structs.replace(template, id=task_id), EventKind.ENQUEUED, at) for task_id, _ in listed
        )

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
        """Claim in the queue's store, then record the ``started`` events."""
        claimed = await self.queue.claim(
            queues=queues,
            limit=limit,
            lease=lease,
            worker=worker,
            unowned_only=unowned_only,
            owner=owner,
            skip_kinds=skip_kinds,
        )
        if self.events_store is not None:
            self._runs.update((task.lease_token or "", task) for task in claimed)
        await self._record(_event(task, EventKind.STARTED, task.started_at) for task in claimed)
        return claimed

    async def renew(self, *, leases: Mapping[str, str], lease: float) -> set[str]:
        """Extend leases in the queue's store."""
        return await self.queue.renew(leases=leases, lease=lease)

    async def progress(
        self, *, task_id: str, lease_token: str, done: float, total: float | None, message: str | None
    ) -> bool:
        """Store progress in the queue's store; record a ``progress`` event when it was written."""
        written = await self.queue.progress(
            task_id=task_id, lease_token=lease_token, done=done, total=total, message=message
        )
        if written and self.events_store is not None:
            run = self._runs.get(lease_token)  # the attempt this lease was claimed for (this process's claims)
            task = run if run is not None else await self.queue.get(task_id)
            if task is not None:
                fraction = lifecycle.progress_fraction(done, total)
                running = msgspec.structs.replace(task, status=TaskStatus.RUNNING, progress=fraction)
                await self._record([_event(running, EventKind.PROGRESS, None, message=message)])
        return written

    async def settle(
        self, results: Sequence[TaskResult], *, successors: Mapping[str, Task] = {}
    ) -> builtins.list[Task]:
        """Keep the results first, then apply the outcomes (fenced), then record the events."""
        lifecycle.check_outcomes(results)
        kept: dict[tuple[str, str], bytes] = {}
        if self.results is not None:
            kept = {(r.task_id, r.lease_token): r.result for r in results if r.result is not None}
        if kept and self.results is not None:
            await self.results.keep_results([r for r in results if r.result is not None])
            results = [
                msgspec.structs.replace(r, result=kept_mark(r.lease_token)) if r.result is not None else r
                for r in results
            ]
        accepted = await self.queue.settle(results, successors=successors)
        accepted = [self._with_own_result(t, kept) for t in accepted]  # by its mark: a late attempt may share the batch
        for r in results:
            self._runs.pop(r.lease_token, None)
        if self.events_store is not None:
            events = [
                _event(t, lifecycle.entered(t.status), t.finished_at, message=t.error.message if t.error else None)
                for t in accepted
            ]
            following = [successors[t.id] for t in accepted if t.id in successors]
            inserted = await self.queue.get_many([t.id for t in following]) if following else []
            await self._record([*events, *(_event(t, EventKind.ENQUEUED, t.created_at) for t in inserted)], accepted)
        return accepted

    async def release(self, *, leases: Mapping[str, str]) -> builtins.list[Task]:
        """Hand running tasks back in the queue's store, then record ``released`` events."""
        released = await self.queue.release(leases=leases)
        for token in leases.values():
            self._runs.pop(token, None)
        await self._record(_event(task, EventKind.RELEASED, None) for task in released)
        return released

    async def expired_leases(self, *, limit: int) -> builtins.list[Task]:
        """Return running tasks whose lease ran out in the queue's store."""
        return await self.queue.expired_leases(limit=limit)

    async def cancel(self, task_id: str) -> Task | None:
        """Cancel in the queue's store; record a ``cancelled`` event when it changed the task."""
        before = await self.queue.get(task_id) if self.events_store is not None else None
        after = await self.queue.cancel(task_id)
        if before is not None and after is not None and before.status is not after.status:
            await self._record([_event(after, EventKind.CANCELLED, after.finished_at)], [after])
        return (await self._with_results([after]))[0] if after is not None else None

    async def dependents(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Return the tasks depending on any of ``task_ids``, from the queue's store."""
        return await self.queue.dependents(task_ids)

    async def move_dependents(self, moves: Sequence[DependencyMove]) -> builtins.list[Task]:
        """Move dependents in the queue's store, then record each move's event."""
        moved = await self.queue.move_dependents(moves)
        kinds = {move.task_id: lifecycle.moved_event(move) for move in moves}
        await self._record((_event(task, kinds[task.id], task.finished_at) for task in moved), moved)
        return moved

    async def requeue(self, task_id: str) -> Task | None:
        """Requeue in the queue's store; record a ``retried`` event when it changed the task."""
        before = await self.queue.get(task_id) if self.events_store is not None else None
        after = await self.queue.requeue(task_id)
        if before is not None and after is not None and before.status is not after.status:
            await self._record([_event(after, EventKind.RETRIED, None)])
        return (await self._with_results([after]))[0] if after is not None else None

    async def expire(self) -> builtins.list[Task]:
        """Expire in the queue's store, then record ``expired`` events."""
        expired = await self.queue.expire()
        await self._record((_event(task, EventKind.EXPIRED, task.finished_at) for task in expired), expired)
        return expired

    async def forget_cached(self, *, name: str | None = None) -> int:
        """Clear cache keys in the queue's store (the results stay where they are)."""
        return await self.queue.forget_cached(name=name)

    async def wait_for_tasks(self, timeout: float) -> None:
        """Wait for a wake-up hint of the queue's store."""
        await self.queue.wait_for_tasks(timeout)

    async def purge(
        self, *, finished_before: datetime | None = None, statuses: Sequence[TaskStatus] = (), everything: bool = False
    ) -> int:
        """Purge the queue's store, then forget the results and events whose time has come.

        Results and events go when their task's ``result_ttl`` runs out, as its row does (a
        result an hour later: clocks differ). Those of tasks purged by age
        (``finished_before``) stay until their own ``result_ttl`` runs out, and for ever when it
        is ``None``: the other stores are not told which tasks went.
        """
        gone = await self.queue.purge(finished_before=finished_before, statuses=statuses, everything=everything)
        for side in self._sides():
            await side.forget_outcomes(everything=everything)
        return gone

    async def lead_maintenance(self, runner: str, *, term: float) -> bool:
        """Return whether ``runner`` leads the upkeep: the queue store's election decides."""
        return await self.queue.lead_maintenance(runner, term=term)

    async def checkpoint(self) -> None:
        """Keep every part's log bounded."""
        await self.queue.checkpoint()
        for side in self._sides():
            await side.checkpoint()

    async def check(self, *, stale_after: float) -> StoreHealth:
        """Report the queue store's health, with the problems of the other stores added."""
        health = await self.queue.check(stale_after=stale_after)
        problems = builtins.list(health.problems)
        for side in self._sides():
            other = await side.check(stale_after=stale_after)
            problems += [f"{side.url}: {problem}" for problem in other.problems]
        return msgspec.structs.replace(health, problems=tuple(problems), ok=health.ok and not problems)
