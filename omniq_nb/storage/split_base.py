"""One ``Storage`` over a queue's store and the stores that keep its results and events.

``SplitParts`` holds the parts and answers every read: tasks come from the queue's store,
and a result kept apart is found by the mark that the queue's row holds in its place
(``kept_mark``): the lease token of the attempt whose outcome the queue accepted, so a
worker that lost its lease may write a result but can never make it the one that is read.
Events and their cursor come from the events store. The transitions are ``split``'s.
A task's output lives with the task, in the queue's store (``SplitQueueSide``, with batches'
callables), and so does its
cache key: ``cached`` asks the queue's store and fills in the result as ``get`` does.

Example:
    >>> kept_token(kept_mark("abc"))
    'abc'
    >>> kept_token(b"OQ...") is None
    True

"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Self

from msgspec.structs import replace

from omniq_nb.models import Task, TaskError, TaskEvent, TaskOutput, TaskStatus, WorkerInfo
from omniq_nb.opening import OpensAndCloses
from omniq_nb.serialization import KEPT_RESULT_MARK
from omniq_nb.storage.base import OutcomeStore, ResultKey, Storage

__all__ = ["RESULT_MISSING", "SplitQueueSide", "SplitParts", "kept_mark", "kept_token"]

logger = logging.getLogger("omniq_nb.storage.split")

RESULT_MISSING = "ResultMissing"
"""The error type of a succeeded task whose kept result is no longer in the result store."""


def kept_mark(token: str) -> bytes:
    """Return what the queue's row holds in place of a result kept apart under ``token``."""
    return KEPT_RESULT_MARK + token.encode()


def kept_token(blob: bytes | None) -> str | None:
    """Return the lease token that ``blob`` marks, or ``None`` when it is a result (or nothing)."""
    if blob is None or not blob.startswith(KEPT_RESULT_MARK):
        return None
    return blob[len(KEPT_RESULT_MARK) :].decode()


