"""Keep what tasks print or display with the task: collected per task, stored in batches off the hot path.

A pool has one ``OutputKeeper``. Each run's context hands it everything the task writes (from
any thread: a write costs a lock and an append); writes to one stream in a row are joined
into chunks of at most ``CHUNK_CHARS``. One loop on the pool's loop stores the new chunks of
every task with ``append_output`` every ``FLUSH_INTERVAL`` seconds (one round serves all the
tasks that wrote), sooner when a task's pending output reaches its limit, and when a run ends
(``settle``, awaited before its outcome is recorded, so a finished task's output is stored).
The store trims each task's output to ``OUTPUT_LIMIT`` bytes and ``OUTPUT_LINES`` lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from functools import partial
from typing import Any

from omniq_nb.context import OutputSink
from omniq_nb.storage import lifecycle
from omniq_nb.worker.host import PoolHost

__all__ = ["CHUNK_CHARS", "FLUSH_INTERVAL", "OutputKeeper", "display_text"]

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.5  # seconds between rounds that store the output written meanwhile
CHUNK_CHARS = 8192  # the most characters joined into one stored chunk
_EARLY = 4  # a task's pending output this many times its limits is stored without waiting for the round


def display_text(payload: Any) -> str:
    """Return how a ``display`` is kept: the JSON of ``{"data": ..., "metadata": ...}``.

    Example:
        >>> display_text(({"text/plain": "1"}, {}))
        '{"data": {"text/plain": "1"}, "metadata": {}}'
    """
    data, metadata = payload
    return json.dumps({"data": data, "metadata": metadata}, default=repr)


class OutputKeeper:
    """Collect the output of a pool's runs and store it in rounds (see the module's docstring).

    Args:
        host: the pool's queue: its store, and its settings ``OUTPUT_LIMIT`` and ``OUTPUT_LINES``
            (the most UTF-8 bytes and lines kept per task; either ``0``: nothing is kept), read at
            each write so that ``%omniq config`` applies at once.
    """

    def __init__(self, host: PoolHost) -> None:
        self._host = host
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}  # by task id
        self._limits = self._read_limits()  # read again at each round: a change applies within one
        self._writing: set[str] = set()  # tasks whose chunks the round going on stores
        self._wake = asyncio.Event()
        self._round_done = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._ended = False

    def sink(self, task_id: str) -> OutputSink:
        """Return what a run's context hands the task's output to (``TaskContext(on_keep=...)``)."""
        return partial(self.keep, task_id)

    def keep(self, task_id: str, kind: str, payload: Any) -> None:
        """Add what a task wrote: ``("stdout" | "stderr", text)`` or ``("display", (data, metadata))``."""
        limit_bytes, limit_lines = self._limits
        if not limit_bytes or not limit_lines:
            return
        if kind == "display":
            text = display_text(payload)
        elif isinstance(payload, str) and payload:
            text = payload
        else:
            return
        with self._lock:
            pending = self._pending.get(task_id)
            if pending is None:
                pending = self._pending[task_id] = _Pending()
            pending.add(kind, text)
            full = pending.chars >= _EARLY * limit_bytes or pending.lines >= _EARLY * limit_lines
        if full and self._loop is not None:  # store it now, to bound what waits in memory
            with contextlib.suppress(RuntimeError):  # the loop closed: the pool is gone
                self._loop.call_soon_threadsafe(self._wake.set)

    def _read_limits(self) -> tuple[int, int]:
        settings = self._host.settings
        return settings.output_limit, settings.output_lines

    async def run(self) -> None:
        """Store the pending output every ``FLUSH_INTERVAL`` (or when woken) until ``drain``; then store the rest."""
        self._loop = asyncio.get_running_loop()
        try:
            while not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL)
                self._wake.clear()
                await self._round()
            await self._round()
        finally:
            self._ended = True
            self._round_done.set()

    async def settle(self, task_id: str) -> None:
        """Return once what the task wrote so far is stored (at once when it wrote nothing new)."""
        while not self._ended and (task_id in self._pending or task_id in self._writing):
            done = self._round_done
            self._wake.set()
            await done.wait()

    def drain(self) -> None:
        """Ask the loop to store what is pending and end (it ends once ``run`` returns)."""
        self._closing = True
        self._wake.set()

    async def _round(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, {}
        self._writing = set(batch)
        self._limits = limit_bytes, limit_lines = self._read_limits()
        try:
            storage = self._host.storage
            for task_id, pending in batch.items():
                chunks = pending.take()
                del chunks[: _over_limits(chunks, limit_bytes, limit_lines)]
                try:
                    await storage.append_output(
                        task_id,
                        chunks,
                        limit_bytes=max(1, limit_bytes),
                        limit_lines=max(1, limit_lines),
                    )
                except Exception as exc:  # the output is lost, the task is not: it runs on
                    logger.warning("task %s: could not store %d output chunk(s): %s", task_id, len(chunks), exc)
        finally:
            self._writing = set()
            done, self._round_done = self._round_done, asyncio.Event()
            done.set()


class _Pending:
    """One task's output not stored yet: finished chunks, and the chunk being filled (parts of one stream)."""

    __slots__ = ("chars", "chunks", "filled", "lines", "parts", "stream")

    def __init__(self) -> None:
        self.chunks: list[tuple[str, str]] = []
        self.stream, self.parts, self.filled = "", list[str](), 0
        self.chars = self.lines = 0

    def add(self, stream: str, text: str) -> None:
        """Add one write; a display is a chunk of its own, a long text is cut at line ends."""
        size = len(text)
        self.chars += size
        self.lines += 1 if stream == "display" else text.count("\n")
        if stream != self.stream or stream == "display" or self.filled + size > CHUNK_CHARS:
            self._close()
            if size > CHUNK_CHARS and stream != "display":  # a child's batch
                self.chunks.extend((stream, piece) for piece in _pieces(text))
                return
            self.stream = stream
        self.parts.append(text)
        self.filled += size

    def take(self) -> list[tuple[str, str]]:
        """Return every chunk, oldest first."""
        self._close()
        return self.chunks

    def _close(self) -> None:
        if self.parts:
            self.chunks.append((self.stream, "".join(self.parts)))
            self.parts, self.filled = [], 0
        self.stream = ""


def _over_limits(chunks: list[tuple[str, str]], limit_bytes: int, limit_lines: int) -> int:
    r"""Return how many of the oldest chunks the store would drop anyway, less one (so it says the head was dropped).

    Example:
        >>> _over_limits([("stdout", "a\n")] * 5, 100, 2)
        2
    """
    sizes = [lifecycle.chunk_size(stream, text) for stream, text in chunks]
    return max(0, lifecycle.trimmed_head(sizes, limit_bytes=max(1, limit_bytes), limit_lines=max(1, limit_lines)) - 1)


def _pieces(text: str) -> list[str]:
    r"""Cut ``text`` into pieces of at most ``CHUNK_CHARS``, each ending at a line end where one is in reach.

    Example:
        >>> [len(p) for p in _pieces(("x" * 99 + "\n") * 200)]
        [8100, 8100, 3800]
    """
    pieces, start = [], 0
    while len(text) - start > CHUNK_CHARS:
        end = text.rfind("\n", start, start + CHUNK_CHARS) + 1 or start + CHUNK_CHARS
        pieces.append(text[start:end])
        start = end
    pieces.append(text[start:])
    return pieces
