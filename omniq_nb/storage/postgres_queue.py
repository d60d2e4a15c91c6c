"""The PostgreSQL store's ``QueueStore`` role: every task transition, each one atomic.

Claims take many ready tasks in one ``UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED)``,
so concurrent claimers on any number of machines pass over each other's rows instead of
waiting. Outcomes of many attempts are one ``UPDATE … FROM unnest(…)``. Every write after
a claim is fenced on the lease token and ``status = 'running'``. Writers that make tasks
ready send one ``NOTIFY`` from the same statement (``postgres_statements.notifying``).
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from omniq_nb.models import DependencyMove, Task, TaskResult, TaskStatus, check_transition
from omniq_nb.storage import lifecycle
from omniq_nb.storage.postgres_results import PostgresResults
from omniq_nb.storage.postgres_schema import CLOCK_SQL, NOW_SQL
from omniq_nb.storage.postgres_statements import (
    AFFINITY_SQL,
    batch_statement,
    insert_statement,
    link_statement,
    notifying,
)
from omniq_nb.storage.rows import COLUMNS, dependency_rows, encode_error, new_task_row, row_task, sort_claimed
from omniq_nb.storage.sql_text import REQUEUEABLE_SQL, TASKS_COLUMNS, UNFINISHED_SQL, move_assignments

__all__ = ["PostgresQueue"]

_TOKEN = "replace(gen_random_uuid()::text, '-', '')"
_SKIP_KINDS_SQL = " AND (kind IS NULL OR NOT kind = ANY(%(skip_kinds)s::text[]))"
_SETTLE = f"""
    WITH v AS (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[], %s::text[], %s::float8[],
        %s::boolean[]) AS v(id, token, status, result, error, eta, rescue))
    UPDATE tasks SET status = v.status, result = v.result, error = v.error,
        eta = coalesce(v.eta, tasks.eta), lease_token = NULL, lease_until = NULL,
        finished_at = CASE WHEN v.status = 'pending' THEN NULL ELSE {NOW_SQL} END,
        purge_at = CASE WHEN v.status <> 'pending' THEN {NOW_SQL} + tasks.result_ttl END,
        progress = CASE WHEN v.status = 'succeeded' THEN 1.0 ELSE tasks.progress END
    FROM v
    WHERE tasks.id = v.id AND tasks.lease_token = v.token AND tasks.status = 'running'
        AND (NOT v.rescue OR tasks.lease_until <= {NOW_SQL})
    RETURNING {TASKS_COLUMNS}"""


# an upsert that locks a kept row (DO NOTHING would not), so a purge of everything deleting it waits for this batch
_KEEP_CALLABLE = (
    "INSERT INTO callables (digest, body) VALUES (%s, %s) ON CONFLICT (digest) DO UPDATE SET digest = EXCLUDED.digest"
)


class PostgresQueue(PostgresResults):
    """Insert, claim, renew, progress, settle, release, cancel, move dependents, requeue, expire, forget_cached."""

    async def insert(self, tasks: Iterable[Task]) -> None:
        """Add new tasks, with the wake-up hint if one is pending: one statement (one round trip) without dependencies.

        Their dependency index rows go in the same transaction.
        """
        batch = builtins.list(tasks)
        if batch:
            pending = any(task.status is TaskStatus.PENDING for task in batch)
            await self._insert(insert_statement(batch), dependency_rows(batch), hint=pending)

    async def insert_many(
        self, template: Task, entries: Iterable[tuple[str, bytes]], kept: tuple[str, bytes] | None = None
    ) -> None:
        """Add tasks that differ from ``template`` only by id and payload, with one statement (and the hint).

        The shared values are bound once and only the ids and payloads as two arrays; ``kept``
        goes in the same transaction.
        """
        batch = builtins.list(entries)
        if batch:
            links = [(task_id, on) for task_id, _ in batch for on in template.depends_on]
            pending = template.status is TaskStatus.PENDING
            await self._insert(batch_statement(new_task_row(template), batch), links, hint=pending, kept=kept)

    async def kept_callables(self, digests: Collection[str]) -> dict[str, bytes]:
        """Return the kept callables of these digests (those not kept are left out)."""
        rows = await self._fetch("SELECT digest, body FROM callables WHERE digest = ANY(%s::text[])", (list(digests),))
        return {digest: bytes(body) for digest, body in rows}

    async def _insert(
        self,
        statement: tuple[str, builtins.list[Any]],
        links: builtins.list[tuple[str, str]],
        *,
        hint: bool,
        kept: tuple[str, bytes] | None = None,
    ) -> None:
        """Run an insert of new tasks (sending the wake-up hint if asked), their dependency index rows, ``kept``."""
        sql, params = statement
        if hint:
            sql, params = notifying(sql), [*params, self._channel]
        if not links and kept is None:
            await self._fetch(sql, params)
            return
        async with self._transaction() as conn:
            if kept is not None:
                await self._run(conn, _KEEP_CALLABLE, kept)
            await self._run(conn, sql, params)
            if links:
                await self._run(conn, *link_statement(links))

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
        """Claim up to ``limit`` ready tasks in one ``UPDATE``; rows locked by other claims are skipped.

        Each queue is read on its own (``LATERAL``) so that the claim index yields rows in claim
        order and the scan stops after ``limit`` of them: with ``queue = ANY(...)`` PostgreSQL
        sorts every pending row of the queues on each claim. With several queues, rows locked
        for one queue but outranked by another's stay locked until the claim commits, unclaimed.

        Readiness is judged on the server's clock at the statement's start; the lease and
        ``started_at`` run from the clock after the rows are locked, so a claim that waited
        still gets its whole lease.
        """
        filters = (AFFINITY_SQL if unowned_only else "") + (_SKIP_KINDS_SQL if skip_kinds else "")
        sql = f"""
            WITH ready AS MATERIALIZED (
                SELECT r.seq FROM unnest(%(queues)s::text[]) AS q(name) CROSS JOIN LATERAL (
                    SELECT seq, priority, eta FROM tasks
                    WHERE status = 'pending' AND queue = q.name AND eta <= {NOW_SQL}
                        AND (expires_at IS NULL OR expires_at > {NOW_SQL}){filters}
                    ORDER BY priority DESC, eta, seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS r
                ORDER BY r.priority DESC, r.eta, r.seq LIMIT %(limit)s)
            UPDATE tasks SET status = 'running', attempt = attempt + 1,
                lease_token = {_TOKEN}, run_id = left({_TOKEN}, 16),
                lease_until = {CLOCK_SQL} + %(lease)s::float8, started_at = {CLOCK_SQL}, worker = %(worker)s::text,
                progress = 0, progress_done = 0, progress_total = NULL, progress_message = NULL
            FROM ready WHERE tasks.seq = ready.seq
            RETURNING {TASKS_COLUMNS}, tasks.seq"""
        params = {"queues": builtins.list(queues), "limit": limit, "lease": lease, "worker": worker, "owner": owner}
        params["skip_kinds"] = builtins.list(skip_kinds)
        rows = await self._fetch_on_lane("claims", sql, params)
        sort_claimed(rows)
        return [row_task(row) for row in rows]

    async def renew(self, *, leases: Mapping[str, str], lease: float) -> set[str]:
        """Extend the leases still held (from the clock after the rows are locked); return their ids."""
        if not leases:
            return set()
        rows = await self._fetch(
            f"""UPDATE tasks SET lease_until = {CLOCK_SQL} + %s::float8
            FROM unnest(%s::text[], %s::text[]) AS v(id, token)
            WHERE tasks.id = v.id AND tasks.lease_token = v.token AND tasks.status = 'running'
            RETURNING tasks.id""",
            (lease, builtins.list(leases), builtins.list(leases.values())),
        )
        return {row[0] for row in rows}

    async def progress(
        self, *, task_id: str, lease_token: str, done: float, total: float | None, message: str | None
    ) -> bool:
        """Store progress of a running task, fenced on its lease (a trigger records the event)."""
        rows = await self._fetch(
            """UPDATE tasks SET progress_done = %s::float8, progress_total = %s::float8,
                progress_message = %s::text, progress = %s::float8
            WHERE id = %s::text AND lease_token = %s::text AND status = 'running' RETURNING id""",
            (done, total, message, lifecycle.progress_fraction(done, total), task_id, lease_token),
        )
        return bool(rows)

    async def settle(
        self, results: Sequence[TaskResult], *, successors: Mapping[str, Task] = {}
    ) -> builtins.list[Task]:
        """Apply many attempt outcomes with one statement, fenced on each lease.

        With ``successors``, the accepted tasks' next runs are inserted in the same transaction,
        under a per-series advisory lock so two settles of one series cannot both fork it.
        """
        lifecycle.check_outcomes(results)
        if not results:
            return []
        params = _settle_params(results)
        if not successors:
            return [row_task(row) for row in await self._fetch_on_lane("outcomes", _SETTLE, params)]
        async with self._transaction() as conn:
            accepted = [row_task(row) for row in await self._run(conn, _SETTLE, params)]
            following = [successors[t.id] for t in accepted if t.id in successors]
            if following:
                await self._insert_successors(conn, following)
        return accepted

    async def _insert_successors(self, conn: Any, following: builtins.list[Task]) -> None:
        """Insert the next runs whose series has no other unfinished run (one per series)."""
        series = sorted({task.series for task in following if task.series is not None})
        await self._run(
            conn,
            "SELECT pg_advisory_xact_lock(hashtext('omniq.series.' || %s || '.' || s)) FROM unnest(%s::text[]) AS s",
            (self.schema, series),
        )
        busy = await self._run(
            conn,
            f"SELECT DISTINCT series FROM tasks WHERE series = ANY(%s::text[]) AND status IN {UNFINISHED_SQL}",
            (series,),
        )
        taken = {row[0] for row in busy}
        following = [task for task in following if task.series not in taken]
        if following:
            await self._run(conn, *insert_statement(following))
        if links := dependency_rows(following):
            await self._run(conn, *link_statement(links))

    async def release(self, *, leases: Mapping[str, str]) -> builtins.list[Task]:
        """Hand running tasks back to pending, giving back the attempts their claims used (one statement, a hint)."""
        if not leases:
            return []
        rows = await self._fetch(
            notifying(
                """UPDATE tasks SET status = 'pending', attempt = attempt - 1, lease_token = NULL,
                    lease_until = NULL, worker = NULL
                FROM unnest(%s::text[], %s::text[]) AS v(id, token)
                WHERE tasks.id = v.id AND tasks.lease_token = v.token AND tasks.status = 'running'""",
                returning=TASKS_COLUMNS,
            ),
            (builtins.list(leases), builtins.list(leases.values()), self._channel),
        )
        return [row_task(row) for row in rows]

    async def expired_leases(self, *, limit: int) -> builtins.list[Task]:
        """Return running tasks whose lease ran out on the server's clock."""
        rows = await self._fetch(
            f"SELECT {COLUMNS} FROM tasks WHERE status = 'running' AND lease_until <= {NOW_SQL} LIMIT %s", (limit,)
        )
        return [row_task(row) for row in rows]

    async def cancel(self, task_id: str) -> Task | None:
        """Cancel a waiting, pending or running task, and the unfinished runs of its periodic series."""
        rows = await self._fetch(
            f"""UPDATE tasks SET status = 'cancelled', finished_at = {NOW_SQL},
                purge_at = {NOW_SQL} + result_ttl, lease_until = NULL
            WHERE status IN {UNFINISHED_SQL}
                AND (id = %(id)s::text OR series = (SELECT series FROM tasks WHERE id = %(id)s::text))
            RETURNING {COLUMNS}""",
            {"id": task_id},
        )
        named = [row for row in rows if row[0] == task_id]
        return row_task(named[0]) if named else await self.get(task_id)

    async def dependents(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """Return the tasks depending on any of ``task_ids``, found through the dependency index (one statement)."""
        if not task_ids:
            return []
        rows = await self._fetch_on_lane(
            "dependents",
            f"""SELECT {COLUMNS} FROM tasks
            WHERE id IN (SELECT task_id FROM task_deps WHERE depends_on = ANY(%s::text[]))""",
            (builtins.list(task_ids),),
        )
        return [row_task(row) for row in rows]

    async def move_dependents(self, moves: Sequence[DependencyMove]) -> builtins.list[Task]:
        """Apply the moves whose task is still in their source status, with one statement (a hint if one may run).

        The moves go in task id order, the same in every process, so that two processes moving
        overlapping sets meet their rows in the same order.
        """
        if not moves:
            return []
        for move in moves:
            check_transition(move.source, move.target)
        ordered = sorted(moves, key=lambda move: move.task_id)
        sql = f"""UPDATE tasks SET {move_assignments(NOW_SQL)}
            FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) AS v(id, source, target, error)
            WHERE tasks.id = v.id AND tasks.status = v.source"""
        params: builtins.list[Any] = [
            [move.task_id for move in ordered],
            [move.source.value for move in ordered],
            [move.target.value for move in ordered],
            [encode_error(move.error) for move in ordered],
        ]
        if any(move.target is TaskStatus.PENDING for move in ordered):
            rows = await self._fetch(notifying(sql, returning=TASKS_COLUMNS), [*params, self._channel])
        else:
            rows = await self._fetch(f"{sql} RETURNING {TASKS_COLUMNS}", params)
        return [row_task(row) for row in rows]

    async def requeue(self, task_id: str) -> Task | None:
        """Put a failed, cancelled or expired task back to pending, allowing one more attempt (with the hint)."""
        rows = await self._fetch(
            notifying(
                f"""UPDATE tasks SET status = 'pending', eta = {NOW_SQL}, finished_at = NULL, purge_at = NULL,
                    retries = greatest(retries, attempt), lease_token = NULL, lease_until = NULL,
                    expires_at = CASE WHEN expires_at IS NULL THEN NULL
                        ELSE {NOW_SQL} + (expires_at - created_at) END
                WHERE id = %s::text AND status IN {REQUEUEABLE_SQL}""",
                returning=COLUMNS,
            ),
            (task_id, self._channel),
        )
        return row_task(rows[0]) if rows else await self.get(task_id)

    async def expire(self) -> builtins.list[Task]:
        """Move pending tasks past ``expires_at`` to expired."""
        rows = await self._fetch(
            f"""UPDATE tasks SET status = 'expired', finished_at = {NOW_SQL}, purge_at = {NOW_SQL} + result_ttl
            WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= {NOW_SQL}
            RETURNING {COLUMNS}"""
        )
        return [row_task(row) for row in rows]

    async def forget_cached(self, *, name: str | None = None) -> int:
        """Clear the cache keys of the tasks that have one (named ``name``, or all), found by the cache index."""
        named = "" if name is None else " AND name = %s::text"
        rows = await self._fetch(
            f"WITH f AS (UPDATE tasks SET cache_key = NULL WHERE cache_key IS NOT NULL{named} RETURNING 1) "
            "SELECT count(*) FROM f",
            () if name is None else (name,),
        )
        return int(rows[0][0])


def _settle_params(results: Sequence[TaskResult]) -> builtins.list[Any]:
    """Return the seven column arrays of ``_SETTLE`` for ``results``."""
    return [
        [r.task_id for r in results],
        [r.lease_token for r in results],
        [r.status.value for r in results],
        [r.result for r in results],
        [encode_error(r.error) for r in results],
        [r.eta.timestamp() if r.eta is not None else None for r in results],
        [r.rescue for r in results],
    ]
