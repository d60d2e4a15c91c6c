"""The NATS store's result cache (``cached``, ``forget_cached``) and ``TaskOutputStore`` role.

The cache reads the mirror's index of tasks by ``cache_key`` (after catching up with the
bucket), and ``forget_cached`` clears keys by compare-and-set, as every transition does.

A task's output is the subject ``omniq.PREFIX.out.ID`` of the stream ``omniq_PREFIX_output``:
one message per kept chunk, its text the payload and its headers ``Omniq-Seq``,
``Omniq-Stream``, ``Omniq-Total`` (the bytes and lines the task wrote up to and with this
chunk) and ``Omniq-Head`` (those before the first chunk kept). Each chunk is published with
``Nats-Expected-Last-Subject-Sequence``, so writers on the subject go one at a time and two
never hand out one ``seq``; a writer that lost the race reads the last message again. The
last message alone tells the next ``seq`` and how much output is kept; when that is over a
limit, the oldest chunks are read one by one from the head (only those that go, and one
more) and purged below the first that stays: each chunk is read at most once more in its
life. Purge removes the subject with its task (the whole stream with ``everything``); output
appended to a task at the moment it is purged (one whose ``result_ttl`` ran out while it
still printed) may outlive it, until ``purge(everything=True)``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import random
import weakref
from collections.abc import Sequence
from datetime import datetime

import nats.errors
import nats.js.errors
from nats.js import api

from omniq_nb.errors import StorageError
from omniq_nb.models import OutputChunk, Task, TaskOutput
from omniq_nb.storage import lifecycle
from omniq_nb.storage.nats_codec import task_key, token
from omniq_nb.storage.nats_mirror import NATSMirror
from omniq_nb.storage.nats_queue import NATSQueue

__all__ = ["NATSCache", "NATSOutput"]

_UTF8 = ("utf-8", "surrogatepass")
_TRIES = 20
_WRONG_LAST = (10071, 10164)  # JetStream: the subject's last sequence was not the expected one
_FETCH = 1000
_FETCH_SECONDS = 5.0
_CONSUMER_IDLE = 30.0


class NATSCache(NATSQueue):
    """The result cache: the newest success by key from the mirror's index, and forgetting keys."""

    async def cached(self, keys: Sequence[str], *, finished_after: datetime | None = None) -> dict[str, Task]:
        """Return the newest succeeded task of each key that has one (finished at or after ``finished_after``)."""
        await self._catch_up()
        found: dict[str, Task] = {}
        for key in keys:
            entries = (self._tasks.get(k) for k in self._cached.get(key, ()))
            newest = lifecycle.newest_cached((e[1].task for e in entries if e is not None), key, finished_after)
            if newest is not None:
                found[key] = newest
        return dict(zip(found, await self._filled(builtins.list(found.values())), strict=True))

    async def forget_cached(self, *, name: str | None = None) -> int:
        """Clear the cache key of the tasks that have one (named ``name``, or all), each by compare-and-set."""
        await self._catch_up()
        ids = {
            entry[1].task.id
            for keys in self._cached.values()
            for entry in (self._tasks.get(k) for k in keys)
            if entry is not None and name in (None, entry[1].task.name)
        }

        def decide(task: Task) -> Task | None:
            if task.cache_key is None or name not in (None, task.name):
                return None
            task.cache_key = None
            return task

        forgotten = 0
        for task_id in ids:
            forgotten += (await self._change(task_id, decide))[1]
        return forgotten


class _Last:
    """What the last message of a task's output subject says: its stream sequence, seq and totals."""

    def __init__(self, msg: api.RawStreamMsg | None) -> None:
        headers = (msg.headers or {}) if msg is not None else {}
        self.stream_seq = msg.seq or 0 if msg is not None else 0
        self.seq = int(headers.get("Omniq-Seq", 0))
        self.total = _pair(headers.get("Omniq-Total"))
        self.head = _pair(headers.get("Omniq-Head"))


def _pair(value: str | None) -> tuple[int, int]:
    size, _, lines = (value or "0 0").partition(" ")
    return int(size), int(lines)


