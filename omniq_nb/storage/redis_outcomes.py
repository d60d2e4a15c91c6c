"""The Redis store's ``OutcomeStore`` role: results and events of a queue kept in another store.

With ``result_url=redis://…`` a queue elsewhere keeps its result bytes here, one string per
task id and lease token; with ``events_url`` its events go to this prefix's event stream,
with seqs from the same counter as the store's own events, so cursors work as always.
The scripts and their keys are ``redis_lua_outcomes``.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Mapping, Sequence
from datetime import datetime

from omniq_nb.models import TaskEvent, TaskResult
from omniq_nb.storage import lifecycle
from omniq_nb.storage.base import ResultKey
from omniq_nb.storage.redis_base import RedisConnection
from omniq_nb.storage.redis_codec import text
from omniq_nb.storage.rows import chunks

__all__ = ["RedisOutcomes"]

_BATCH = 500  # results or events per script call
_FORGET_LIMIT = 2000


class RedisOutcomes(RedisConnection):
    """Keep results by ``(task_id, token)`` and append events, for a queue that lives elsewhere."""

    def _kept_key(self, task_id: str, token: str) -> str:
        return f"{self.prefix}:kr:{token}:{task_id}"

    async def keep_results(self, results: Sequence[TaskResult]) -> None:
        """Store each result's bytes with the time it may go (``result_ttl`` plus the margin)."""
        now = time.time()
        for batch in chunks(builtins.list(results), _BATCH):
            args: builtins.list[object] = [len(batch)]
            for r in batch:
                until = lifecycle.kept_until(now, r.result_ttl)
                args += [
                    self._kept_key(r.task_id, r.lease_token),
                    r.result or b"",
                    "" if until is None else text(until),
                ]
            await self._script("KEEP_RESULTS", *args)

    async def kept_results(self, keys: Sequence[ResultKey]) -> dict[ResultKey, bytes]:
        """Return the kept bytes of these keys (missing keys are left out)."""
        found: dict[ResultKey, bytes] = {}
        for batch in chunks(builtins.list(keys), _BATCH):
            async with self._errors():
                blobs = await self._redis.mget([self._kept_key(task_id, token) for task_id, token in batch])
            found.update((key, bytes(blob)) for key, blob in zip(batch, blobs, strict=True) if blob is not None)
        return found

    async def append_events(self, events: Sequence[TaskEvent], *, purge_at: Mapping[str, datetime] = {}) -> None:
        """Append the events to the stream in order; mark when finished tasks' events go."""
        batches = builtins.list(chunks(builtins.list(events), _BATCH))
        for index, batch in enumerate(batches):
            args: builtins.list[object] = [len(batch)]
            for e in batch:
                progress = "" if e.progress is None else text(e.progress)
                args += [e.task_id, e.kind.value, text(e.at.timestamp()), e.status.value, e.attempt, progress]
                args += [e.message or "", e.run_id or ""]
            marks = purge_at.items() if index == len(batches) - 1 else ()
            args.append(len(marks))
            for task_id, moment in marks:
                args += [task_id, text(moment.timestamp())]
            await self._script("APPEND_EVENTS", *args)

    async def forget_outcomes(self, *, everything: bool = False) -> int:
        """Delete results and events whose time has come (see ``OutcomeStore.forget_outcomes``), or all of them."""
        gone = 0
        while True:
            went = int(await self._script("FORGET_OUTCOMES", "1" if everything else "0", _FORGET_LIMIT))
            gone += went
            if everything or went < _FORGET_LIMIT:
                return gone
