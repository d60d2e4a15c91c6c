"""The memory store's ``TaskOutputStore`` role: each task's output chunks, trimmed to their limits."""

from __future__ import annotations

from collections.abc import Sequence

from omniq_nb.models import OutputChunk, TaskOutput
from omniq_nb.storage import lifecycle
from omniq_nb.storage.memory_base import MemoryState

__all__ = ["MemoryOutput"]


class MemoryOutput(MemoryState):
    """Output chunks by task, numbered from 1; the oldest go when a task's output is over its limits."""

    async def append_output(
        self, task_id: str, chunks: Sequence[tuple[str, str]], *, limit_bytes: int, limit_lines: int
    ) -> None:
        """Append the chunks of a task the store has, then trim the oldest to the limits."""
        with self._lock:
            if task_id not in self._tasks or not chunks:
                return
            kept = self._output.setdefault(task_id, [])
            seq = self._output_seq.get(task_id, 0)
            for stream, text in chunks:
                seq += 1
                kept.append(OutputChunk(seq=seq, stream=stream, text=text))
            self._output_seq[task_id] = seq
            sizes = [lifecycle.chunk_size(c.stream, c.text) for c in kept]
            del kept[: lifecycle.trimmed_head(sizes, limit_bytes=limit_bytes, limit_lines=limit_lines)]

    async def output(self, task_id: str, *, after: int = 0, limit: int = 1000) -> TaskOutput:
        """Return up to ``limit`` kept chunks with ``seq > after``."""
        with self._lock:
            kept = self._output.get(task_id, [])
            return TaskOutput(chunks=[c for c in kept if c.seq > after][:limit], dropped=bool(kept) and kept[0].seq > 1)
