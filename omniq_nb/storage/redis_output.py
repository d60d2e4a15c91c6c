"""The Redis store's result cache (``cached``, ``forget_cached``) and ``TaskOutputStore`` role.

Each is one Lua script of ``redis_lua_output`` (which describes the keys): the cache lookup
reads only the tasks inserted with the asked keys (500 keys a call), ``forget_cached`` walks the set of tasks that
have a key in batches (``SSCAN``, one script per batch), and an append writes its chunks and
trims the oldest by their kept sizes, all on the server, so two store objects never hand out
one ``seq``. Texts travel as UTF-8 bytes (lone surrogates kept, as ``lifecycle.chunk_size``
counts them).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from omniq_nb.models import OutputChunk, Task, TaskOutput
from omniq_nb.storage import lifecycle
from omniq_nb.storage.redis_base import RedisConnection
from omniq_nb.storage.redis_codec import decode_task, pairs_to_dict, text
from omniq_nb.storage.rows import chunks

__all__ = ["RedisCache", "RedisOutput"]

_UTF8 = ("utf-8", "surrogatepass")
_KEYS_PER_CALL = 500  # cache keys one lookup script takes


class RedisCache(RedisConnection):
    """The result cache: the newest success by key, and forgetting keys."""

    async def cached(self, keys: Sequence[str], *, finished_after: datetime | None = None) -> dict[str, Task]:
        """Return the newest succeeded task of each key that has one (finished at or after ``finished_after``)."""
        after = "" if finished_after is None else text(finished_after.timestamp())
        found: dict[str, Task] = {}
        for chunk in chunks(list(dict.fromkeys(keys)), _KEYS_PER_CALL):
            reply = await self._script("CACHED", after, *chunk)
            for at in range(0, len(reply), 2):
                key = reply[at].decode() if isinstance(reply[at], bytes) else str(reply[at])
                task = decode_task(pairs_to_dict(reply[at + 1]))
                if lifecycle.cached_hit(task, key, finished_after):
                    found[key] = task
        return found

    async def forget_cached(self, *, name: str | None = None) -> int:
        """Clear the cache key of the tasks that have one (named ``name``, or all); return how many."""
        cursor: Any = "0"
        forgotten = 0
        while True:
            cursor, count = await self._script("FORGET_CACHED", cursor, "0" if name is None else "1", name or "")
            forgotten += int(count)
            if cursor in (b"0", "0", 0):
                return forgotten


class RedisOutput(RedisConnection):
    """``TaskOutputStore``: a stream of chunks per task, with its kept sizes beside it."""

    async def append_output(
        self, task_id: str, chunks: Sequence[tuple[str, str]], *, limit_bytes: int, limit_lines: int
    ) -> None:
        """Append the chunks of a task the store has, then trim its oldest chunks to the limits (one script)."""
        if not chunks:
            return
        args: builtins.list[Any] = [task_id, limit_bytes, limit_lines]
        for stream, chunk in chunks:
            size, lines = lifecycle.chunk_size(stream, chunk)
            args += (stream, chunk.encode(*_UTF8), size, lines)
        await self._script("APPEND_OUTPUT", *args)

    async def output(self, task_id: str, *, after: int = 0, limit: int = 1000) -> TaskOutput:
        """Return up to ``limit`` kept chunks with ``seq > after``, oldest first (none for an unknown task)."""
        head, entries = await self._script("OUTPUT", task_id, after, limit)
        chunks = [
            OutputChunk(seq=int(entry_id.split(b"-", 1)[0]), stream=fields[1].decode(), text=fields[3].decode(*_UTF8))
            for entry_id, fields in entries
        ]
        return TaskOutput(chunks=chunks, dropped=bool(head) and not head.startswith(b"1-"))
