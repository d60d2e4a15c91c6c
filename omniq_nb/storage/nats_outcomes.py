"""The NATS store's ``OutcomeStore`` role: results and events of a queue kept in another store.

With ``result_url=nats://…`` a queue elsewhere keeps its result bytes here, one key per
lease token and task id (``r.TOKEN.ID``, with the time it may go); with ``events_url`` its
events go to this prefix's event stream, whose sequence is their ``seq``, and a finished
task's purge time is the key ``p.ID`` (replaced or removed by that task's next events).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import datetime

from omniq_nb.models import TaskEvent, TaskResult
from omniq_nb.storage import lifecycle
from omniq_nb.storage.base import ResultKey
from omniq_nb.storage.nats_codec import KEPT, MARK, decode_blob, encode_until, key_id, token
from omniq_nb.storage.nats_mirror import NATSMirror

__all__ = ["NATSOutcomes"]


def _kept_key(task_id: str, lease_token: str) -> str:
    return f"{KEPT}{token(lease_token)}.{token(task_id)}"


class NATSOutcomes(NATSMirror):
    """Keep results by ``(task_id, token)`` and append events, for a queue that lives elsewhere."""

    async def keep_results(self, results: Sequence[TaskResult]) -> None:
        """Store each result's bytes with the time it may go (``result_ttl`` plus the margin)."""
        now = time.time()
        async with self._errors():
            await asyncio.gather(
                *(
                    self._put_key(
                        _kept_key(r.task_id, r.lease_token),
                        encode_until(lifecycle.kept_until(now, r.result_ttl), r.result or b""),
                    )
                    for r in results
                )
            )

    async def kept_results(self, keys: Sequence[ResultKey]) -> dict[ResultKey, bytes]:
        """Return the kept bytes of these keys (missing keys are left out)."""
        async with self._errors():
            found = await asyncio.gather(*(self._read(_kept_key(task_id, lease)) for task_id, lease in keys))
        return {key: decode_blob(entry[1]) for key, entry in zip(keys, found, strict=True) if entry is not None}

    async def append_events(self, events: Sequence[TaskEvent], *, purge_at: Mapping[str, datetime] = {}) -> None:
        """Append the events to the stream in order; mark when finished tasks' events go."""
        await self._append(events)
        await self._catch_up()
        tasks = dict.fromkeys(e.task_id for e in events)
        async with self._errors():
            await asyncio.gather(*(self._mark(task_id, purge_at.get(task_id)) for task_id in tasks))

    async def _mark(self, task_id: str, moment: datetime | None) -> None:
        key = f"{MARK}{token(task_id)}"
        if moment is not None:
            await self._put_key(key, encode_until(moment.timestamp()))
        elif key in self._marks:
            await self._remove(key)

    async def _put_key(self, key: str, data: bytes) -> None:
        revision = await self._store.put(key, data)
        self._apply(key, revision, data)

    async def forget_outcomes(self, *, everything: bool = False) -> int:
        """Delete results and events whose time has come (see ``OutcomeStore.forget_outcomes``), or all of them."""
        await self._catch_up()
        now = time.time()
        due = [
            (key, revision)
            for key, (revision, until) in self._marks.items()
            if everything or (until is not None and until <= now)
        ]
        results = [(key, revision) for key, revision in due if key.startswith(KEPT)]
        marks = [(key, revision) for key, revision in due if key.startswith(MARK)]
        async with self._errors():
            gone = await asyncio.gather(*(self._remove(key, last=revision) for key, revision in results))
            if everything:
                await self._jet.purge_stream(self.events_stream)
                await asyncio.gather(*(self._remove(key) for key, _ in marks))
            else:
                await asyncio.gather(*(self._forget_events(key, revision) for key, revision in marks))
        return sum(gone)

    async def _forget_events(self, key: str, revision: int) -> None:
        if await self._remove(key, last=revision):
            subject = f"{self._events_subject}.{token(key_id(key))}"
            await self._jet.purge_stream(self.events_stream, subject=subject)
