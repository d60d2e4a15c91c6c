"""The NATS store's ``ResultStore`` and ``EventStore`` roles: tasks from the server or the caught-up mirror, events.

``get`` and a ``get_many`` of a few ids read each key from the server (direct gets); a
``get_many`` of more ids, listings and counts read the mirror once it caught up with the
bucket (as current: it then holds every write acknowledged before the call).

Events are read through a short-lived pull consumer of the event stream that starts at the
cursor (``opt_start_seq``) and acknowledges nothing; when the stream holds nothing past the
cursor, one stream-info request answers and no consumer is made.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import secrets
from collections.abc import Sequence

import nats.errors
from nats.js import api

from omniq_nb.models import Task, TaskEvent, TaskStatus
from omniq_nb.storage.nats_codec import decode_event, decode_stored, task_key, token
from omniq_nb.storage.nats_objects import NATSObjects

__all__ = ["NATSResults"]

_FETCH = 1000  # events per fetch request
_DIRECT_GETS = 16  # a get_many of more ids than this reads the caught-up mirror instead of each key
_FETCH_SECONDS = 5.0
_CONSUMER_IDLE = 30.0  # a reader's consumer the server deletes if it was left behind


class NATSResults(NATSObjects):
    """``ResultStore`` and ``EventStore``: tasks from the mirror (after catching up), events from the stream."""

    async def get(self, task_id: str) -> Task | None:
        """Return the task with this id, or ``None`` (read from the server: always current)."""
        found = await self.get_many([task_id])
        return found[0] if found else None

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Return the tasks with these ids that exist, as current as the server has them."""
        keys = [task_key(task_id) for task_id in dict.fromkeys(task_ids)]
        if len(keys) > _DIRECT_GETS:
            await self._catch_up()
            return await self._filled([entry[1].task for entry in map(self._tasks.get, keys) if entry is not None])
        async with self._errors():
            found = await asyncio.gather(*map(self._read, keys))
        return await self._filled([decode_stored(entry[1]).task for entry in found if entry is not None])

    async def list(
        self, *, statuses: Sequence[TaskStatus] = (), queue: str | None = None, limit: int = 100
    ) -> builtins.list[Task]:
        """Return up to ``limit`` tasks, newest (last enqueued) first."""
        wanted = {TaskStatus(s) for s in statuses}
        await self._catch_up()
        found = [
            stored
            for _, stored in self._tasks.values()
            if (not wanted or stored.task.status in wanted) and (queue is None or stored.task.queue == queue)
        ]
        found.sort(key=lambda stored: stored.order, reverse=True)
        return await self._filled([stored.task for stored in found[:limit]])

    async def count(self, *, task_ids: Sequence[str] | None = None) -> dict[TaskStatus, int]:
        """Return the number of tasks per status (of ``task_ids``, or all)."""
        await self._catch_up()
        counts = dict.fromkeys(TaskStatus, 0)
        if task_ids is None:
            entries = builtins.list(self._tasks.values())
        else:
            entries = [e for e in (self._tasks.get(task_key(i)) for i in set(task_ids)) if e is not None]
        for _, stored in entries:
            counts[stored.task.status] += 1
        return counts

    async def events(
        self, *, task_id: str | None = None, since: int = 0, limit: int = 1000
    ) -> builtins.list[TaskEvent]:
        """Return events with ``seq > since``, oldest first (of one task, or all)."""
        async with self._errors():
            info = await self._jet.stream_info(self.events_stream)
            if limit <= 0 or not info.state.messages or since >= (info.state.last_seq or 0):
                return []
            name = secrets.token_hex(8)
            await self._jet.add_consumer(
                self.events_stream,
                config=api.ConsumerConfig(
                    name=name,
                    deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=since + 1,
                    ack_policy=api.AckPolicy.NONE,
                    inactive_threshold=_CONSUMER_IDLE,
                    mem_storage=True,
                    num_replicas=1,
                    # every message of the stream is an event: a filter for all of them would only make
                    # the server count the pending ones subject by subject (nats-server 2.9 does, at each fetch)
                    filter_subject=None if task_id is None else f"{self._events_subject}.{token(task_id)}",
                ),
            )
            reader = await self._jet.pull_subscribe_bind(name=name, stream=self.events_stream)
            try:
                return await self._fetch_events(reader, limit)
            finally:
                with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                    await reader.unsubscribe()
                    await self._jet.delete_consumer(self.events_stream, reader._consumer)

    async def _fetch_events(
        self, reader: nats.js.JetStreamContext.PullSubscription, limit: int
    ) -> builtins.list[TaskEvent]:
        pending = (await reader.consumer_info()).num_pending or 0
        found: builtins.list[TaskEvent] = []
        while pending > 0 and len(found) < limit:
            batch = await reader.fetch(min(limit - len(found), pending, _FETCH), timeout=_FETCH_SECONDS)
            for msg in batch:
                found.append(decode_event(msg.data, msg.metadata.sequence.stream))
            pending = batch[-1].metadata.num_pending if batch else 0
        return found[:limit]

    async def last_event_seq(self) -> int:
        """Return the ``seq`` of the newest recorded event (0 when there is none)."""
        async with self._errors():
            info = await self._jet.stream_info(self.events_stream)
        return info.state.last_seq or 0