class NATSOutput(NATSMirror):
    """``TaskOutputStore``: a subject per task in the output stream (see the module docstring).

    Args:
        url: as ``NATSConnection``.
        events: record a ``TaskEvent`` per transition.

    """

    def __init__(self, url: str, *, events: bool = True) -> None:
        super().__init__(url, events=events)
        self._writing: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        """A lock per task whose output this store object is appending: its own writers take turns."""

    async def append_output(
        self, task_id: str, chunks: Sequence[tuple[str, str]], *, limit_bytes: int, limit_lines: int
    ) -> None:
        """Append the chunks of a task the store has, then trim its oldest chunks to the limits."""
        if not chunks:
            return
        key = task_key(task_id)
        subject = f"{self._output_subject}.{token(task_id)}"
        async with self._errors():
            if key not in self._tasks and await self._read(key) is None:
                return
            left = builtins.list(chunks)
            turn = self._writing.setdefault(subject, asyncio.Lock())
            async with turn:
                for attempt in range(_TRIES):
                    left = await self._append_chunks(subject, left, limit_bytes, limit_lines)
                    if not left:
                        return
                    await asyncio.sleep(random.uniform(0, 0.001 * (attempt + 1)))  # another process won: let it finish
        raise StorageError(f"the output of task {task_id} in {self.url} kept changing; gave up after {_TRIES} tries")

    async def _append_chunks(
        self, subject: str, chunks: builtins.list[tuple[str, str]], limit_bytes: int, limit_lines: int
    ) -> builtins.list[tuple[str, str]]:
        """Publish chunks after the subject's last message and trim; return those a concurrent writer kept out."""
        last = _Last(await self._last_output(subject))
        seq, (size, lines) = last.seq, last.total
        planned = []
        for stream, text in chunks:
            grown = lifecycle.chunk_size(stream, text)
            seq, size, lines = seq + 1, size + grown[0], lines + grown[1]
            planned.append((seq, stream, text, (size, lines), grown))
        head, cut, skip = await self._trim_point(subject, last, planned, limit_bytes, limit_lines)
        expected = last.stream_seq
        for n, (seq, stream, text, total, _) in enumerate(planned):
            if n < skip:  # trimmed before it was published: its seq is spent all the same
                continue
            headers = {
                "Omniq-Seq": str(seq),
                "Omniq-Stream": stream,
                "Omniq-Total": f"{total[0]} {total[1]}",
                "Omniq-Head": f"{head[0]} {head[1]}",
                "Nats-Expected-Last-Subject-Sequence": str(expected),
            }
            try:
                ack = await self._jet.publish(subject, text.encode(*_UTF8), headers=headers)
            except nats.js.errors.APIError as exc:
                if exc.err_code in _WRONG_LAST:
                    return chunks[n:]
                raise
            expected = ack.seq
        if cut:
            await self._jet.purge_stream(self.output_stream, subject=subject, seq=cut)
        return []

    async def _trim_point(
        self,
        subject: str,
        last: _Last,
        planned: builtins.list[tuple[int, str, str, tuple[int, int], tuple[int, int]]],
        limit_bytes: int,
        limit_lines: int,
    ) -> tuple[tuple[int, int], int, int]:
        """Return the totals before the first chunk kept, the stream seq to purge below (0: none), new chunks to skip.

        The oldest chunks go while the kept output is over a limit (the newest always stays):
        published ones read from the head, one request each, then the new ones.
        """
        total, head = planned[-1][3], last.head

        def over(before: tuple[int, int]) -> bool:
            return total[0] - before[0] > limit_bytes or total[1] - before[1] > limit_lines

        if not over(head):
            return head, 0, 0
        cut, at = 0, 1
        while last.stream_seq and at <= last.stream_seq:
            try:
                msg = await self._jet.get_msg(self.output_stream, seq=at, subject=subject, next=True)
            except nats.js.errors.NotFoundError:  # another writer trimmed them all meanwhile
                break
            oldest = _Last(msg)
            own = lifecycle.chunk_size((msg.headers or {}).get("Omniq-Stream", ""), (msg.data or b"").decode(*_UTF8))
            head = (oldest.total[0] - own[0], oldest.total[1] - own[1])  # exact, whatever the last message said
            if not over(head):
                return head, cut, 0
            head, at = oldest.total, oldest.stream_seq + 1
            cut = at
        skip = 0
        while skip < len(planned) - 1 and over(head):
            head, skip = planned[skip][3], skip + 1
        return head, cut, skip

    async def _last_output(self, subject: str) -> api.RawStreamMsg | None:
        try:
            return await self._jet.get_last_msg(self.output_stream, subject)
        except nats.js.errors.NotFoundError:
            return None

    async def output(self, task_id: str, *, after: int = 0, limit: int = 1000) -> TaskOutput:
        """Return up to ``limit`` kept chunks with ``seq > after``, oldest first (none for an unknown task)."""
        subject = f"{self._output_subject}.{token(task_id)}"
        async with self._errors():
            if await self._last_output(subject) is None:
                return TaskOutput(chunks=[])
            reader = await self._jet.pull_subscribe(
                subject,
                stream=self.output_stream,
                config=api.ConsumerConfig(
                    deliver_policy=api.DeliverPolicy.ALL,
                    ack_policy=api.AckPolicy.NONE,
                    inactive_threshold=_CONSUMER_IDLE,
                    mem_storage=True,
                    num_replicas=1,
                ),
            )
            try:
                return await self._fetch_output(reader, after, limit)
            finally:
                with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                    await reader.unsubscribe()
                    await self._jet.delete_consumer(self.output_stream, reader._consumer)

    @staticmethod
    async def _fetch_output(reader: nats.js.JetStreamContext.PullSubscription, after: int, limit: int) -> TaskOutput:
        pending = (await reader.consumer_info()).num_pending or 0
        chunks: builtins.list[OutputChunk] = []
        first = 0
        while pending > 0 and len(chunks) < limit:
            batch = await reader.fetch(min(pending, _FETCH), timeout=_FETCH_SECONDS)
            for msg in batch:
                headers = msg.headers or {}
                seq = int(headers.get("Omniq-Seq", 0))
                first = first or seq
                if seq > after:
                    chunks.append(OutputChunk(seq=seq, stream=headers["Omniq-Stream"], text=msg.data.decode(*_UTF8)))
            pending = batch[-1].metadata.num_pending if batch else 0
        return TaskOutput(chunks=chunks[:limit], dropped=first > 1)
