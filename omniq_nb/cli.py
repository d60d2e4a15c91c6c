"""The ``omniq-nb`` command: ``worker``, ``workers``, ``list``, ``show``, ``purge``, ``check``.

Also ``python -m omniq_nb``.

Settings come from ``OMNIQ_*`` and YAML as everywhere; flags override them. This module
installs the only log handler of the package (stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import msgspec

from omniq_nb.config import WORKER_KINDS, Settings
from omniq_nb.core import AsyncOmniQ
from omniq_nb.errors import OmniQError
from omniq_nb.models import StoreHealth, Task, TaskStatus, WorkerInfo
from omniq_nb.schedule import duration
from omniq_nb.worker import AsyncWorkerPool, serve_until_signal
from omniq_nb.worker.signals import StopSignals

logger = logging.getLogger(__name__)

_LIST_COLUMNS = "{id:32}  {status:9}  {attempt:>7}  {queue:12}  {created:19}  {name}"
_WORKER_COLUMNS = "{id:8}  {kind:7}  {busy:>5}  {queues:16}  {where:24}  {started:19}  {seen:>5}  {serves}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
    """
    args = _parser().parse_args(argv)
    overrides = {"db_url": args.db_url, "log_level": getattr(args, "log_level", None)}
    try:
        settings = Settings.from_env(**overrides)
        _install_log_handler(settings)
        status: int = asyncio.run(args.run(settings, args))
        return status
    except OmniQError as exc:
        print(f"omniq-nb: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omniq-nb", description="Run and inspect omniq_nb task queues.")
    parser.add_argument("--db-url", help="store URL (default OMNIQ_DB_URL or sqlite:///.omniq/omniq.db)")
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="run a worker until SIGINT or SIGTERM")
    worker.add_argument("--db-url", default=argparse.SUPPRESS, help="store URL")
    worker.add_argument("--concurrency", "-c", type=int, help="tasks run at once (default OMNIQ_MAX_WORKERS)")
    worker.add_argument("--kind", choices=WORKER_KINDS, help="where sync tasks run (default OMNIQ_DEFAULT_WORKER)")
    worker.add_argument("--queue", "-q", action="append", dest="queues", help="a queue to serve (repeatable)")
    worker.add_argument("--lease", type=float, help="lease seconds (default OMNIQ_LEASE_SECONDS)")
    worker.add_argument("--name", help="worker name stored on claimed tasks")
    worker.add_argument(
        "--only-unowned",
        action="store_true",
        help="leave the tasks of live notebook kernels to their kernel's pool (default: serve every task)",
    )
    worker.add_argument("--log-level", default="INFO", help="log level (default INFO)")
    worker.set_defaults(run=_worker)

    workers = commands.add_parser("workers", help="list the live worker pools of the store (in kernels and standalone)")
    workers.add_argument("--db-url", default=argparse.SUPPRESS, help="store URL")
    workers.add_argument("--json", action="store_true", help="print the pools as a JSON array")
    workers.set_defaults(run=_workers)

    listing = commands.add_parser("list", help="list recent tasks, newest first")
    listing.add_argument("--db-url", default=argparse.SUPPRESS, help="store URL")
    listing.add_argument("--status", action="append", choices=[s.value for s in TaskStatus])
    listing.add_argument("--queue")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(run=_list)

    show = commands.add_parser("show", help="show one task")
    show.add_argument("--db-url", default=argparse.SUPPRESS, help="store URL")
    show.add_argument("task_id")
    show.set_defaults(run=_show)

    purge = commands.add_parser(
        "purge", help="delete finished tasks past their result_ttl (RESULT_TTL, default 7d), or by age"
    )
    purge.add_argument("--db-url", default=argparse.SUPPRESS, help="store URL")
    add_purge_arguments(purge)
    purge.set_defaults(run=_purge)

    check = commands.add_parser("check", help="report the store's health; exit status 1 on a problem")
    check.add_argument("--db-url", default=argparse.SUPPRESS, help="store URL")
    check.add_argument("--json", action="store_true", help="print the report as one JSON object")
    check.set_defaults(run=_check)
    return parser


