"""The Redis store's ``QueueStore`` role: every task transition, each one Lua script.

A claim takes up to ``limit`` tasks in one script: it first moves delayed tasks whose eta
the server's clock has passed into their ready sets, then merges the asked queues' ready
sets (priority, eta, enqueue order), skipping tasks past their TTL and, with kernel
affinity, tasks of other live kernels. Lease tokens and run ids are random bytes from this
process (Lua's random numbers are the same in every script run). Every write after a claim
is fenced on the lease token and ``status = running`` inside its script; many outcomes,
renewals or hand-backs are one script call. A ``waiting`` task is in no ready set until
``move_dependents`` places it as an insert would; ``dependents`` reads the per-dependency
index sets and the tasks' hashes in one script.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from omniq_nb.errors import InvalidTransition
from omniq_nb.models import DependencyMove, Task, TaskResult, TaskStatus, check_transition
from omniq_nb.storage import lifecycle
from omniq_nb.storage.redis_codec import decode_task, pairs_to_dict, task_fields, text
from omniq_nb.storage.redis_results import RedisResults
from omniq_nb.storage.rows import encode_error

__all__ = ["RedisQueue"]


_msgpack = msgspec.msgpack.Encoder()
_MOVABLE = lifecycle.FINISHED | {TaskStatus.WAITING}  # the statuses a dependency move starts from


def _task_args(task: Task) -> builtins.list[Any]:
    """Return a new task as the scripts' ``insert_at`` reads it: id, field count, fields."""
    flat = task_fields(task)
    return [task.id, len(flat) // 2, *flat]


def _tasks(replies: Iterable[Any]) -> builtins.list[Task]:
    return [decode_task(pairs_to_dict(reply)) for reply in replies]


class RedisQueue(RedisResults):
    """Insert, claim, renew, progress, settle, release, cancel, requeue, expire, dependencies (reads come with it)."""

    async def insert(self, tasks: Iterable[Task]) -> None:
        """Add new tasks with one script (all or none), and one wake-up hint.

        Raises:
            ValueError: a task id exists already (or twice in ``tasks``); nothing was inserted.

        """
        batch = builtins.list(tasks)
        if not batch:
            return
        args: builtins.list[Any] = [len(batch)]
        for task in batch:
            args += _task_args(task)
        await self._script("INSERT", *args)

    async def insert_many(
        self, template: Task, entries: Iterable[tuple[str, bytes]], kept: tuple[str, bytes] | None = None
    ) -> None:
        """Add tasks equal to ``template`` but for id and payload (and series, when periodic), with one script.

        The shared values are sent once; each task adds only its id and payload. The script
        also keeps ``kept`` in the prefix's ``fn`` hash.
        """
        batch = builtins.list(entries)
        if not batch:
            return
        periodic = template.series is not None
        own = {"id", "payload", "series"} if periodic else {"id", "payload"}
        flat = task_fields(template)
        shared = [item for n in range(0, len(flat), 2) if flat[n] not in own for item in flat[n : n + 2]]
        digest, body = kept or ("", b"")
        args: builtins.list[Any] = ["1" if periodic else "0", digest, body, len(shared) // 2, *shared]
        for entry in batch:
            args += entry
        await self._script("INSERT_MANY", *args)

    async def kept_callables(self, digests: Collection[str]) -> dict[str, bytes]:
        """Return the kept callables of these digests (those not kept are left out)."""
        wanted = builtins.list(digests)
        if not wanted:
            return {}
        async with self._errors():
            bodies = await self._redis.hmget(f"{self.prefix}:fn", wanted)
        return {digest: body for digest, body in zip(wanted, bodies, strict=True) if body is not None}

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
        """Claim up to ``limit`` ready tasks in one script: priority, then eta, then enqueue order.

        Tasks whose kind is in ``skip_kinds`` are left pending where they are.
        """
        if limit <= 0 or not queues:
            return []
        replies = await self._script(
            "CLAIM",
            text(float(lease)),
            worker,
            "1" if unowned_only else "0",
            owner or "",
            limit,
            len(queues),
            *queues,
            self._tokens(limit),
            ",".join(skip_kinds),
        )
        return _tasks(replies)

    async def renew(self, *, leases: Mapping[str, str], lease: float) -> set[str]:
        """Extend the leases still held; return their ids."""
        if not leases:
            return set()
        pairs = [item for pair in leases.items() for item in pair]
        held = await self._script("RENEW", text(float(lease)), *pairs)
        return {task_id.decode() for task_id in held}

    async def progress(
        self, *, task_id: str, lease_token: str, done: float, total: float | None, message: str | None
    ) -> bool:
        """Store progress of a running task, fenced on its lease, with a ``progress`` event."""
        written = await self._script(
            "PROGRESS",
            task_id,
            lease_token,
            text(float(done)),
            "" if total is None else text(float(total)),
            "0" if message is None else "1",
            message or "",
            text(lifecycle.progress_fraction(done, total)),
        )
        return bool(written)

    async def settle(
        self, results: Sequence[TaskResult], *, successors: Mapping[str, Task] = {}
    ) -> builtins.list[Task]:
        """Apply many attempt outcomes with one script, each fenced on its lease.

        A successor is inserted in the same script, only when its task's outcome is accepted
        and its series has no other unfinished run.
        """
        lifecycle.check_outcomes(results)
        if not results:
            return []
        pack = _msgpack.encode
        args: builtins.list[Any] = []
        for r in results:
            following = successors.get(r.task_id)
            fields = [] if following is None else task_fields(following)
            facts = (
                r.task_id,
                r.lease_token,
                r.status.value,
                r.result is not None,
                encode_error(r.error) or False,
                False if r.error is None else r.error.message,
                False if r.eta is None else text(r.eta.timestamp()),
                r.rescue,
                False if following is None else following.id,
                len(fields) // 2,
            )
            args += (pack(facts), r.result or b"", *fields)
        return _tasks(await self._script("SETTLE", *args))

    async def release(self, *, leases: Mapping[str, str]) -> builtins.list[Task]:
        """Hand running tasks back to pending and give back the attempt their claim used."""
        if not leases:
            return []
        pairs = [item for pair in leases.items() for item in pair]
        return _tasks(await self._script("RELEASE", *pairs))

    async def expired_leases(self, *, limit: int) -> builtins.list[Task]:
        """Return running tasks whose lease ran out on the server's clock."""
        return _tasks(await self._script("EXPIRED_LEASES", limit))

    async def cancel(self, task_id: str) -> Task | None:
        """Cancel a waiting, pending or running task, and the unfinished runs of its periodic series."""
        reply = await self._script("CANCEL", task_id)
        return decode_task(pairs_to_dict(reply)) if reply else None

    async def dependents(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Return the tasks depending on any of ``task_ids``, each once, with one script (none: no call)."""
        return _tasks(await self._script("DEPENDENTS", *task_ids)) if task_ids else []

    async def move_dependents(self, moves: Sequence[DependencyMove]) -> builtins.list[Task]:
        """Apply the moves whose task is still in their source status, all in one script.

        Raises:
            InvalidTransition: a move the lifecycle forbids, or one from pending or running.

        """
        args: builtins.list[Any] = []
        for move in moves:
            check_transition(move.source, move.target)
            if move.source not in _MOVABLE:
                raise InvalidTransition(
                    f"a dependency move starts from waiting or a finished status, not {move.source.value}"
                )
            error, message = encode_error(move.error) or "", move.error.message if move.error else ""
            args += (
                move.task_id,
                move.source.value,
                move.target.value,
                lifecycle.moved_event(move).value,
                error,
                message,
            )
        return _tasks(await self._script("MOVE_DEPENDENTS", *args)) if args else []

    async def requeue(self, task_id: str) -> Task | None:
        """Put a failed, cancelled or expired task back to pending, allowing one more attempt."""
        reply = await self._script("REQUEUE", task_id)
        return decode_task(pairs_to_dict(reply)) if reply else None

    async def expire(self) -> builtins.list[Task]:
        """Move pending tasks past ``expires_at`` (on the server's clock) to expired."""
        return _tasks(await self._script("EXPIRE"))
