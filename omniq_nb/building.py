"""Building task rows: what ``enqueue`` stores before any worker sees the task.

A task is built from its callable, its validated ``TaskOptions`` and the settings that fill
in what the options leave unset (queue, retries, TTLs), at the store's clock.

Example:
    >>> task_name(len)
    'len'
    >>> list(checked_calls([(1,), [2]]))
    [((1,), {}), ([2], {})]

"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, overload

from omniq_nb.config import Settings
from omniq_nb.context import origin, owner
from omniq_nb.models import Task, TaskStatus, batch_row, new_task_id
from omniq_nb.options import DEFAULT, TaskOptions, deadline
from omniq_nb.schedule import first_run, next_run
from omniq_nb.storage import Storage


class BatchRows(Sequence[Task]):
    """The rows of a batch that differ from ``template`` only by id (and a periodic one's series).

    Each row is made when asked for, so that a hundred thousand handles of a ``.map()`` share
    one snapshot until their task changes (``TaskHandle`` takes ``template`` and its id).

    Args:
        template: the row the batch shares (``task_template``).
        ids: the tasks' ids, in order.
    """

    def __init__(self, template: Task, ids: Sequence[str]) -> None:
        self.template, self.ids = template, ids

    def __len__(self) -> int:
        """Return how many rows the batch has."""
        return len(self.ids)

    def __iter__(self) -> Iterator[Task]:
        """Yield the rows in order, each made as it is reached."""
        template = self.template
        return (batch_row(template, task_id) for task_id in self.ids)

    @overload
    def __getitem__(self, index: int) -> Task: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Task]: ...

    def __getitem__(self, index: int | slice) -> Task | Sequence[Task]:
        """Return the row at ``index`` (a list of rows for a slice)."""
        if isinstance(index, slice):
            return [batch_row(self.template, task_id) for task_id in self.ids[index]]
        return batch_row(self.template, self.ids[index])


async def task_template(fn: Callable[..., Any], options: TaskOptions, settings: Settings, storage: Storage) -> Task:
    """Return the row every task of one ``enqueue`` shares (an empty payload, the store's clock).

    Args:
        fn: the callable to run.
        options: validated options.
        settings: defaults for what the options leave unset.
        storage: the store whose clock stamps the task.

    Raises:
        TypeError: ``fn`` is not callable.

    """
    if not callable(fn):
        raise TypeError(f"expected a callable to run as a task, got {fn!r}")
    return new_task(fn, b"", options, settings, await storage.now())


def new_task(fn: Callable[..., Any], payload: bytes, options: TaskOptions, settings: Settings, now: datetime) -> Task:
    """Build a pending task from its payload, options and the settings' defaults.

    Args:
        fn: the callable (for the task's name).
        payload: the serialized call.
        options: validated options.
        settings: defaults for what the options leave unset.
        now: the store's clock.

    """
    eta = first_run(now, eta=options.eta, delay=options.delay)
    if options.schedule is not None and options.eta is None and options.delay is None:
        eta = next_run(options.schedule, previous=now, now=now)
    task_id = new_task_id()
    return Task(
        id=task_id,
        name=options.name or task_name(fn),
        queue=options.queue or settings.default_queue,
        priority=options.priority,
        payload=payload,
        retries=settings.default_retries if options.retries is None else options.retries,
        retry_on=options.retry_on,
        timeout=options.timeout,
        eta=eta,
        created_at=now,
        expires_at=deadline(eta, settings.task_ttl if options.ttl is DEFAULT else options.ttl),
        result_ttl=settings.result_ttl if options.result_ttl is DEFAULT else options.result_ttl,
        schedule=options.schedule,
        series=task_id if options.schedule is not None else None,
        at_most_once=options.at_most_once,
        kind=options.kind,
        origin=origin(),
        owner=None if options.shared else owner(),
        status=TaskStatus.WAITING if options.after else TaskStatus.PENDING,
        depends_on=options.after,
        run_on=options.run_on,
    )


def task_name(fn: Callable[..., Any]) -> str:
    """Return a readable name for a callable: ``module.qualname`` (``__main__`` left out)."""
    target = getattr(fn, "func", fn)  # functools.partial
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or type(target).__name__
    module = getattr(target, "__module__", None)
    return name if module in (None, "__main__", "builtins") else f"{module}.{name}"


_NO_KEYWORDS: Mapping[str, Any] = {}  # one for every call of a batch (never changed: each is copied when pickled)


def checked_calls(calls: Iterable[Sequence[Any]]) -> Iterator[tuple[Sequence[Any], Mapping[str, Any]]]:
    """Yield ``(args, {})`` for each item of ``enqueue_many``'s ``calls``, checking each is a tuple or list.

    The empty keyword arguments are one shared dict, not one per call (100,000 calls made 6 MB of them).

    Raises:
        TypeError: ``calls`` is not an iterable of argument tuples, or an item is not a tuple or list.

    """
    if not isinstance(calls, Iterable) or isinstance(calls, (str, bytes)):
        raise TypeError(f"calls={calls!r} must be an iterable of argument tuples such as [(1,), (2,)]")
    for index, args in enumerate(calls):
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"calls[{index}]={args!r} must be a tuple of positional arguments such as (x,)")
        yield args, _NO_KEYWORDS
