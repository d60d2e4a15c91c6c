"""Results and events of a queue on any fsspec filesystem: a bucket, a local folder, memory.

``result_url=s3://bucket/omniq`` (or ``gs://…``, ``az://…``, ``file:///abs/dir``, and
``fsspec+memory://name`` for fsspec's in-memory filesystem, apart from omniq's own
``memory://``) keeps a queue's results and events as write-once objects under that root;
options for the filesystem (credentials, endpoint) come from the ``storage_options`` setting.
The layout, with ``{bucket}`` a UTC minute ``YYYYMMDDHHMM`` and ids quoted for paths:

- ``results/{task}/{token}``: the result bytes of one attempt;
- ``expiry/{bucket}/{due}~{task}~{token}``: an empty marker; the result goes at ``due``
  (microseconds since the epoch), found by listing only buckets that have begun;
- ``events/{bucket}/{seq}~{task}``: one event as JSON, ``seq`` its microseconds since the
  epoch times 1000 plus a random tie-breaker, increasing within a process;
- ``gone/{bucket}/{due}~{seq}~{task}``: the task's events go at ``due`` unless it has an
  event newer than ``seq`` (it was requeued).

An object store has no shared counter, so seqs come from the writers' clocks, and a writer
may finish after a later seq is visible. Readers therefore see an event only ``lag`` seconds
after its seq's time (``?lag=SECONDS`` in the URL, default 1): a cursor never skips an event
whose write took less than that, nor one from a clock less than that behind.
"""

from __future__ import annotations

import builtins
import random
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from urllib.parse import unquote

import msgspec

from omniq_nb.errors import StorageError
from omniq_nb.models import StoreHealth, TaskEvent, TaskResult, TaskStatus
from omniq_nb.storage import lifecycle
from omniq_nb.storage.base import ResultKey
from omniq_nb.storage.fsspec_base import FSSPEC_PREFIX, FsspecConnection, path_part
from omniq_nb.storage.health import health_report

__all__ = ["FSSPEC_PREFIX", "FsspecOutcomes"]

_UTC = timezone.utc
_event_decoder = msgspec.json.Decoder(TaskEvent)


def _bucket(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1e6, _UTC).strftime("%Y%m%d%H%M")


def _micros(moment: datetime | None = None) -> int:
    return int((moment.timestamp() if moment is not None else time.time()) * 1e6)


