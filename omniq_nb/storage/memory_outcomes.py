"""The memory store's ``OutcomeStore`` role: results and events of a queue kept in another store.

Useful in one process (tests, a throwaway notebook): ``result_url=memory://`` keeps result
bytes in this object, under the task id and the lease token of the attempt that made them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

from omniq_nb.models import TaskEvent, TaskResult
from omniq_nb.storage import lifecycle
from omniq_nb.storage.base import ResultKey
from omniq_nb.storage.memory_base import MemoryState, copy

__all__ = ["MemoryOutcomes"]

_UTC = timezone.utc


class MemoryOutcomes(MemoryState):
    """Kept results by ``(task_id, token)``, with their purge time, and appended events."""

    async def keep_results(self, results: Sequence[TaskResult]) -> None:
        """Keep the results' bytes (replacing a key written before)."""
        now = datetime.now(_UTC)
        with self._lock:
            for r in results:
                seconds = lifecycle.kept_until(now.timestamp(), r.result_ttl)
                until = None if seconds is None else datetime.fromtimestamp(seconds, _UTC)
                self._kept[(r.task_id, r.lease_token)] = (r.result or b"", until)

    async def kept_results(self, keys: Sequence[ResultKey]) -> dict[ResultKey, bytes]:
        """Return the kept bytes of these keys (missing keys are left out)."""
        with self._lock:
            return {key: self._kept[key][0] for key in keys if key in self._kept}

    async def append_events(self, events: Sequence[TaskEvent], *, purge_at: Mapping[str, datetime] = {}) -> None:
        """Record the events in order, each with the next ``seq``; note when finished tasks' events go."""
        with self._lock:
            for event in events:
                self._seq += 1
                self._events.append(copy(event, seq=self._seq))
                self._event_purge[event.task_id] = purge_at.get(event.task_id)

    async def forget_outcomes(self, *, everything: bool = False) -> int:
        """Delete results and events whose time has come (see ``OutcomeStore.forget_outcomes``), or all of them."""
        now = datetime.now(_UTC)
        with self._lock:
            doomed = [
                key for key, (_, until) in self._kept.items() if everything or (until is not None and until <= now)
            ]
            for key in doomed:
                del self._kept[key]
            if everything:
                self._events, self._event_purge = [], {}
                return len(doomed)
            gone = {task_id for task_id, until in self._event_purge.items() if until is not None and until <= now}
            self._events = [e for e in self._events if e.task_id not in gone]
            for task_id in gone:
                del self._event_purge[task_id]
            return len(doomed)
