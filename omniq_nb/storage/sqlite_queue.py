"""The SQLite store's ``QueueStore`` role: every task transition, each one atomic.

Claims take many ready tasks in one ``UPDATE … RETURNING``; outcomes of many attempts are
written by one ``UPDATE … FROM (VALUES …)``. Every write after a claim is fenced on the
lease token and ``status = 'running'``. Writers that make tasks ready send a wake-up hint.
"""

from __future__ import annotations

import builtins
import itertools
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from omniq_nb.models import DependencyMove, Task, TaskResult, TaskStatus, check_transition
from omniq_nb.storage import lifecycle
from omniq_nb.storage.rows import COLUMNS, chunks, encode_error, new_task_row, row_task, sort_claimed
from omniq_nb.storage.sql_text import REQUEUEABLE_SQL, TASKS_COLUMNS, UNFINISHED_SQL, move_assignments
from omniq_nb.storage.sqlite_results import SQLiteResults
from omniq_nb.storage.sqlite_schema import NOW_SQL
from omniq_nb.storage.sqlite_statements import (
    AFFINITY_SQL,
    BATCH_ROWS,
    CHUNK_ROWS,
    IDS_PER_STATEMENT,
    batch_statement,
    duplicate_ids_refused,
    insert_statements,
    link_statements,
)

__all__ = ["SQLiteQueue"]


