"""The SQLite store's ``TaskOutputStore`` role: what tasks printed, a row per chunk, trimmed per task.

A chunk's text is kept as its UTF-8 bytes (lone surrogates passed through), so any ``str``
a task wrote comes back as written.

``task_output_seq`` keeps each task's last chunk number, so numbers keep counting after the
oldest chunks were trimmed; each append is one write transaction, so two processes never
hand out the same number.
"""

from __future__ import annotations

from collections.abc import Sequence

from omniq_nb.models import OutputChunk, TaskOutput
from omniq_nb.storage import lifecycle
from omniq_nb.storage.sqlite_base import SQLiteConnection

__all__ = ["SQLiteOutput"]


class SQLiteOutput(SQLiteConnection):
    """Output chunks in ``task_output``; the oldest go when a task's output is over its limits."""

    async def append_output(
        self, task_id: str, chunks: Sequence[tuple[str, str]], *, limit_bytes: int, limit_lines: int
    ) -> None:
        """Append the chunks of a task the store has, then trim the oldest to the limits (one transaction)."""
        if not chunks:
            return
        async with self._immediate():
            if not await self._run("SELECT 1 FROM tasks WHERE id = ?", (task_id,)):
                return
            last = await self._run("SELECT seq FROM task_output_seq WHERE task_id = ?", (task_id,))
            seq = last[0][0] if last else 0
            rows = []
            for stream, text in chunks:
                seq += 1
                data = text.encode("utf-8", "surrogatepass")  # any str, lone surrogates too
                rows.append((task_id, seq, stream, data, *lifecycle.chunk_size(stream, text)))
            await self._db.executemany(
                "INSERT INTO task_output (task_id, seq, stream, data, bytes, lines) VALUES (?, ?, ?, ?, ?, ?)", rows
            )
            await self._run("INSERT OR REPLACE INTO task_output_seq (task_id, seq) VALUES (?, ?)", (task_id, seq))
            [(total_bytes, total_lines)] = await self._run(
                "SELECT sum(bytes), sum(lines) FROM task_output WHERE task_id = ?", (task_id,)
            )
            if total_bytes > limit_bytes or total_lines > limit_lines:
                kept = await self._run(
                    "SELECT seq, bytes, lines FROM task_output WHERE task_id = ? ORDER BY seq", (task_id,)
                )
                sizes = [(size, lines) for _, size, lines in kept]
                dropped = lifecycle.trimmed_head(sizes, limit_bytes=limit_bytes, limit_lines=limit_lines)
                if dropped:
                    await self._run(
                        "DELETE FROM task_output WHERE task_id = ? AND seq <= ?", (task_id, kept[dropped - 1][0])
                    )

    async def output(self, task_id: str, *, after: int = 0, limit: int = 1000) -> TaskOutput:
        """Return up to ``limit`` kept chunks with ``seq > after``, and whether the head was trimmed."""
        rows = await self._fetch(
            "SELECT seq, stream, data, (SELECT min(seq) FROM task_output WHERE task_id = ?1) FROM task_output "
            "WHERE task_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            (task_id, after, limit),
        )
        if rows:
            first = rows[0][3]
        else:
            [(first,)] = await self._fetch("SELECT min(seq) FROM task_output WHERE task_id = ?", (task_id,))
        chunks = [
            OutputChunk(seq=seq, stream=stream, text=bytes(data).decode("utf-8", "surrogatepass"))
            for seq, stream, data, _ in rows
        ]
        return TaskOutput(chunks=chunks, dropped=(first or 1) > 1)
