"""``%omniq attach``: take back, in a new kernel, the tasks earlier kernels of this notebook launched.

A task records its notebook (``notebook/origin.py``), so a later kernel of the same notebook
finds them in the store: it looks at the store's ``SCAN_LIMIT`` newest tasks, keeps those of
this notebook launched by other kernels (unfinished ones, and finished ones created within
``since``, or at any time), binds each ``%%omniq enqueue --as NAME`` to a live handle again
(the newest task of each name), and returns them as one group. When a function of the same
name exists here and its source differs from the one the task carries, a note says so (the
payload is unpickled for that, never called; one that cannot be read is noted and skipped).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import textwrap
import types
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from omniq_nb.blob_format import callable_digest
from omniq_nb.core import AsyncOmniQ
from omniq_nb.errors import TaskNotFound
from omniq_nb.handles import GroupHandle, TaskHandle
from omniq_nb.models import Task
from omniq_nb.notebook.origin import Origin, parse
from omniq_nb.schedule import duration_text
from omniq_nb.serialization import BlobSerializer
from omniq_nb.terminal import format_tasks

logger = logging.getLogger(__name__)

DEFAULT_SINCE = 24 * 3600.0
"""Seconds: ``%omniq attach`` without ``--since`` or ``--all`` takes the finished tasks of the last day."""

SCAN_LIMIT = 2000
"""How many of the store's newest tasks ``%omniq attach`` looks through."""

LISTED = 10
"""How many of the attached tasks (the newest) the printed summary lists; the view has them all."""


