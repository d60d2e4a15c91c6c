"""The PostgreSQL store's ``TaskOutputStore`` role: each task's output chunks, trimmed to their limits.

A chunk is a row of ``task_output`` keyed by ``(task_id, seq)``; its text is kept as UTF-8
bytes (``surrogatepass``), so any string comes back as it went in (a ``text`` column refuses
NUL characters), and its line count (``lifecycle.chunk_size``) beside it. Seqs come from
the task's counter row in ``output_seq``: an append raises it by its number of chunks in the
transaction that inserts them, so writers on other connections take their turn on that row
and never draw the same seq, and seqs keep counting after the head is trimmed.

An append first takes a key-share lock on its task's row: a purge deleting that task waits
for the append to commit and then deletes its output too, or the append waits for the
purge and finds no task (output of a task the store does not have is dropped). Updates of
the task (settles, renewals, progress) do not wait on that lock; a claim's ``SKIP LOCKED``
passes over the row while an append holds it, which matters only for a task that is pending
again while an earlier attempt still prints (the next claim takes it).

The trim is ``lifecycle.trimmed_head`` in one statement: counted from the newest chunk
back, a chunk stays while the chunks from it to the newest fit both limits (those sums only
grow towards the oldest, so what goes is a head), and the newest always stays.
"""

from __future__ import annotations

from collections.abc import Sequence

from omniq_nb.models import OutputChunk, TaskOutput
from omniq_nb.storage import lifecycle
from omniq_nb.storage.postgres_base import PostgresConnection

__all__ = ["PostgresOutput"]

_NEXT_SEQS = """
    WITH task AS (SELECT id FROM tasks WHERE id = %(task)s::text FOR KEY SHARE)
    INSERT INTO output_seq (task_id, seq) SELECT id, %(count)s::bigint FROM task
    ON CONFLICT (task_id) DO UPDATE SET seq = output_seq.seq + excluded.seq
    RETURNING seq"""
_APPEND = """
    INSERT INTO task_output (task_id, seq, stream, data, lines)
    SELECT %(task)s::text, %(last)s::bigint - %(count)s::bigint + n, stream, data, lines
    FROM unnest(%(streams)s::text[], %(data)s::bytea[], %(lines)s::integer[])
        WITH ORDINALITY AS c(stream, data, lines, n)"""
_TRIM = """
    DELETE FROM task_output o USING (
        SELECT seq, sum(octet_length(data)) OVER newest_first AS bytes, sum(lines) OVER newest_first AS lines
        FROM task_output WHERE task_id = %(task)s::text WINDOW newest_first AS (ORDER BY seq DESC)) AS tail
    WHERE o.task_id = %(task)s::text AND o.seq = tail.seq AND tail.seq < %(last)s::bigint
        AND (tail.bytes > %(limit_bytes)s::bigint OR tail.lines > %(limit_lines)s::bigint)"""
_PAGE = """
    SELECT head.first, page.seq, page.stream, page.data
    FROM (SELECT min(seq) AS first FROM task_output WHERE task_id = %(task)s::text) AS head
    LEFT JOIN LATERAL (
        SELECT seq, stream, data FROM task_output WHERE task_id = %(task)s::text AND seq > %(after)s::bigint
        ORDER BY seq LIMIT %(limit)s) AS page ON true
    ORDER BY page.seq"""


class PostgresOutput(PostgresConnection):
    """Output chunks by task, numbered from 1 by a counter row; the oldest go when over the task's limits."""

    async def append_output(
        self, task_id: str, chunks: Sequence[tuple[str, str]], *, limit_bytes: int, limit_lines: int
    ) -> None:
        """Append the chunks of a task the store has, then trim the oldest to the limits: one transaction."""
        if not chunks:
            return
        data = [text.encode("utf-8", "surrogatepass") for _, text in chunks]
        params = {
            "task": task_id,
            "count": len(chunks),
            "streams": [stream for stream, _ in chunks],
            "data": data,
            "lines": [lifecycle.chunk_size(stream, text)[1] for stream, text in chunks],
            "limit_bytes": limit_bytes,
            "limit_lines": limit_lines,
        }
        async with self._transaction() as conn:
            rows = await self._run(conn, _NEXT_SEQS, params)
            if not rows:
                return
            params["last"] = rows[0][0]
            await self._run(conn, _APPEND, params)
            await self._run(conn, _TRIM, params)

    async def output(self, task_id: str, *, after: int = 0, limit: int = 1000) -> TaskOutput:
        """Return up to ``limit`` kept chunks with ``seq > after``, and whether the head was trimmed (one statement)."""
        rows = await self._fetch(_PAGE, {"task": task_id, "after": after, "limit": limit})
        first = rows[0][0]
        chunks = [
            OutputChunk(seq=seq, stream=stream, text=bytes(data).decode("utf-8", "surrogatepass"))
            for _, seq, stream, data in rows
            if seq is not None
        ]
        return TaskOutput(chunks=chunks, dropped=first is not None and first > 1)