class SQLiteQueue(SQLiteResults):
    """Insert, claim, renew, progress, settle, release, cancel, move dependents, requeue, expire (and reads)."""

    async def insert(self, tasks: Iterable[Task]) -> None:
        """Add new tasks and their dependency index rows in one transaction (one statement for a single task)."""
        batch = builtins.list(tasks)
        await self._write(insert_statements(batch))
        if any(task.status is TaskStatus.PENDING for task in batch):
            self._notify()

    async def insert_many(
        self, template: Task, entries: Iterable[tuple[str, bytes]], kept: tuple[str, bytes] | None = None
    ) -> None:
        """Add tasks that differ from ``template`` only by id and payload, in one transaction (with ``kept``).

        The shared values are bound once per statement and only ``(id, payload)`` per row,
        which is what makes ``enqueue_many`` fast. ``entries`` is read a statement's rows at a
        time inside the transaction (a large lazy batch never sits in memory whole); if reading
        it raises, nothing is inserted.
        """
        shared = new_task_row(template)
        ids: builtins.list[str] = []

        def statements() -> Iterator[tuple[str, Sequence[Any]]]:
            if kept is not None:
                yield "INSERT OR IGNORE INTO callables (digest, body) VALUES (?, ?)", kept
            for part in chunks(entries, BATCH_ROWS):
                ids.extend(task_id for task_id, _ in part)
                yield batch_statement(shared, part)
            yield from link_statements([(task_id, on) for task_id in ids for on in template.depends_on])

        await self._write(statements())
        if ids and template.status is TaskStatus.PENDING:
            self._notify()

    async def kept_callables(self, digests: Collection[str]) -> dict[str, bytes]:
        """Return the kept callables of these digests (those not kept are left out)."""
        found: dict[str, bytes] = {}
        for part in chunks(digests, IDS_PER_STATEMENT):
            marks = ", ".join("?" * len(part))
            found.update(await self._fetch(f"SELECT digest, body FROM callables WHERE digest IN ({marks})", part))
        return found

    async def _write(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Run inserts of new tasks in one transaction (a single one by itself), refusing duplicate ids.

        ``statements`` may be lazy: each is made while the one before runs, and one that
        cannot be made rolls back what ran.
        """
        statements = iter(statements)
        first, second = next(statements, None), next(statements, None)
        with duplicate_ids_refused():
            if first is None:
                return
            if second is None:
                await self._fetch(*first)
                return
            async with self._immediate():
                await self._run_each(itertools.chain((first, second), statements))

    async def claim(
        self,
        *,
        queues: Sequence[str],
        limit: int,
        lease: float,
        worker: str,
        unowned_only: bool = False,
        owner: str | None = None,
        skip_kinds: Sequence[str] = (),
    ) -> builtins.list[Task]:
        """Claim up to ``limit`` ready tasks in one atomic ``UPDATE … RETURNING``.

        The lease (and ``started_at``) run from the clock read inside the statement, after any
        wait for another process's write lock, so a claim that waited still gets its whole
        lease. Ready tasks are those due at the call (SQLite's own clock has millisecond steps:
        a task enqueued this millisecond would wait for the next one), and ``started_at`` is never
        before the call either, so a task never starts before its eta.
        """
        now = time.time()
        marks = ", ".join("?" * len(queues))
        mine: tuple[object, ...]
        affinity, mine = (AFFINITY_SQL, (owner, now)) if unowned_only else ("", ())
        if skip_kinds:
            affinity += f" AND (kind IS NULL OR kind NOT IN ({', '.join('?' * len(skip_kinds))}))"
            mine += tuple(skip_kinds)
        sql = f"""
            UPDATE tasks SET status = 'running', attempt = attempt + 1,
                lease_token = lower(hex(randomblob(16))), run_id = lower(hex(randomblob(8))),
                lease_until = {NOW_SQL} + ?, started_at = max({NOW_SQL}, ?), worker = ?,
                progress = 0, progress_done = 0, progress_total = NULL, progress_message = NULL
            WHERE seq IN (
                SELECT seq FROM tasks
                WHERE status = 'pending' AND queue IN ({marks}) AND eta <= ?
                    AND (expires_at IS NULL OR expires_at > ?){affinity}
                ORDER BY priority DESC, eta, seq LIMIT ?)
            RETURNING {COLUMNS}, seq"""
        rows = await self._fetch(sql, (lease, now, worker, *queues, now, now, *mine, limit))
        sort_claimed(rows)
        return [row_task(row) for row in rows]

    async def renew(self, *, leases: Mapping[str, str], lease: float) -> set[str]:
        """Extend the leases still held (from the clock after any lock wait); return their ids."""
        held: set[str] = set()
        for chunk in chunks(builtins.list(leases.items()), CHUNK_ROWS):
            values = ", ".join("(?, ?)" for _ in chunk)
            sql = f"""
                WITH v(id, token) AS (VALUES {values})
                UPDATE tasks SET lease_until = {NOW_SQL} + ? FROM v
                WHERE tasks.id = v.id AND tasks.lease_token = v.token AND tasks.status = 'running'
                RETURNING tasks.id"""
            rows = await self._fetch(sql, (*itertools.chain.from_iterable(chunk), lease))
            held.update(row[0] for row in rows)
        return held

    async def progress(
        self, *, task_id: str, lease_token: str, done: float, total: float | None, message: str | None
    ) -> bool:
        """Store progress of a running task, fenced on its lease."""
        rows = await self._fetch(
            """UPDATE tasks SET progress_done = ?, progress_total = ?, progress_message = ?, progress = ?
            WHERE id = ? AND lease_token = ? AND status = 'running' RETURNING id""",
            (done, total, message, lifecycle.progress_fraction(done, total), task_id, lease_token),
        )
        return bool(rows)

    async def settle(
        self, results: Sequence[TaskResult], *, successors: Mapping[str, Task] = {}
    ) -> builtins.list[Task]:
        """Apply many attempt outcomes with one statement per chunk, fenced on each lease."""
        lifecycle.check_outcomes(results)
        if not successors and len(results) <= CHUNK_ROWS:  # one statement: atomic by itself
            return await self._settle_rows(results)
        async with self._immediate():  # all chunks or none: a retried batch finds no half of it settled
            accepted = await self._settle_rows(results, locked=True)
            following = [successors[t.id] for t in accepted if t.id in successors]
            if following:  # one unfinished run per series: a retried old run must not fork it
                marks = ", ".join("?" * len(following))
                busy = await self._run(
                    f"SELECT DISTINCT series FROM tasks WHERE series IN ({marks}) AND status IN {UNFINISHED_SQL}",
                    [task.series for task in following],
                )
                taken = {row[0] for row in busy}
                following = [task for task in following if task.series not in taken]
            for statement in insert_statements(following):
                await self._run(*statement)
        return accepted

    async def _settle_rows(self, results: Sequence[TaskResult], *, locked: bool = False) -> builtins.list[Task]:
        accepted: builtins.list[Task] = []
        for chunk in chunks(results, CHUNK_ROWS):
            values = ", ".join("(?, ?, ?, ?, ?, ?, ?)" for _ in chunk)
            params: builtins.list[Any] = [time.time()]
            for r in chunk:
                eta = r.eta.timestamp() if r.eta is not None else None
                params += (
                    r.task_id,
                    r.lease_token,
                    r.status.value,
                    r.result,
                    encode_error(r.error),
                    eta,
                    int(r.rescue),
                )
            sql = f"""
                WITH clock(now) AS (VALUES (?)),
                    v(id, token, status, result, error, eta, rescue) AS (VALUES {values})
                UPDATE tasks SET status = v.status, result = v.result, error = v.error,
                    eta = coalesce(v.eta, tasks.eta), lease_token = NULL, lease_until = NULL,
                    finished_at = CASE WHEN v.status = 'pending' THEN NULL ELSE clock.now END,
                    purge_at = CASE WHEN v.status != 'pending' THEN clock.now + tasks.result_ttl END,
                    progress = CASE WHEN v.status = 'succeeded' THEN 1.0 ELSE tasks.progress END
                FROM v, clock
                WHERE tasks.id = v.id AND tasks.lease_token = v.token AND tasks.status = 'running'
                    AND (v.rescue = 0 OR tasks.lease_until <= clock.now)
                RETURNING {TASKS_COLUMNS}"""
            rows = await (self._run(sql, params) if locked else self._fetch(sql, params))
            accepted.extend(row_task(row) for row in rows)
        return accepted

    async def release(self, *, leases: Mapping[str, str]) -> builtins.list[Task]:
        """Hand running tasks back to pending and give back the attempt their claim used."""
        released: builtins.list[Task] = []
        for chunk in chunks(builtins.list(leases.items()), CHUNK_ROWS):
            values = ", ".join("(?, ?)" for _ in chunk)
            sql = f"""
                WITH v(id, token) AS (VALUES {values})
                UPDATE tasks SET status = 'pending', attempt = attempt - 1, lease_token = NULL,
                    lease_until = NULL, worker = NULL
                FROM v
                WHERE tasks.id = v.id AND tasks.lease_token = v.token AND tasks.status = 'running'
                RETURNING {TASKS_COLUMNS}"""
            rows = await self._fetch(sql, builtins.list(itertools.chain.from_iterable(chunk)))
            released.extend(row_task(row) for row in rows)
        if released:
            self._notify()
        return released

    async def expired_leases(self, *, limit: int) -> builtins.list[Task]:
        """Return running tasks whose lease ran out."""
        rows = await self._fetch(
            f"SELECT {COLUMNS} FROM tasks WHERE status = 'running' AND lease_until <= ? LIMIT ?",
            (time.time(), limit),
        )
        return [row_task(row) for row in rows]

    async def cancel(self, task_id: str) -> Task | None:
        """Cancel a waiting, pending or running task, and the unfinished runs of its periodic series."""
        rows = await self._fetch(
            f"""UPDATE tasks SET status = 'cancelled', finished_at = ?1, purge_at = ?1 + result_ttl,
                lease_until = NULL
            WHERE status IN {UNFINISHED_SQL}
                AND (id = ?2 OR series = (SELECT series FROM tasks WHERE id = ?2))
            RETURNING {COLUMNS}""",
            (time.time(), task_id),
        )
        named = [row for row in rows if row[0] == task_id]
        return row_task(named[0]) if named else await self.get(task_id)

    async def dependents(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Return the tasks depending on any of ``task_ids``, found through the dependency index."""
        found: dict[str, Task] = {}
        for chunk in chunks(task_ids, IDS_PER_STATEMENT):
            marks = ", ".join("?" * len(chunk))
            sql = (
                f"SELECT {COLUMNS} FROM tasks WHERE id IN (SELECT task_id FROM task_deps WHERE depends_on IN ({marks}))"
            )
            found.update((task.id, task) for task in map(row_task, await self._fetch(sql, chunk)))
        return builtins.list(found.values())

    async def move_dependents(self, moves: Sequence[DependencyMove]) -> builtins.list[Task]:
        """Apply the moves whose task is still in their source status, in one transaction (a hint if one may run)."""
        if not moves:
            return []
        for move in moves:
            check_transition(move.source, move.target)
        statements = [_move_statement(part, now=time.time()) for part in chunks(moves, CHUNK_ROWS)]
        if len(statements) == 1:
            rows = await self._fetch(*statements[0])
        else:
            async with self._immediate():
                rows = [row for statement in statements for row in await self._run(*statement)]
        moved = [row_task(row) for row in rows]
        if any(task.status is TaskStatus.PENDING for task in moved):
            self._notify()
        return moved

    async def requeue(self, task_id: str) -> Task | None:
        """Put a failed, cancelled or expired task back to pending, allowing one more attempt."""
        rows = await self._fetch(
            f"""UPDATE tasks SET status = 'pending', eta = ?1, finished_at = NULL, purge_at = NULL,
                retries = max(retries, attempt), lease_token = NULL, lease_until = NULL,
                expires_at = CASE WHEN expires_at IS NULL THEN NULL ELSE ?1 + (expires_at - created_at) END
            WHERE id = ?2 AND status IN {REQUEUEABLE_SQL} RETURNING {COLUMNS}""",
            (time.time(), task_id),
        )
        if not rows:
            return await self.get(task_id)
        self._notify()
        return row_task(rows[0])

    async def forget_cached(self, *, name: str | None = None) -> int:
        """Clear the cache key of the tasks that have one (named ``name``, or all); return how many."""
        rows = await self._fetch(
            "UPDATE tasks SET cache_key = NULL WHERE cache_key IS NOT NULL AND (?1 IS NULL OR name = ?1) RETURNING 1",
            (name,),
        )
        return len(rows)

    async def expire(self) -> builtins.list[Task]:
        """Move pending tasks past ``expires_at`` to expired."""
        rows = await self._fetch(
            f"""UPDATE tasks SET status = 'expired', finished_at = ?1, purge_at = ?1 + result_ttl
            WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= ?1
            RETURNING {COLUMNS}""",
            (time.time(),),
        )
        return [row_task(row) for row in rows]


def _move_statement(moves: Sequence[DependencyMove], *, now: float) -> tuple[str, builtins.list[Any]]:
    """Return the compare-and-set ``UPDATE`` of these dependency moves, from the clock ``now``."""
    params: builtins.list[Any] = [now]
    for move in moves:
        params += (move.task_id, move.source.value, move.target.value, encode_error(move.error))
    values = ", ".join(["(?, ?, ?, ?)"] * len(moves))
    sql = f"""
        WITH clock(now) AS (VALUES (?)), v(id, source, target, error) AS (VALUES {values})
        UPDATE tasks SET {move_assignments("clock.now")} FROM v, clock
        WHERE tasks.id = v.id AND tasks.status = v.source
        RETURNING {TASKS_COLUMNS}"""
    return sql, params
