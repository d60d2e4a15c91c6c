"""The SQLite store's ``OutcomeStore`` role: results and events of a queue kept in another store.

With ``result_url=sqlite:///results.db`` a queue in PostgreSQL (say) keeps its result bytes
in this file's ``kept_results`` table, and with ``events_url`` its events in this file's
``events`` table, read by the same cursor as always. A purge keeps the newest event ``seq``
in a marker row, as the queue's own purge does, so a cursor never sees a seq twice.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Mapping, Sequence
from datetime import datetime

from omniq_nb.models import TaskEvent, TaskResult
from omniq_nb.storage.base import ResultKey
from omniq_nb.storage.rows import chunks
from omniq_nb.storage.sql_outcomes import OUTCOME_ROWS, events_insert, forget_statements, keep_statement, kept_lookup
from omniq_nb.storage.sqlite_base import SQLiteConnection
from omniq_nb.storage.sqlite_statements import KEEP_NEWEST_SEQ

__all__ = ["SQLiteOutcomes"]


class SQLiteOutcomes(SQLiteConnection):
    """Keep results by ``(task_id, token)`` and append events, for a queue that lives elsewhere."""

    async def keep_results(self, results: Sequence[TaskResult]) -> None:
        """Store the results' bytes in one transaction (one statement for a few)."""
        batches = [batch for batch in chunks(builtins.list(results), OUTCOME_ROWS) if batch]
        now = time.time()
        if len(batches) == 1:
            await self._fetch(*keep_statement("?", batches[0], now=now))
        elif batches:
            async with self._immediate():
                for batch in batches:
                    await self._run(*keep_statement("?", batch, now=now))

    async def kept_results(self, keys: Sequence[ResultKey]) -> dict[ResultKey, bytes]:
        """Return the kept bytes of these keys (missing keys are left out)."""
        found: dict[ResultKey, bytes] = {}
        for batch in chunks(builtins.list(keys), OUTCOME_ROWS):
            for task_id, token, result in await self._fetch(*kept_lookup("?", batch)):
                found[(task_id, token)] = result
        return found

    async def append_events(self, events: Sequence[TaskEvent], *, purge_at: Mapping[str, datetime] = {}) -> None:
        """Insert the events in order, in one transaction."""
        batches = [batch for batch in chunks(builtins.list(events), OUTCOME_ROWS) if batch]
        if len(batches) == 1:
            await self._fetch(*events_insert("?", batches[0], purge_at))
        elif batches:
            async with self._immediate():
                for batch in batches:
                    await self._run(*events_insert("?", batch, purge_at))

    async def forget_outcomes(self, *, everything: bool = False) -> int:
        """Delete results and events whose time has come (see ``OutcomeStore.forget_outcomes``), or all of them."""
        results, events = forget_statements("?", now=time.time(), everything=everything)
        async with self._immediate():
            gone = await self._run(results[0] + " RETURNING task_id", results[1])
            newest = await self._run("SELECT max(seq) FROM events", ())
            await self._run(*events)
            await self._run(KEEP_NEWEST_SEQ, (newest[0][0],))
        return len(gone)
