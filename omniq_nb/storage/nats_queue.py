"""The NATS store's ``QueueStore`` role: every transition a compare-and-set on the task key's revision.

A transition decides on the task as the mirror holds it and writes with ``last=revision``;
when the revision moved (another worker, a rescue, a cancel) or the mirror said no, it reads
the key from the server and decides again, so a stale mirror never refuses a write it should
accept, and the revision check makes sure no write lands on a state it was not decided on.

An insert creates each key (``create`` fails on an existing key); when one fails, the keys
the batch created are purged before the error is raised, so the batch lands whole or not at
all, though another reader may glimpse part of it meanwhile (JetStream 2.9 has no multi-key
transaction): ``move_dependents`` moves its tasks one compare-and-set at a time likewise.
"""

from __future__ import annotations

import asyncio
import builtins
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from itertools import islice
from operator import attrgetter

import msgspec
import nats.js.errors

from omniq_nb.errors import StorageError
from omniq_nb.models import DependencyMove, EventKind, Task, TaskResult, TaskStatus
from omniq_nb.storage import lifecycle
from omniq_nb.storage.nats_codec import Stored, encode_stored, next_order, task_key
from omniq_nb.storage.nats_results import NATSResults

__all__ = ["NATSQueue"]

_UTC = timezone.utc
_TRIES = 20  # compare-and-set rounds before a transition gives up (only under heavy contention on one task)
copy = msgspec.structs.replace
Decide = Callable[[Task], Task | None]
"""Return the task's next state (the argument is a copy, free to change), or ``None``: no change."""