class FsspecOutcomes(FsspecConnection):
    """An ``OutcomeStore`` on an fsspec filesystem (see the module doc for the layout).

    Args:
        url: ``s3://bucket/prefix``, ``file:///abs/dir``, ``fsspec+memory://name``, ...
        storage_options: keyword arguments for the filesystem (credentials, endpoint).

    Raises:
        StorageError: the URL names no filesystem fsspec knows, or its driver is missing.

    """

    async def keep_results(self, results: Sequence[TaskResult]) -> None:
        """Write each result's bytes, then its expiry marker (when it has a ``result_ttl``)."""
        now = _micros()
        objects: dict[str, bytes] = {}
        for r in results:
            task, token = path_part(r.task_id), path_part(r.lease_token)
            objects[self._path("results", task, token)] = r.result or b""
            until = lifecycle.kept_until(now / 1e6, r.result_ttl)
            if until is not None:
                due = int(until * 1e6)
                objects[self._path("expiry", _bucket(due), f"{due}~{task}~{token}")] = b""
        if objects:
            await self._call(self._write, objects)

    async def kept_results(self, keys: Sequence[ResultKey]) -> dict[ResultKey, bytes]:
        """Read the kept bytes of these keys in one call (missing keys are left out)."""
        paths = {self._result_path(task, token): (task, token) for task, token in keys}
        found = await self._call(self._read, builtins.list(paths))
        return {paths[path]: blob for path, blob in found.items() if path in paths}

    # events

    def _next_seq(self) -> int:
        self._last_seq = max(self._last_seq + 1, _micros() * 1000 + random.randrange(1000))
        return self._last_seq

    async def append_events(self, events: Sequence[TaskEvent], *, purge_at: Mapping[str, datetime] = {}) -> None:
        """Write each event with the next seq, and a purge marker for each task in ``purge_at``."""
        objects: dict[str, bytes] = {}
        newest: dict[str, int] = {}
        for event in events:
            seq = self._next_seq()
            task = path_part(event.task_id)
            stamped = msgspec.structs.replace(event, seq=seq)
            objects[self._path("events", _bucket(seq // 1000), f"{seq:020d}~{task}")] = msgspec.json.encode(stamped)
            newest[event.task_id] = seq
        for task_id, moment in purge_at.items():
            if task_id in newest:
                due = _micros(moment)
                marker = f"{due}~{newest[task_id]:020d}~{path_part(task_id)}"
                objects[self._path("gone", _bucket(due), marker)] = b""
        if objects:
            await self._call(self._write, objects)

    def _visible_until(self) -> int:
        return (_micros() - int(self._lag * 1e6)) * 1000

    def _event_names(self, since: int, until: int) -> builtins.list[tuple[int, str, str]]:
        """Return ``(seq, task, path)`` of events with ``since < seq <= until``, oldest first."""
        first = _bucket(since // 1000) if since else ""
        found = []
        for bucket in self._names("events"):
            if bucket < first:
                continue
            for name in self._names(f"events/{bucket}"):
                seq_text, _, task = name.partition("~")
                seq = int(seq_text)
                if since < seq <= until:
                    found.append((seq, unquote(task), self._path("events", bucket, name)))
        return sorted(found)

    async def events(
        self, *, task_id: str | None = None, since: int = 0, limit: int = 1000
    ) -> builtins.list[TaskEvent]:
        """Return events with ``seq > since`` written at least ``lag`` seconds ago, oldest first."""
        names = await self._call(self._event_names, since, self._visible_until())
        picked = [path for _, task, path in names if task_id is None or task == task_id][:limit]
        if not picked:
            return []
        blobs = await self._call(self._read, picked)
        return [_event_decoder.decode(blobs[path]) for path in picked if path in blobs]  # one purged meanwhile is gone

    async def last_event_seq(self) -> int:
        """Return the newest visible event's seq (0 when there is none), listing the newest buckets only."""
        return await self._call(self._newest_seq, self._visible_until())

    def _newest_seq(self, until: int) -> int:
        for bucket in reversed(self._names("events")):
            seqs = [int(name.partition("~")[0]) for name in self._names(f"events/{bucket}")]
            visible = [seq for seq in seqs if seq <= until]
            if visible:
                return max(visible)
        return 0

    # upkeep

    def _due_markers(self, folder: str, now: int) -> builtins.list[tuple[str, builtins.list[str]]]:
        """Return ``(path, fields)`` of markers in ``folder`` whose time has come."""
        current = _bucket(now)
        due = []
        for bucket in self._names(folder):
            if bucket > current:
                break
            for name in self._names(f"{folder}/{bucket}"):
                fields = name.split("~")
                if int(fields[0]) <= now:
                    due.append((self._path(folder, bucket, name), fields[1:]))
        return due

    def _forget(self) -> int:
        """Delete due results; when some tasks' events are due, list the events once to find theirs."""
        now = _micros()
        results = self._due_markers("expiry", now)
        self._remove([self._path("results", task, token) for _, (task, token) in results])
        self._remove([path for path, _ in results])
        gone = self._due_markers("gone", now)
        if not gone:
            return len(results)
        last_seq = {unquote(task): int(seq) for _, (seq, task) in gone}
        names = self._event_names(0, 2**63 - 1)
        newest: dict[str, int] = {}
        for seq, task, _ in names:
            newest[task] = seq
        doomed = {task for task, seq in last_seq.items() if newest.get(task, 0) <= seq}
        self._remove([path for _, task, path in names if task in doomed])
        self._remove([path for path, _ in gone])
        return len(results)

    async def forget_outcomes(self, *, everything: bool = False) -> int:
        """Delete results and events whose time has come (see ``OutcomeStore.forget_outcomes``), or all of them."""
        if everything:
            kept = await self._call(self._count_results)
            for folder in ("results", "expiry", "events", "gone"):
                if await self._call(self._fs.exists, self._path(folder)):
                    await self._call(self._fs.rm, self._path(folder), recursive=True)
            return kept
        return await self._call(self._forget)

    def _count_results(self) -> int:
        return sum(len(self._names(f"results/{task}")) for task in self._names("results"))

    async def purge(
        self, *, finished_before: datetime | None = None, statuses: Sequence[TaskStatus] = (), everything: bool = False
    ) -> int:
        """Forget what is due (this store keeps no tasks: it returns 0 unless ``everything``)."""
        gone = await self.forget_outcomes(everything=everything)
        return gone if everything else 0

    async def lead_maintenance(self, runner: str, *, term: float) -> bool:
        """Return True: forgetting what is due is safe from any runner (the queue's store elects the upkeep)."""
        return True

    async def checkpoint(self) -> None:
        """Nothing to do: objects are written whole."""

    async def check(self, *, stale_after: float) -> StoreHealth:
        """Report whether the root can be listed (there are no tasks or leases here)."""
        problems = []
        try:
            await self._call(self._fs.ls, self._root, detail=False)
        except (StorageError, FileNotFoundError) as exc:
            problems.append(f"cannot list {self.url}: {exc}")
        return health_report(
            self.url, counts={}, expired_leases=0, stale_ids=[], stale_after=stale_after, problems=problems
        )
