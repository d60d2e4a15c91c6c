"""``@omniq.task``: a function that still runs inline when called, and can be submitted as a task.

Example:
    >>> @task(retries=3)
    ... def double(x):
    ...     return 2 * x
    >>> double(21)              # a plain call runs inline
    42
    >>> double.options(retries=5).task_options.retries
    5
"""

from __future__ import annotations

import atexit
import functools
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, overload

from omniq_nb.building import task_name
from omniq_nb.core import OmniQ
from omniq_nb.estimates import TaskStats
from omniq_nb.handles import GroupHandle, TaskHandle
from omniq_nb.options import TaskOptions, as_keywords, make_options, merge_options

P = ParamSpec("P")
R = TypeVar("R")

_default: OmniQ | None = None
_default_lock = threading.Lock()


class TaskFunction(Generic[P, R]):
    """A function with task options: call it inline, or ``submit`` / ``map`` it to the queue.

    Args:
        fn: the function (sync or async).
        options: validated task options.
    """

    def __init__(self, fn: Callable[P, R], options: TaskOptions) -> None:
        self.fn = fn
        self.task_options = options
        functools.update_wrapper(self, fn)

    @property
    def name(self) -> str:
        """Return the task's name (its ``name`` option, else the function's qualified name)."""
        return self.task_options.name or task_name(self.fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function inline, here and now, like the plain function."""
        return self.fn(*args, **kwargs)

    def options(self, **overrides: Any) -> TaskFunction[P, R]:
        """Return this task with some options replaced, e.g. ``f.options(retries=5).submit(x)``.

        Raises:
            TypeError: an unknown option or a value of the wrong type.
            ValueError: an invalid value.
        """
        return TaskFunction(self.fn, merge_options(self.task_options, **overrides))

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle:
        """Queue one call on the default queue and return its handle at once.

        Raises:
            SerializationError: the function or an argument cannot be serialized.
        """
        return default_queue().enqueue_call(self.fn, args=args, kwargs=kwargs, **self._option_values())

    def map(self, items: Iterable[Any]) -> GroupHandle:
        """Queue one call per item (``fn(item)``) in one transaction; return a group handle.

        Raises:
            SerializationError: the function or an item cannot be serialized.
        """
        return default_queue().enqueue_many(self.fn, [(item,) for item in items], **self._option_values())

    def starmap(self, calls: Iterable[Sequence[Any]]) -> GroupHandle:
        """Queue one call per tuple of arguments (``fn(*args)``) in one transaction; return a group handle.

        Raises:
            TypeError: an item is not a tuple or list.
            SerializationError: the function or an argument cannot be serialized.
        """
        return default_queue().enqueue_many(self.fn, calls, **self._option_values())

    def _option_values(self) -> dict[str, Any]:
        return {**as_keywords(self.task_options), "name": self.name}

    def __omniq_task__(self) -> tuple[Callable[P, R], dict[str, Any]]:
        """Return the function and its options (what ``handle.then(task_function)`` queues)."""
        return self.fn, self._option_values()

    def __repr__(self) -> str:
        """Return ``<omniq task name>``."""
        return f"<omniq task {self.name}>"


@overload
def task(fn: Callable[P, R], /) -> TaskFunction[P, R]: ...


@overload
def task(fn: None = None, /, **options: Any) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None, /, **options: Any
) -> TaskFunction[P, R] | Callable[[Callable[P, R]], TaskFunction[P, R]]:
    """Make ``fn`` a task; works as ``@task`` and as ``@task(retries=3, timeout=600, ...)``.

    Args:
        fn: the function, when used without parentheses.
        **options: task options (see ``AsyncOmniQ.enqueue_call``).

    Raises:
        TypeError: an unknown option, or ``fn`` is not callable.
        ValueError: an invalid option value.
    """
    validated = make_options(**options)

    def wrap(target: Callable[P, R]) -> TaskFunction[P, R]:
        if not callable(target):
            raise TypeError(f"@omniq.task needs a function, got {target!r}")
        return TaskFunction(target, validated)

    return wrap if fn is None else wrap(fn)


def default_queue() -> OmniQ:
    """Return the queue that ``submit``, ``map`` and ``omniq.get`` use.

    In a notebook with the extension loaded it is the kernel's queue; elsewhere an ``OmniQ``
    built from the environment on first use (closed at exit).
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = OmniQ.from_env()
            atexit.register(_default.close)
        return _default


def use_queue(queue: OmniQ | None) -> None:
    """Make ``queue`` the default queue (``None`` forgets it; the next use builds a new one)."""
    global _default
    with _default_lock:
        _default = queue


def get(task_id: str, /) -> TaskHandle:
    """Return a handle on a task of the default queue, e.g. after a kernel restart.

    Raises:
        TaskNotFound: no task has this id.
    """
    return default_queue().get(task_id)


def cache_clear(fn: Any = None, /) -> int:
    """Forget the default queue's cached results (of ``fn``'s tasks, or all); return how many.

    Later submissions with ``cache=True`` run again; the tasks and their results stay.

    Args:
        fn: an ``@omniq.task`` function, a plain callable or a task name; ``None``: every task.

    Raises:
        TypeError: ``fn`` is neither callable nor a string.
        ValueError: ``fn`` is an empty string.
    """
    return default_queue().cache_clear(fn)


def stats(fn: Any, /) -> TaskStats:
    """Return how long ``fn``'s latest successful runs took, from the default queue's store.

    ``count``, ``median``, ``p90``, ``mean`` and ``last`` (seconds; ``None`` when no run is
    known). In a notebook it reads the kernel's queue.

    Args:
        fn: an ``@omniq.task`` function, a plain callable or a task name.

    Raises:
        TypeError: ``fn`` is neither callable nor a string.
        ValueError: ``fn`` is an empty string.
    """
    return default_queue().stats(fn)