def add_purge_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``purge`` (``--older-than``, ``--status``, ``--all``); ``%omniq purge`` takes the same.

    Args:
        parser: the ``purge`` command's parser.
    """
    parser.add_argument("--older-than", type=duration, metavar="AGE", help="finished over AGE ago: 90, 15m, 12h, 7d")
    parser.add_argument(
        "--status", action="append", choices=[s.value for s in TaskStatus if s.is_terminal], help="with --older-than"
    )
    parser.add_argument("--all", action="store_true", help="delete every task, running ones too")


async def _worker(settings: Settings, args: argparse.Namespace) -> int:
    with StopSignals() as caught:  # from the start: a signal while the store opens stops the worker at once
        async with AsyncOmniQ(settings=settings) as queue:
            pool = AsyncWorkerPool(
                queue,
                concurrency=args.concurrency,
                kind=args.kind,
                queues=args.queues,
                lease=args.lease,
                name=args.name,
                shared=not args.only_unowned,
            )
            await serve_until_signal(pool, signals=caught)
    return 0


async def _workers(settings: Settings, args: argparse.Namespace) -> int:
    async with AsyncOmniQ(settings=settings) as queue:
        pools = await queue.workers()
    print(msgspec.json.encode(pools).decode() if args.json else format_workers(pools))
    return 0


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    async with AsyncOmniQ(settings=settings) as queue:
        tasks = await queue.list(status=args.status, queue=args.queue, limit=args.limit)
    print(format_tasks(tasks))
    return 0


async def _show(settings: Settings, args: argparse.Namespace) -> int:
    async with AsyncOmniQ(settings=settings) as queue:
        task = (await queue.get(args.task_id)).task
        value = queue.serializer.loads(task.result) if task.result is not None else None
    print(format_task(task, value))
    return 0


async def _purge(settings: Settings, args: argparse.Namespace) -> int:
    async with AsyncOmniQ(settings=settings) as queue:
        report = await queue.purge_report(
            older_than=args.older_than, status=args.status, everything=args.all, command="omniq-nb purge"
        )
    print(report)
    return 0


async def _check(settings: Settings, args: argparse.Namespace) -> int:
    health = await AsyncOmniQ(settings=settings).check()  # never opened: creates and migrates nothing
    print(msgspec.json.encode(health).decode() if args.json else format_health(health))
    return 0 if health.ok else 1


def format_tasks(tasks: Sequence[Task]) -> str:
    """Return tasks as a text table: id, status, attempts, queue, created, name.

    Args:
        tasks: the snapshots to show.
    """
    lines = [
        _LIST_COLUMNS.format(id="ID", status="STATUS", attempt="ATTEMPT", queue="QUEUE", created="CREATED", name="NAME")
    ]
    for task in tasks:
        lines.append(
            _LIST_COLUMNS.format(
                id=task.id,
                status=task.status.value,
                attempt=f"{task.attempt}/{task.max_attempts}",
                queue=task.queue,
                created=_when(task.created_at),
                name=task.name,
            )
        )
    return "\n".join(lines)


def format_workers(pools: Sequence[WorkerInfo], *, mine: str | None = None) -> str:
    """Return worker pools as a text table, or say there is none.

    Columns: id, kind, busy slots, queues, host:pid, start, seconds since the last heartbeat,
    and what it serves (its kernel's notebook or session, or every task). A pool asked to stop
    is marked ``stopping``; the pool ``mine`` (an id) is marked ``*``.

    Args:
        pools: the live pools, as ``workers()`` returns them.
        mine: the id of the pool to mark as this process's own.
    """
    if not pools:
        return "no live worker pools in this store (start one with omniq-nb worker or %omniq workers start)"
    now = datetime.now(timezone.utc)
    header = {"busy": "BUSY", "queues": "QUEUES", "where": "HOST:PID", "started": "STARTED", "seen": "SEEN"}
    lines = [_WORKER_COLUMNS.format(id="ID", kind="KIND", serves="SERVES", **header)]
    for pool in pools:
        seen = pool.seen(now)
        marks = [" *" if pool.id == mine else "", " (stopping)" if pool.stop_requested else ""]
        lines.append(
            _WORKER_COLUMNS.format(
                id=pool.id,
                kind=pool.kind,
                busy=f"{pool.running}/{pool.concurrency}",
                queues=",".join(pool.queues),
                where=f"{pool.host}:{pool.pid}",
                started=_when(pool.started_at),
                seen="" if seen is None else f"{seen:.0f}s",
                serves=pool.serves + "".join(marks),
            )
        )
    return "\n".join(lines)


def format_task(task: Task, value: Any = None) -> str:
    """Return one task as text: its fields, its result (``value``) or its error and traceback.

    Args:
        task: the snapshot.
        value: the task's decoded result, when it succeeded.
    """
    fields = {
        "id": task.id,
        "name": task.name,
        "status": task.status.value,
        "queue": task.queue,
        "attempt": f"{task.attempt} of {task.max_attempts}",
        "priority": task.priority,
        "created": _when(task.created_at),
        "started": _when(task.started_at),
        "finished": _when(task.finished_at),
        "worker": task.worker or "",
        "progress": f"{task.progress:.0%}" + (f" {task.progress_message}" if task.progress_message else ""),
    }
    lines = _aligned(fields.items())
    if task.status is TaskStatus.SUCCEEDED:
        lines.append(f"{'result':9} {value!r}")
    if task.error is not None:
        lines.append(f"{'error':9} {task.error.type}: {task.error.message}")
        if task.error.traceback:
            lines.append(task.error.traceback.rstrip())
    return "\n".join(lines)


def format_health(health: StoreHealth) -> str:
    """Return a store's health report as text: one line per fact, then ``ok`` or one line per problem.

    Args:
        health: what ``check()`` found.
    """
    fields = {
        "store": health.url,
        "integrity": "ok" if health.integrity == "ok" else "FAILED",
        "schema": "none" if health.schema_version is None else f"version {health.schema_version}",
        "wal": "none" if health.wal_bytes is None else f"{health.wal_bytes} bytes",
        "tasks": ", ".join(f"{status.value} {n}" for status, n in health.counts.items()) or "unknown",
        "leases": f"{health.expired_leases} expired, {health.stale_leases} of them over {health.stale_after:g} s ago",
    }
    problems = _aligned(("problem", problem) for problem in health.problems)
    return "\n".join(_aligned(fields.items()) + (problems or ["ok"]))


def _aligned(fields: Iterable[tuple[str, Any]]) -> list[str]:
    """Return ``key value`` lines with the values in one column."""
    return [f"{key:9} {text}" for key, text in fields]


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _install_log_handler(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("omniq_nb")
    root.addHandler(handler)
    root.setLevel(settings.log_level)
