"""``%%omniq enqueue`` and the ``%omniq`` line magics: parse, then call the queue; no queue logic.

Usage::

    %%omniq enqueue [--as NAME] [--retries N] [--timeout D] [--queue Q] [--priority P]
                    [--kind thread|process|async] [--delay D] [--ttl D|none] [--result-ttl D|none]
                    [--interval D] [--cron EXPR] [--at-most-once] [--shared] [--name TEXT]
                    [--after NAMES] [--run-on success|any|failure] [--cache] [--cache-ttl D]
    <cell code: names it reads are captured now (a task handle among them: the cell waits for
    that task and reads its result); its last expression is the task's result; --cache: the
    same code with the same values of the names it reads reuses a stored result at once>
    (D, a duration: seconds, or 90s, 15m, 12h, 7d; a flag left out takes its setting, and
    --ttl none / --result-ttl none mean no limit, whatever TASK_TTL / RESULT_TTL say)

    %omniq workers start [-n N] [--kind thread|process|async] [--shared]   (replaces a running pool)
    %omniq workers status                (every live pool of the store, * marks this kernel's)
    %omniq workers stop [ID]             (this kernel's pool, or asks pool ID to drain and stop)
    %omniq list [--status S] [--queue Q] [--limit N]
    %omniq show ID
    %omniq cancel ID
    %omniq retry ID
    %omniq purge [--older-than AGE] [--status S] [--all] [--cache]
                                         (--cache: forget cached results, tasks stay;
                                         no flags: finished tasks past their result_ttl,
                                         RESULT_TTL default 7d; AGE: seconds, or 90s, 15m, 12h, 7d)
    %omniq dashboard                     (live tables of the workers and recent tasks, with actions)
    %omniq config [KEY=VALUE]            (the notebook's settings: interrupt=wait|cancel, keepalive=SECONDS|none,
                                         output_limit=SIZE (1MB, 0: keep none), output_lines=N)
    %omniq attach [--since D | --all]    (in a new kernel: the tasks earlier kernels of this notebook
                                         launched, as one group; binds their --as names again;
                                         unfinished ones, and finished ones of the last 24h, or D;
                                         --all: of any time)
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from omniq_nb.config import WORKER_KINDS
from omniq_nb.errors import ConfigError, OmniQError, SerializationError
from omniq_nb.handles import GroupHandle, TaskHandle
from omniq_nb.models import RUN_ON, TaskStatus
from omniq_nb.notebook.attach import DEFAULT_SINCE, attach, nothing_found
from omniq_nb.notebook.cells import capture, cell_key, run_cell
from omniq_nb.notebook.origin import bound_to
from omniq_nb.notebook.runner import NOTEBOOK_SETTINGS, KernelRunner
from omniq_nb.notebook.widgets import Dashboard
from omniq_nb.options import OPTION_NAMES
from omniq_nb.schedule import duration
from omniq_nb.terminal import add_purge_arguments, format_task, format_tasks, format_workers


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one-line usage errors; it never exits."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or self.format_usage())


@magics_class
class OmniQMagics(Magics):
    """The ``%omniq`` / ``%%omniq`` magics of omniq_nb."""

    def __init__(self, shell: Any, runner: KernelRunner) -> None:
        super().__init__(shell)
        self.runner = runner
        self._user: Any = shell

    @line_cell_magic
    def omniq(self, line: str, cell: str | None = None) -> Any:
        """Run notebook code as background tasks and manage them.

        ::

            %%omniq enqueue [--as NAME] [--retries N] [--timeout D] [--queue Q] [--priority P]
                            [--kind thread|process|async] [--delay D] [--ttl D|none]
                            [--result-ttl D|none] [--interval D] [--cron EXPR] [--at-most-once]
                            [--shared] [--name TEXT] [--after NAMES] [--run-on success|any|failure]
                            [--cache] [--cache-ttl D]
            <cell code>          names it reads are captured now; its last expression is the result;
                                 a task handle it reads (or --after names) makes it wait for that task;
                                 --cache: the same code and values reuse a stored result at once
                                 D: seconds, or 90s, 15m, 12h, 7d; a flag left out takes its
                                 setting; --ttl none / --result-ttl none: no limit

            %omniq workers start [-n N] [--kind thread|process|async] [--shared]
                                 replaces a running pool; --shared: also run other kernels' tasks
            %omniq workers status
                                 every live pool of the store (* marks this kernel's)
            %omniq workers stop [ID]
                                 this kernel's pool, or asks pool ID (any process) to drain and stop
            %omniq list [--status S] [--queue Q] [--limit N]
            %omniq show ID
            %omniq cancel ID
            %omniq retry ID
            %omniq purge [--older-than AGE] [--status S] [--all] [--cache]
                                 no flags: finished tasks past their result_ttl (RESULT_TTL, 7d
                                 unless set); --older-than AGE: also those finished over AGE ago
                                 (AGE: seconds, or 90s, 15m, 12h, 7d; 0: all finished, --status
                                 narrows); --all: every task, running ones too
            %omniq dashboard                     live tables of the workers and recent tasks, with actions
            %omniq config [KEY=VALUE]
                                 no argument: print the notebook's settings; KEY=VALUE sets one:
                                 interrupt=wait|cancel (cancel: a kernel interrupt also cancels the
                                 cell's unfinished tasks), keepalive=SECONDS|none (activity signals
                                 while the pool runs tasks, so the server does not cull the kernel),
                                 output_limit=SIZE (a task's kept output: 1MB, 512KB, 0 keeps none),
                                 output_lines=N (and at most N lines)
            %omniq attach [--since D | --all]
                                 in a new kernel: the tasks earlier kernels of this notebook launched
                                 (unfinished ones, and finished ones of the last 24h, or D, or
                                 --all: of any time), as one group view; binds each --as NAME to
                                 its newest task again
        """
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%omniq: {exc}") from None
        if not words:
            raise UsageError(
                "%omniq: say what to do: enqueue (as %%omniq), workers, list, show, cancel, retry, purge, dashboard, "
                "config, attach"
            )
        command, rest = words[0], words[1:]
        if command == "enqueue":
            if cell is None:
                raise UsageError("enqueue is a cell magic: put %%omniq enqueue on the first line of the cell")
            return self._enqueue(rest, cell)
        handler = getattr(self, f"_{command}", None)
        if handler is None or command == "enqueue":
            raise UsageError(
                f"%omniq: unknown command {command!r}; "
                "use workers, list, show, cancel, retry, purge, dashboard, config or attach"
            )
        try:
            return handler(rest)
        except OmniQError as exc:
            raise UsageError(str(exc).splitlines()[0]) from None

    def _enqueue(self, words: list[str], cell: str) -> TaskHandle:
        args = _enqueue_parser().parse_args(words)
        options = {key: value for key, value in vars(args).items() if key in OPTION_NAMES}
        options["name"] = args.name or (f"cell {args.bind}" if args.bind else "notebook cell")
        if options.get("cache") or "cache_ttl" in options:  # the key: the code and the values it reads
            options["cache_key"] = cell_key
        if "after" in options:  # names of variables holding handles, or task ids
            options["after"] = [self._user.user_ns.get(name, name) for name in options["after"]]
        # the shell counts this cell already; the kernel replies with (and the prompt shows) one less
        filename = f"<omniq cell {self._user.execution_count - 1}>"
        try:
            namespace = capture(cell, self._user.user_ns)
        except SyntaxError as exc:
            raise UsageError(f"the cell does not parse: {exc}") from None
        try:
            with bound_to(args.bind) if args.bind else contextlib.nullcontext():
                handle = self.runner.queue.enqueue_call(run_cell, args=(cell, filename, namespace), **options)
        except SerializationError as exc:
            raise UsageError(str(exc).replace("keyword argument", "variable")) from None
        except (TypeError, ValueError) as exc:
            raise UsageError(f"%%omniq enqueue: {exc}") from None
        if args.bind:
            self._user.user_ns[args.bind] = handle
        return handle

    def _workers(self, words: list[str]) -> None:
        args = _workers_parser().parse_args(words)
        if args.id is not None and args.action != "stop":
            raise UsageError(f"%omniq workers {args.action} takes no id (only stop does: %omniq workers stop ID)")
        pool = self.runner.pool
        if args.action == "start":
            try:
                started = self.runner.start_pool(concurrency=args.n, kind=args.kind, shared=args.shared)
            except ValueError as exc:
                raise UsageError(f"%omniq workers start: {exc}") from None
            print(f"started {started.concurrency} {started.kind} workers ({started.id}, {started.name})")
        elif args.action == "stop" and (args.id is None or (pool is not None and args.id == pool.id)):
            self.runner.stop_pool()
            print("workers stopped")
        elif args.action == "stop":
            if not self.runner.queue.stop_worker(args.id):
                raise UsageError(f"no live worker pool with id {args.id!r}; %omniq workers status lists them")
            print(f"asked worker pool {args.id} to drain and stop (it does so within a few seconds)")
        else:
            if pool is None or not pool.running:
                print("no workers running in this kernel (start them with %omniq workers start)")
            else:
                print(f"{pool.concurrency} {pool.kind} workers, {pool.busy} busy, queues {', '.join(pool.queues)}")
            print(format_workers(self.runner.queue.workers(), mine=pool.id if pool is not None else None))

    def _list(self, words: list[str]) -> None:
        args = _list_parser().parse_args(words)
        print(format_tasks(self.runner.queue.list(status=args.status, queue=args.queue, limit=args.limit)))

    def _show(self, words: list[str]) -> None:
        task_id = _one_id("show", words)
        handle = self.runner.queue.get(task_id)
        value = self.runner.core.serializer.loads(handle.task.result) if handle.task.result else None
        stats = None if handle.task.status.is_terminal else self.runner.queue.stats(handle.task.name)
        dependents = [task.id for task in self.runner.queue.dependents(task_id)]
        print(format_task(handle.task, value, stats, dependents))

    def _cancel(self, words: list[str]) -> None:
        task_id = _one_id("cancel", words)
        if self.runner.queue.cancel(task_id):
            print(f"cancelled {task_id}")
        else:
            print(f"{task_id} had already finished ({self.runner.queue.get(task_id).status})")

    def _dashboard(self, words: list[str]) -> Dashboard:
        if words:
            raise UsageError("%omniq dashboard takes no arguments")
        return self.runner.dashboard()

    def _config(self, words: list[str]) -> None:
        if len(words) > 1 or (words and "=" not in words[0]):
            raise UsageError("%omniq config takes nothing or one KEY=VALUE, e.g. %omniq config interrupt=cancel")
        if words:
            key, _, value = words[0].partition("=")
            name = key.strip().lower()
            if name not in NOTEBOOK_SETTINGS:
                raise UsageError(
                    f"%omniq config: unknown setting {key!r}; the settings here are {', '.join(NOTEBOOK_SETTINGS)}"
                )
            try:
                self.runner.configure(**{name: value})
            except ConfigError as exc:
                raise UsageError(f"%omniq config: {exc}") from None
            shown: tuple[str, ...] = (name,)
        else:
            shown = NOTEBOOK_SETTINGS
        settings = self.runner.core.settings
        for name in shown:
            print(f"{name}={_setting_text(getattr(settings, name))}")

    def _retry(self, words: list[str]) -> TaskHandle:
        return self.runner.queue.retry(_one_id("retry", words))

    def _attach(self, words: list[str]) -> GroupHandle | None:
        args = _attach_parser().parse_args(words)
        since = None if args.all else (args.since if args.since is not None else DEFAULT_SINCE)
        here = self.runner.outputs.here
        found = self.runner.bridge.call(attach, self.runner.core, here, self._user.user_ns, since=since)
        if found is None:
            print(nothing_found(here, since))
            return None
        print(found.summary())
        return found.group

    def _purge(self, words: list[str]) -> None:
        args = _purge_parser().parse_args(words)
        print(
            self.runner.queue.purge_report(
                older_than=args.older_than,
                status=args.status,
                everything=args.all,
                command="%omniq purge",
                cache=args.cache,
            )
        )


def _enqueue_parser() -> _Parser:
    # flags left out stay out of the options, so the task takes its settings for them
    parser = _Parser(prog="%%omniq enqueue", add_help=False, argument_default=argparse.SUPPRESS)
    parser.add_argument("--as", dest="bind", metavar="NAME", default=None, help="bind the task's handle to NAME")
    parser.add_argument("--retries", type=int)
    parser.add_argument("--timeout", type=duration)
    parser.add_argument("--queue")
    parser.add_argument("--priority", type=int)
    parser.add_argument("--kind", choices=WORKER_KINDS)
    parser.add_argument("--delay", type=duration)
    parser.add_argument("--ttl", type=_limit)
    parser.add_argument("--result-ttl", type=_limit)
    parser.add_argument("--interval", type=duration)
    parser.add_argument("--cron")
    parser.add_argument("--at-most-once", action="store_true")
    parser.add_argument("--shared", action="store_true")
    parser.add_argument("--after", type=_names, metavar="NAMES", help="run after these handles (variables) or ids")
    parser.add_argument("--run-on", dest="run_on", choices=RUN_ON)
    parser.add_argument("--cache", action="store_true")
    parser.add_argument("--cache-ttl", dest="cache_ttl", type=duration)
    parser.add_argument("--name", default=None)
    return parser


def _names(text: str) -> list[str]:
    """Parse ``--after``: comma-separated variable names or task ids."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected variable names or task ids, such as --after raw,clean")
    return names


def _limit(text: str) -> float | None:
    """Parse ``--ttl`` / ``--result-ttl``: a duration, or ``none`` for no limit."""
    if text.strip().lower() == "none":
        return None
    try:
        return duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration value: {text!r} (90, 90s, 15m, 12h, 7d or none)") from None


def _workers_parser() -> _Parser:
    parser = _Parser(prog="%omniq workers", add_help=False)
    parser.add_argument("action", choices=("start", "stop", "status"), nargs="?", default="status")
    parser.add_argument("id", nargs="?", help="stop: the id of a pool of any process (%%omniq workers status)")
    parser.add_argument("-n", type=int, help="how many tasks run at once")
    parser.add_argument("--kind", choices=WORKER_KINDS)
    parser.add_argument("--shared", action="store_true", help="also run tasks of other live kernels")
    return parser


def _list_parser() -> _Parser:
    parser = _Parser(prog="%omniq list", add_help=False)
    parser.add_argument("--status", action="append", choices=[s.value for s in TaskStatus])
    parser.add_argument("--queue")
    parser.add_argument("--limit", type=int, default=50)
    return parser


def _purge_parser() -> _Parser:
    parser = _Parser(prog="%omniq purge", add_help=False)
    add_purge_arguments(parser)
    return parser


def _setting_text(value: Any) -> str:
    """Show a setting's value as ``%omniq config`` accepts it back (``none``, ``60``, ``cancel``)."""
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _attach_parser() -> _Parser:
    parser = _Parser(prog="%omniq attach", add_help=False)
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--since", type=duration, help="finished tasks launched this long ago or less (default 24h)")
    when.add_argument("--all", action="store_true", help="tasks launched at any time")
    return parser


def _one_id(command: str, words: list[str]) -> str:
    if len(words) != 1:
        raise UsageError(f"%omniq {command} takes one task id, e.g. %omniq {command} 01a2f3...")
    return words[0]
