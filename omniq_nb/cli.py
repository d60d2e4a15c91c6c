"""The ``omniq-nb`` command: ``worker``, ``workers``, ``list``, ``show``, ``purge``, ``check``.

Also ``python -m omniq_nb``.

Settings come from ``OMNIQ_*`` and YAML as everywhere; flags override them. This module
installs the only log handler of the package (stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from omniq_nb.config import WORKER_KINDS, Settings
from omniq_nb.core import AsyncOmniQ
from omniq_nb.errors import OmniQError, StorageError
from omniq_nb.models import TaskStatus
from omniq_nb.storage.file_base import FileLayout, directory_of
from omniq_nb.storage.sqlite_file import sqlite_path
from omniq_nb.terminal import (
    OUTPUT_DROPPED,
    add_purge_arguments,
    format_health,
    format_task,
    format_tasks,
    format_workers,
    plain_output,
)
from omniq_nb.worker import AsyncWorkerPool, serve_until_signal
from omniq_nb.worker.signals import StopSignals

logger = logging.getLogger(__name__)

_OUTPUT_PAGE = 1000  # kept output chunks read at a time by show --output


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
    """
    args = _parser().parse_args(argv)
    overrides = {name: getattr(args, name) for name in _STORE_URLS}
    overrides["log_level"] = getattr(args, "log_level", None)
    try:
        settings = Settings.from_env(**overrides)
        _install_log_handler(settings)
        status: int = asyncio.run(args.run(settings, args))
        return status
    except (OmniQError, ValueError) as exc:  # bad input or a store problem: one line, no traceback
        print(f"omniq-nb: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly, as a program killed by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout at exit
        return 141


def _missing(settings: Settings) -> str | None:
    """Say so when ``settings.db_url`` is a local store (a SQLite file, a store folder) that does not exist.

    The inspecting commands then answer as for an empty store and create nothing: opening
    the store would create it, at what is often a mistyped path.
    """
    scheme = urlsplit(settings.db_url).scheme
    try:
        if scheme == "sqlite":
            path = sqlite_path(settings.db_url)
            missing = path is not None and not Path(path).exists()
        elif scheme == "file":
            missing = not FileLayout(directory_of(settings.db_url)).exists()
        else:
            return None
    except StorageError:
        return None  # opening says what is wrong with the URL
    return f"no store at {settings.db_url} (nothing was created; a queue or a worker creates it)" if missing else None


_STORE_URLS = {
    "db_url": "the queue's store URL (default OMNIQ_DB_URL or sqlite:///.omniq/omniq.db)",
    "result_url": "a store of its own for results (default OMNIQ_RESULT_URL, else the queue's store)",
    "events_url": "a store of its own for events (default OMNIQ_EVENTS_URL, else the queue's store)",
}


def _store_arguments(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """Add ``--db-url``, ``--result-url`` and ``--events-url``, before or after the command name."""
    for name, help_text in _STORE_URLS.items():
        flag = "--" + name.replace("_", "-")
        if top:
            parser.add_argument(flag, help=help_text)
        else:
            parser.add_argument(flag, default=argparse.SUPPRESS, help=help_text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omniq-nb", description="Run and inspect omniq_nb task queues.")
    _store_arguments(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="run a worker until SIGINT or SIGTERM")
    _store_arguments(worker)
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
    _store_arguments(workers)
    workers.add_argument("--json", action="store_true", help="print the pools as a JSON array")
    workers.set_defaults(run=_workers)

    listing = commands.add_parser("list", help="list recent tasks, newest first")
    _store_arguments(listing)
    listing.add_argument("--status", action="append", choices=[s.value for s in TaskStatus])
    listing.add_argument("--queue")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(run=_list)

    show = commands.add_parser("show", help="show one task")
    _store_arguments(show)
    show.add_argument("task_id")
    show.add_argument("--output", action="store_true", help="also print what the task printed or displayed (kept)")
    show.set_defaults(run=_show)

    purge = commands.add_parser(
        "purge", help="delete finished tasks past their result_ttl (RESULT_TTL, default 7d), or by age"
    )
    _store_arguments(purge)
    add_purge_arguments(purge)
    purge.set_defaults(run=_purge)

    check = commands.add_parser("check", help="report the store's health; exit status 1 on a problem")
    _store_arguments(check)
    check.add_argument("--json", action="store_true", help="print the report as one JSON object")
    check.set_defaults(run=_check)
    return parser


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
    if missing := _missing(settings):
        print(missing, file=sys.stderr)
        pools = []
    else:
        async with AsyncOmniQ(settings=settings) as queue:
            pools = await queue.workers()
    print(msgspec.json.encode(pools).decode() if args.json else format_workers(pools))
    return 0


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ValueError(f"--limit {args.limit}: list at least 1 task")
    if missing := _missing(settings):
        print(missing, file=sys.stderr)
        tasks = []
    else:
        async with AsyncOmniQ(settings=settings) as queue:
            tasks = await queue.list(status=args.status, queue=args.queue, limit=args.limit)
    print(format_tasks(tasks))
    return 0


async def _show(settings: Settings, args: argparse.Namespace) -> int:
    if missing := _missing(settings):
        raise StorageError(f"no task with id {args.task_id!r}: {missing}")
    async with AsyncOmniQ(settings=settings) as queue:
        task = (await queue.get(args.task_id)).task
        value = queue.serializer.loads(task.result) if task.result is not None else None
        stats = None if task.status.is_terminal else await queue.stats(task.name)
        dependents = [t.id for t in await queue.dependents(task.id)]
        print(format_task(task, value, stats, dependents))
        if args.output:
            await _print_output(queue, task.id)
    return 0


async def _print_output(queue: AsyncOmniQ, task_id: str) -> None:
    """Print a task's kept output, page by page: stdout and stderr to theirs, a display as its text."""
    page = await queue.output(task_id, limit=_OUTPUT_PAGE)
    print("output:" if page.chunks else "output: none kept")
    if page.dropped:
        print(OUTPUT_DROPPED)
    while True:
        for stream, text in plain_output(page.chunks):
            (sys.stderr if stream == "stderr" else sys.stdout).write(text)
        if len(page.chunks) < _OUTPUT_PAGE:
            break
        page = await queue.output(task_id, after=page.chunks[-1].seq, limit=_OUTPUT_PAGE)
    sys.stdout.flush()


async def _purge(settings: Settings, args: argparse.Namespace) -> int:
    if missing := _missing(settings):
        print(f"nothing purged: {missing}")
        return 0
    async with AsyncOmniQ(settings=settings) as queue:
        report = await queue.purge_report(
            older_than=args.older_than,
            status=args.status,
            everything=args.all,
            command="omniq-nb purge",
            cache=args.cache,
        )
    print(report)
    return 0


async def _check(settings: Settings, args: argparse.Namespace) -> int:
    health = await AsyncOmniQ(settings=settings).check()  # never opened: creates and migrates nothing
    print(msgspec.json.encode(health).decode() if args.json else format_health(health))
    return 0 if health.ok else 1


def _install_log_handler(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("omniq_nb")
    root.addHandler(handler)
    root.setLevel(settings.log_level)