class SplitParts(OpensAndCloses):
    """The queue's store with a result store and an events store beside it, and every read.

    Args:
        queue: the store of the tasks (``db_url``); it records no events when ``events`` is given.
        results: where results are kept (``result_url``), or ``None`` to keep them in ``queue``.
        events: where events go (``events_url``), or ``None`` for ``queue``'s own; may be ``results``.

    """

    def __init__(
        self,
        queue: Storage,
        *,
        results: OutcomeStore | None = None,
        events: OutcomeStore | None = None,
    ) -> None:
        self.queue, self.results, self.events_store = queue, results, events
        self.url = queue.url
        self._runs: dict[str, Task] = {}  # lease token -> the claimed task (progress events name its attempt)
        self._events_failing = False  # whether the events store failed at the last append
        self.supports_notify = queue.supports_notify
        self.multi_host = queue.multi_host and all(side.multi_host for side in self._sides())

    def _sides(self) -> builtins.list[OutcomeStore]:
        """Return the result and events stores, each once."""
        sides: builtins.list[OutcomeStore] = []
        for side in (self.results, self.events_store):
            if side is not None and all(side is not known for known in sides):
                sides.append(side)
        return sides

    async def open(self) -> None:
        """Open the queue's store, then the others; close what opened if one fails."""
        parts: builtins.list[Storage | OutcomeStore] = [self.queue, *self._sides()]
        opened: builtins.list[Storage | OutcomeStore] = []
        try:
            for part in parts:
                await part.open()
                opened.append(part)
        except BaseException:
            for part in reversed(opened):
                await part.close()
            raise

    async def close(self) -> None:
        """Close every part, the queue's store last, even when closing another part fails."""
        try:
            for side in reversed(self._sides()):
                try:
                    await side.close()
                except Exception:
                    logger.warning("closing %s failed", side.url, exc_info=True)
        finally:
            await self.queue.close()

    def clone(self) -> Self:
        """Return the same arrangement over clones of every part."""
        results = self.results.clone() if self.results is not None else None
        if self.events_store is None:
            events = None
        else:
            events = results if self.events_store is self.results else self.events_store.clone()
        return type(self)(self.queue.clone(), results=results, events=events)

    async def now(self) -> datetime:
        """Return the queue store's clock (leases are measured on it)."""
        return await self.queue.now()

    async def get(self, task_id: str) -> Task | None:
        """Return the task with its result, or ``None``."""
        task = await self.queue.get(task_id)
        return None if task is None else (await self._with_results([task]))[0]

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Return the tasks that exist, with their results."""
        return await self._with_results(await self.queue.get_many(task_ids))

    async def list(
        self, *, statuses: Sequence[TaskStatus] = (), queue: str | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Return up to ``limit`` tasks, newest first, with their results."""
        return await self._with_results(await self.queue.list(statuses=statuses, queue=queue, limit=limit))

    async def cached(self, keys: Sequence[str], *, finished_after: datetime | None = None) -> dict[str, Task]:
        """Return the queue store's newest success of each key, with its result as ``get`` returns it.

        A hit whose result is no longer in the result store is returned all the same, with
        no result and a ``ResultMissing`` error (``has_value`` false), as ``get`` returns it;
        a caller that needs the value checks ``has_value``.
        """
        found = await self.queue.cached(keys, finished_after=finished_after)
        filled = await self._with_results(builtins.list(found.values())) if found else []
        return {task.cache_key or "": task for task in filled}

    async def count(self, *, task_ids: Sequence[str] | None = None) -> dict[TaskStatus, int]:
        """Return how many tasks are in each status."""
        return await self.queue.count(task_ids=task_ids)

    async def events(
        self, *, task_id: str | None = None, since: int = 0, limit: int = 1000
    ) -> builtins.list[TaskEvent]:
        """Return recorded events after ``since`` from wherever events are kept."""
        source = self.events_store or self.queue
        return await source.events(task_id=task_id, since=since, limit=limit)

    async def last_event_seq(self) -> int:
        """Return the newest event's ``seq`` where events are kept."""
        return await (self.events_store or self.queue).last_event_seq()

    async def heartbeat(self, worker: WorkerInfo) -> bool:
        """Refresh a pool's entry in the queue store's registry."""
        return await self.queue.heartbeat(worker)

    async def workers(self) -> builtins.list[WorkerInfo]:
        """Return the live pools of the queue's store."""
        return await self.queue.workers()

    async def request_stop(self, worker_id: str) -> bool:
        """Ask a pool of the queue's store to drain and stop."""
        return await self.queue.request_stop(worker_id)

    async def unregister(self, worker_id: str) -> None:
        """Remove a pool's registry entry."""
        await self.queue.unregister(worker_id)

    async def _with_results(self, tasks: builtins.list[Task]) -> builtins.list[Task]:
        """Put each kept result in place of its mark, in one read of the result store.

        A result that is no longer there (its own ``result_ttl`` ran out there first, or
        the store lost it) leaves the task with no result and a ``ResultMissing`` error, so
        ``result()`` says so instead of returning ``None``.
        """
        keys: dict[str, ResultKey] = {}
        for task in tasks:
            token = kept_token(task.result)
            if token is not None:
                keys[task.id] = (task.id, token)
        if not keys or self.results is None:
            return tasks
        found = await self.results.kept_results(builtins.list(keys.values()))
        return [task if task.id not in keys else self._resolved(task, found.get(keys[task.id])) for task in tasks]

    @staticmethod
    def _with_own_result(task: Task, kept: dict[ResultKey, bytes]) -> Task:
        """Put back the bytes of the result that ``task``'s mark names (those this process just kept)."""
        token = kept_token(task.result)
        return task if token is None or (task.id, token) not in kept else replace(task, result=kept[(task.id, token)])

    def _resolved(self, task: Task, result: bytes | None) -> Task:
        if result is not None:
            return replace(task, result=result)
        where = self.results.url if self.results is not None else "the result store"
        error = TaskError(
            type=RESULT_MISSING,
            message=f"the result of task {task.id} is no longer in {where} (purged or lost there)",
            attempt=task.attempt,
        )
        return replace(task, result=None, error=error)


class SplitQueueSide:
    """What a split store keeps with the tasks in the queue's store: their output, batches' callables."""

    queue: Storage

    async def append_output(
        self, task_id: str, chunks: Sequence[tuple[str, str]], *, limit_bytes: int, limit_lines: int
    ) -> None:
        """Append a task's output in the queue's store (trimmed there to the limits)."""
        await self.queue.append_output(task_id, chunks, limit_bytes=limit_bytes, limit_lines=limit_lines)

    async def output(self, task_id: str, *, after: int = 0, limit: int = 1000) -> TaskOutput:
        """Return a page of a task's kept output from the queue's store."""
        return await self.queue.output(task_id, after=after, limit=limit)

    async def kept_callables(self, digests: Collection[str]) -> dict[str, bytes]:
        """Return the callables the queue's store keeps for these digests."""
        return await self.queue.kept_callables(digests)