class NATSQueue(NATSResults):
    """``QueueStore``: the transitions, each a compare-and-set on one key."""

    async def insert(self, tasks: Iterable[Task]) -> None:
        """Add new tasks (pending, or waiting for their dependencies), all or none.

        Raises:
            ValueError: a task id exists already (nothing was inserted).
            StorageError: the server failed (nothing was inserted).

        """
        batch = builtins.list(tasks)
        ids = [t.id for t in batch]
        if len(set(ids)) != len(ids):
            raise ValueError("a task id appears twice in one insert; nothing was inserted")
        if not batch:
            return
        keys = [task_key(t.id) for t in batch]
        kept = await self._kept_apart(batch)
        async with self._errors():
            outcomes = await asyncio.gather(
                *(self._create(key, encode_stored(next_order(), t)) for key, t in zip(keys, kept, strict=True)),
                return_exceptions=True,
            )
            failures = [(key, o) for key, o in zip(keys, outcomes, strict=True) if isinstance(o, BaseException)]
            if failures:
                made = [key for key, o in zip(keys, outcomes, strict=True) if not isinstance(o, BaseException)]
                await asyncio.gather(*(self._remove(key) for key in made))
                await self._drop_objects(t.payload for t in kept)
                key, error = failures[0]
                if isinstance(error, nats.js.errors.KeyWrongLastSequenceError):
                    raise ValueError(
                        f"a task with id {batch[keys.index(key)].id!r} already exists; nothing was inserted"
                    )
                raise error
        await self._record(lifecycle.event_of(t, EventKind.ENQUEUED, at=t.created_at) for t in batch)

    async def insert_many(
        self, template: Task, entries: Iterable[tuple[str, bytes]], kept: tuple[str, bytes] | None = None
    ) -> None:
        """Add tasks equal to ``template`` but for id and payload, all or none (``kept`` first: ``nats_objects``)."""
        await self._keep_callable(kept)
        await self.insert(lifecycle.batch_tasks(template, entries))

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
        """Claim up to ``limit`` ready tasks: priority, then eta, then enqueue order.

        Candidates come from the mirror; each is won by a compare-and-set on its revision,
        so a task another worker took first is passed over, never handed out twice. A busy
        claim does not wait for the mirror; one that finds nothing catches up with the
        bucket first and looks again (so an idle worker sees every ready task, and a mirror
        whose consumer was lost is rebuilt).
        """
        chosen = (queues, unowned_only, owner, skip_kinds)
        claimed = await self._claim_from_mirror(chosen, limit=limit, lease=lease, worker=worker)
        if not claimed:
            await self._catch_up()
            claimed = await self._claim_from_mirror(chosen, limit=limit, lease=lease, worker=worker)
        usable, unread = await self._filled_each(claimed)
        if unread:  # their large arguments could not be read now: back to the queue, no attempt used
            await self.release(leases={t.id: t.lease_token or "" for t in unread})
        return usable

    async def _claim_from_mirror(
        self, chosen: tuple[Sequence[str], bool, str | None, Sequence[str]], *, limit: int, lease: float, worker: str
    ) -> builtins.list[Task]:
        now = datetime.now(_UTC)
        candidates = self._ready(chosen, now)
        claimed: builtins.list[Task] = []
        until = now + timedelta(seconds=lease)
        async with self._errors():
            while len(claimed) < limit and (wave := builtins.list(islice(candidates, limit - len(claimed)))):
                # every write of a wave runs to its end: a task won beside a failed write is still handed out
                won = await asyncio.gather(*(self._take(c, worker, now, until) for c in wave), return_exceptions=True)
                claimed += [task for task in won if isinstance(task, Task)]
                failure = next((error for error in won if isinstance(error, BaseException)), None)
                if failure is not None:
                    if not claimed:
                        raise failure
                    break
        await self._record(lifecycle.event_of(t, EventKind.STARTED, at=now) for t in claimed)
        return claimed

    def _ready(
        self, chosen: tuple[Sequence[str], bool, str | None, Sequence[str]], now: datetime
    ) -> Iterator[tuple[str, int, Stored]]:
        """Yield the mirror's claimable tasks in claim order (looked at lazily: a claim stops when it has enough)."""
        queues, unowned_only, owner, skip_kinds = chosen
        live = {w.kernel for _, w in self._workers.values() if lifecycle.worker_alive(w, now)} if unowned_only else ()
        for key in self._pending:
            entry = self._tasks.get(key)
            if entry is None:
                continue
            task = entry[1].task
            if (
                lifecycle.claimable(task, queues, now)
                and (not unowned_only or task.owner in (None, owner) or task.owner not in live)
                and (task.kind is None or task.kind not in skip_kinds)
            ):
                yield key, entry[0], entry[1]

    async def _take(
        self, candidate: tuple[str, int, Stored], worker: str, now: datetime, until: datetime
    ) -> Task | None:
        key, revision, stored = candidate
        task = copy(
            stored.task,
            status=TaskStatus.RUNNING,
            attempt=stored.task.attempt + 1,
            lease_token=secrets.token_hex(16),
            lease_until=until,
            run_id=secrets.token_hex(8),
            started_at=now,
            worker=worker,
            progress=0.0,
            progress_done=0.0,
            progress_total=None,
            progress_message=None,
        )
        written = await self._update(key, encode_stored(stored.order, task), revision)
        return None if written is None else task

    async def renew(self, *, leases: Mapping[str, str], lease: float) -> set[str]:
        """Extend the leases still held; return the ids whose renewal held."""

        def extend(token: str) -> Decide:
            def decide(task: Task) -> Task | None:
                if not lifecycle.holds_lease(task, token):
                    return None
                task.lease_until = datetime.now(_UTC) + timedelta(seconds=lease)
                return task

            return decide

        changed = await asyncio.gather(*(self._change(i, extend(token)) for i, token in leases.items()))
        return {task_id for task_id, (_, done) in zip(leases, changed, strict=True) if done}

    async def progress(
        self, *, task_id: str, lease_token: str, done: float, total: float | None, message: str | None
    ) -> bool:
        """Store progress of a running task, fenced on its lease."""

        def decide(task: Task) -> Task | None:
            if not lifecycle.holds_lease(task, lease_token):
                return None
            task.progress_done, task.progress_total, task.progress_message = done, total, message
            task.progress = lifecycle.progress_fraction(done, total)
            return task

        task, changed = await self._change(task_id, decide)
        if changed and task is not None:
            await self._record([lifecycle.event_of(task, EventKind.PROGRESS, message=message)])
        return changed

    async def settle(
        self, results: Sequence[TaskResult], *, successors: Mapping[str, Task] = {}
    ) -> builtins.list[Task]:
        """Apply attempt outcomes, each fenced on its lease; insert accepted tasks' successors.

        A write that fails raises once the others are done, their events and successors written
        (no transaction holds them back: the outcomes that landed stay).
        """
        lifecycle.check_outcomes(results)
        kept = await self._kept_apart_results(results)
        changes = await asyncio.gather(*(self._change(r.task_id, _outcome(r)) for r in kept), return_exceptions=True)
        accepted = await self._applied(results, kept, changes)
        failure = next((change for change in changes if isinstance(change, BaseException)), None)
        events = [
            lifecycle.event_of(t, lifecycle.entered(t.status), message=t.error.message if t.error else None)
            for t in accepted
        ]
        following = [successors[t.id] for t in accepted if t.id in successors]
        if following:
            await self._catch_up()
            for task in following:
                if not self._series_busy(task.series):
                    await self._insert_quietly(task)
                    events.append(lifecycle.event_of(task, EventKind.ENQUEUED, at=task.created_at))
        await self._record(events)
        if failure is not None:
            raise failure
        return accepted

    async def _insert_quietly(self, task: Task) -> None:
        [kept] = await self._kept_apart([task])
        async with self._errors():
            try:
                await self._create(task_key(task.id), encode_stored(next_order(), kept))
            except nats.js.errors.KeyWrongLastSequenceError:
                await self._drop_objects([kept.payload])
                return  # the same successor was inserted already

    async def release(self, *, leases: Mapping[str, str]) -> builtins.list[Task]:
        """Hand running tasks back to pending and give back their attempt."""

        def hand_back(token: str) -> Decide:
            def decide(task: Task) -> Task | None:
                if not lifecycle.holds_lease(task, token):
                    return None
                task.status, task.attempt = TaskStatus.PENDING, task.attempt - 1
                task.lease_token = task.lease_until = task.worker = None
                return task

            return decide

        changes = await asyncio.gather(*(self._change(i, hand_back(token)) for i, token in leases.items()))
        released = [task for task, changed in changes if changed and task is not None]
        await self._record(lifecycle.event_of(t, EventKind.RELEASED) for t in released)
        return await self._filled(released, payloads=False)

    async def expired_leases(self, *, limit: int) -> builtins.list[Task]:
        """Return running tasks whose lease ran out (on this client's clock; the mirror may lag: a rescue is fenced)."""
        await self._mirrored()
        now = datetime.now(_UTC)
        lapsed = [s.task for _, s in self._tasks.values() if lifecycle.lease_lapsed(s.task, now)]
        return await self._filled(lapsed[:limit], payloads=False)

    async def cancel(self, task_id: str) -> Task | None:
        """Cancel a waiting, pending or running task, and the unfinished runs of its periodic series."""
        await self._catch_up()
        entry = self._tasks.get(task_key(task_id))
        series = entry[1].task.series if entry is not None else None
        others = [
            s.task.id
            for _, s in self._tasks.values()
            if series is not None and s.task.series == series and s.task.id != task_id
        ]

        def decide(task: Task) -> Task | None:
            if task.status not in lifecycle.UNFINISHED:
                return None
            task.status, task.finished_at, task.lease_until = TaskStatus.CANCELLED, datetime.now(_UTC), None
            return task

        changes = await asyncio.gather(*(self._change(i, decide) for i in [task_id, *others]))
        await self._record(lifecycle.event_of(t, EventKind.CANCELLED) for t, changed in changes if changed and t)
        return await self._filled_one(changes[0][0])

    async def dependents(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Return the tasks whose ``depends_on`` names any of ``task_ids``, oldest first.

        Read from the mirror's index of dependents once it caught up with the bucket, so a
        dependent inserted before this call is seen, and no task is scanned for it.
        """
        if not task_ids:
            return []
        await self._catch_up()
        keys = set[str]().union(*(self._dependents.get(task_id, ()) for task_id in task_ids))
        found = sorted((self._tasks[key][1] for key in keys), key=attrgetter("order"))
        return await self._filled([stored.task for stored in found], payloads=False)

    async def move_dependents(self, moves: Sequence[DependencyMove]) -> builtins.list[Task]:
        """Apply each move whose task is still in ``move.source``, one compare-and-set per task.

        A task moved to pending is claimable at once and wakes idle workers, as an insert does.
        """

        def step(move: DependencyMove) -> Decide:
            def decide(task: Task) -> Task | None:
                return task if lifecycle.move_dependent(task, move, datetime.now(_UTC)) else None

            return decide

        changes = await asyncio.gather(*(self._change(move.task_id, step(move)) for move in moves))
        moved = [
            (move, task) for move, (task, changed) in zip(moves, changes, strict=True) if changed and task is not None
        ]
        await self._record(
            lifecycle.event_of(task, lifecycle.moved_event(move), message=move.error.message if move.error else None)
            for move, task in moved
        )
        return await self._filled([task for _, task in moved], payloads=False)

    async def requeue(self, task_id: str) -> Task | None:
        """Put a failed, cancelled or expired task back to pending with one more attempt allowed."""

        def decide(task: Task) -> Task | None:
            if task.status not in lifecycle.REQUEUEABLE:
                return None
            now = datetime.now(_UTC)
            task.expires_at = lifecycle.requeued_expiry(task, now)
            task.status, task.eta, task.finished_at = TaskStatus.PENDING, now, None
            task.retries = max(task.retries, task.attempt)
            task.lease_token = task.lease_until = None
            return task

        task, changed = await self._change(task_id, decide)
        if changed and task is not None:
            await self._record([lifecycle.event_of(task, EventKind.RETRIED)])
        return await self._filled_one(task)

    async def expire(self) -> builtins.list[Task]:
        """Move pending tasks past ``expires_at`` to expired."""
        await self._catch_up()
        now = datetime.now(_UTC)
        due = [s.task.id for _, s in self._tasks.values() if lifecycle.due_to_expire(s.task, now)]

        def decide(task: Task) -> Task | None:
            if not lifecycle.due_to_expire(task, datetime.now(_UTC)):
                return None
            task.status, task.finished_at = TaskStatus.EXPIRED, datetime.now(_UTC)
            return task

        changes = await asyncio.gather(*(self._change(i, decide) for i in due))
        expired = [task for task, changed in changes if changed and task is not None]
        await self._record(lifecycle.event_of(t, EventKind.EXPIRED) for t in expired)
        return await self._filled(expired, payloads=False)

    async def _change(self, task_id: str, decide: Decide) -> tuple[Task | None, bool]:
        """Apply ``decide`` to the task by compare-and-set; return ``(task as it is now, whether it changed)``.

        The task is ``None`` when it does not exist.
        """
        key = task_key(task_id)
        entry = self._tasks.get(key)
        from_server = False
        async with self._errors():
            for _ in range(_TRIES):
                if entry is None and not from_server:
                    entry, from_server = await self._fetch(key), True
                if entry is None:
                    return None, False
                revision, stored = entry
                task = decide(copy(stored.task))
                if task is None:
                    if from_server:
                        return stored.task, False
                    entry, from_server = await self._fetch(key), True
                    continue
                if await self._update(key, encode_stored(stored.order, task), revision) is not None:
                    return task, True
                entry, from_server = await self._fetch(key), True
        raise StorageError(f"task {task_id}: its key in {self.url} kept changing; gave up after {_TRIES} tries")


def _outcome(result: TaskResult) -> Decide:
    def decide(task: Task) -> Task | None:
        now = datetime.now(_UTC)
        if not lifecycle.outcome_applies(task, result, now):
            return None
        task.status, task.result, task.error = result.status, result.result, result.error
        task.eta = result.eta or task.eta
        task.lease_token = task.lease_until = None
        task.finished_at = None if result.status is TaskStatus.PENDING else now
        if result.status is TaskStatus.SUCCEEDED:
            task.progress = 1.0
        return task

    return decide
