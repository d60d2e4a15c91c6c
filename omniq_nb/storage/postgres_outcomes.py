"""The PostgreSQL store's ``OutcomeStore`` role: results and events of a queue kept in another store.

With ``result_url=postgresql://…`` a queue elsewhere keeps its result bytes in this schema's
``kept_results`` table; with ``events_url`` its events in this schema's ``events`` table.
Appended events take the schema's event lock first, as the triggers do, so a reader's cursor
never passes a seq that a slower transaction has yet to commit.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Mapping, Sequence
from datetime import datetime

from omniq_nb.models import TaskEvent, TaskResult
from omniq_nb.storage.base import ResultKey
from omniq_nb.storage.postgres_base import PostgresConnection
from omniq_nb.storage.rows import chunks
from omniq_nb.storage.sql_outcomes import OUTCOME_ROWS, events_insert, forget_statements, keep_statement, kept_lookup

__all__ = ["PostgresOutcomes"]

_EVENT_LOCK = "SELECT pg_advisory_xact_lock(hashtext('omniq.events.' || %s))"


class PostgresOutcomes(PostgresConnection):
    """Keep results by ``(task_id, token)`` and append events, for a queue that lives elsewhere."""

    async def keep_results(self, results: Sequence[TaskResult]) -> None:
        """Store the results' bytes in one transaction."""
        batches = [batch for batch in chunks(builtins.list(results), OUTCOME_ROWS) if batch]
        if not batches:
            return
        now = time.time()
        async with self._transaction() as conn:
            for batch in batches:
                await self._run(conn, *keep_statement("%s", batch, now=now))

    async def kept_results(self, keys: Sequence[ResultKey]) -> dict[ResultKey, bytes]:
        """Return the kept bytes of these keys (missing keys are left out)."""
        found: dict[ResultKey, bytes] = {}
        for batch in chunks(builtins.list(keys), OUTCOME_ROWS):
            for task_id, token, result in await self._fetch(*kept_lookup("%s", batch)):
                found[(task_id, token)] = bytes(result)
        return found

    async def append_events(self, events: Sequence[TaskEvent], *, purge_at: Mapping[str, datetime] = {}) -> None:
        """Insert the events in order, in one transaction under the schema's event lock."""
        batches = [batch for batch in chunks(builtins.list(events), OUTCOME_ROWS) if batch]
        if not batches:
            return
        async with self._transaction() as conn:
            await self._run(conn, _EVENT_LOCK, (self.schema,))
            for batch in batches:
                await self._run(conn, *events_insert("%s", batch, purge_at))

    async def forget_outcomes(self, *, everything: bool = False) -> int:
        """Delete results and events whose time has come (see ``OutcomeStore.forget_outcomes``), or all of them."""
        results, events = forget_statements("%s", now=time.time(), everything=everything)
        async with self._transaction() as conn:
            gone = await self._run(conn, results[0] + " RETURNING task_id", results[1])
            await self._run(conn, *events)
        return len(gone)