@dataclass
class Attached:
    """What ``attach`` found: the tasks as one group, the names it bound, and notes for the user."""

    here: Origin
    group: GroupHandle
    kernels: int
    bound: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Return the one-line summary, one line per note, then a table of the newest ``LISTED`` tasks."""
        count, kernels = len(self.group), self.kernels
        line = (
            f"attached {count} task{'s' * (count != 1)} of {self.here.label} "
            f"from {kernels} earlier kernel{'s' * (kernels != 1)}"
        )
        if self.bound:
            line += f"; bound: {', '.join(self.bound)}"
        table = format_tasks([handle.task for handle in self.group.handles[-LISTED:]])
        more = [f"... and {count - LISTED} older (the view lists them all)"] if count > LISTED else []
        return "\n".join([line, *self.notes, table, *more])


def earlier_tasks(tasks: Iterable[Task], here: Origin, *, since: datetime | None) -> list[Task]:
    """Return the tasks of ``here``'s notebook launched by other kernels, oldest first.

    Of an interval or cron series only the newest run is kept.

    Args:
        tasks: tasks of the store, newest first (as ``list`` returns them).
        here: this kernel's origin.
        since: finished tasks only if created at this moment or later (``None``: any time);
            unfinished ones whenever they were created.
    """
    found: list[Task] = []
    series: set[str] = set()
    for task in tasks:
        launched = parse(task.origin)
        if launched is None or launched.kernel == here.kernel or not launched.same_notebook(here):
            continue
        too_old = since is not None and task.created_at < since and task.status.is_terminal
        if too_old or task.series in series:
            continue
        if task.series is not None:
            series.add(task.series)
        found.append(task)
    return found[::-1]


def newest_by_name(tasks: Iterable[Task]) -> dict[str, Task]:
    """Return, for each ``--as`` name the tasks were bound to, the newest of them (tasks oldest first)."""
    named: dict[str, Task] = {}
    for task in tasks:
        launched = parse(task.origin)
        if launched is not None and launched.name:
            named[launched.name] = task
    return named


async def attach(
    core: AsyncOmniQ, here: Origin, namespace: MutableMapping[str, Any], *, since: float | None
) -> Attached | None:
    """Find the earlier kernels' tasks of this notebook, bind their names in ``namespace``; ``None`` if none.

    A name already bound here to a handle of this kernel's own task is left alone (a note says so).

    Args:
        core: the kernel's queue.
        here: this kernel's origin (``CellOutputs.here``).
        namespace: the user's namespace.
        since: seconds back from now (the store's clock) to look for finished tasks;
            ``None``: any time. Unfinished tasks are taken whatever their age.
    """
    cutoff = None if since is None else await core.storage.now() - timedelta(seconds=since)
    tasks = earlier_tasks(await core.list(limit=SCAN_LIMIT), here, since=cutoff)
    if not tasks:
        return None
    handles: dict[str, TaskHandle] = {}
    for task in tasks:
        with contextlib.suppress(TaskNotFound):  # purged since it was listed
            handles[task.id] = await core.get(task.id)
    kernels = {launched.kernel for launched in map(parse, (task.origin for task in tasks)) if launched}
    attached = Attached(here, GroupHandle(core, list(handles.values())), len(kernels))
    for name, task in newest_by_name(tasks).items():
        if _launched_here(namespace.get(name), here):
            attached.notes.append(f"{name}: kept (bound to a task this kernel launched)")
            continue
        if task.id not in handles:
            continue
        namespace[name] = handles[task.id]
        attached.bound.append(name)
    digests = {digest for task in tasks if (digest := callable_digest(task.payload)) is not None}
    kept = await core.storage.kept_callables(digests) if digests else {}
    attached.notes += source_notes(tasks, namespace, core.serializer, kept)
    return attached


def source_notes(
    tasks: Iterable[Task],
    namespace: MutableMapping[str, Any],
    serializer: BlobSerializer,
    kept: Mapping[str, bytes] | None = None,
) -> list[str]:
    """Return ``"NAME: source changed since submitted"`` for each function defined here anew.

    The newest task of each name is compared with the function of that name in
    ``namespace``, if there is one; tasks of other names (notebook cells) are not read.
    ``kept`` holds the store's kept callables that batch payloads name, by digest.
    """
    newest = {task.name: task for task in tasks}
    notes = []
    for name, task in newest.items():
        present = _function(namespace.get(name))
        if present is None:
            continue
        try:
            digest = callable_digest(task.payload)
            stored = (kept or {}).get(digest) if digest is not None else None
            submitted = _function(serializer.load_call(task.payload, stored=stored)[0])
        except Exception as exc:  # a payload that cannot be read here must not stop attach
            logger.debug("cannot read the payload of task %s", task.id, exc_info=True)
            notes.append(f"{name}: source not compared (its payload cannot be read here: {type(exc).__name__})")
            continue
        if submitted is None or submitted.__qualname__ != present.__qualname__:
            continue  # a task given this name, not a call of this function
        before, now = _source(submitted), _source(present)
        if before is not None and now is not None and before != now:
            notes.append(f"{name}: source changed since submitted")
    return notes


def nothing_found(here: Origin, since: float | None) -> str:
    """Return what ``%omniq attach`` says when it found no task.

    Example:
        >>> print(nothing_found(Origin("k", "", "/work", "a.ipynb"), 86400))  # doctest: +NORMALIZE_WHITESPACE
        no tasks of a.ipynb from earlier kernels: none unfinished, none finished in the last 1d
        (--since 7d or --all looks further back)
    """
    if since is None:
        return f"no tasks of {here.label} from earlier kernels in this store"
    return (
        f"no tasks of {here.label} from earlier kernels: none unfinished, none finished in the last "
        f"{duration_text(since)} (--since 7d or --all looks further back)"
    )


def _launched_here(value: Any, here: Origin) -> bool:
    launched = parse(value.task.origin) if isinstance(value, TaskHandle) else None
    return launched is not None and launched.kernel == here.kernel


def _function(value: Any) -> types.FunctionType | None:
    try:
        target = inspect.unwrap(value) if callable(value) else None
    except Exception:  # a proxy whose attributes never end, or raise: not a function to compare
        return None
    return target if isinstance(target, types.FunctionType) else None


def _source(fn: types.FunctionType) -> str | None:
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return None
