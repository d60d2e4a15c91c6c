"""Results of other tasks as a task's arguments: placeholders at enqueue, values at run time.

A ``TaskHandle`` or ``GroupHandle`` among a call's arguments (at any depth of lists, tuples
and dicts) makes the call depend on that task (or group): ``extract`` swaps each for a small
placeholder (``Upstream``, ``UpstreamGroup``) before the call is pickled, and returns the ids
it depends on. When the task runs, the worker reads its dependencies' rows (``task_inputs``)
and ``substitute`` puts their results in the placeholders' places: a value for a task that
succeeded, its ``TaskError`` for one that did not (``run_on="any"`` or ``"failure"``), a list
for a group. Handles take part through ``__omniq_upstream__``, so this module imports none.

Example:
    >>> args, kwargs, ids = extract((Upstream("a1"), [1, UpstreamGroup(("b1", "b2"))]), {})
    >>> ids
    ('a1', 'b1', 'b2')
    >>> substitute(args, kwargs, {"a1": 10, "b1": 1, "b2": 2})
    ((10, [1, [1, 2]]), {})

"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omniq_nb.errors import SerializationError
from omniq_nb.models import Task, TaskError, TaskStatus

__all__ = ["Upstream", "UpstreamGroup", "extract", "gathered", "ids_of", "substitute", "task_inputs"]

_ATOMS = frozenset({int, float, str, bytes, bool, type(None), complex})
_ENDED_AS = {TaskStatus.CANCELLED: "TaskCancelled", TaskStatus.EXPIRED: "TaskExpired"}

Input = bytes | TaskError | None
"""A dependency as a run gets it: its serialized result (``None``: the result was ``None``) or its error."""


@dataclass(frozen=True)
class Upstream:
    """Stands for the result of task ``task_id`` in a stored call."""

    task_id: str


@dataclass(frozen=True)
class UpstreamGroup:
    """Stands for the list of results of the tasks ``task_ids`` in a stored call."""

    task_ids: tuple[str, ...]


def _placeholder(value: Any) -> Upstream | UpstreamGroup | None:
    """Return the placeholder a handle (or a placeholder) stands for, else ``None``."""
    if isinstance(value, (Upstream, UpstreamGroup)):
        return value
    hook: Callable[[Any], Upstream | UpstreamGroup] | None = getattr(type(value), "__omniq_upstream__", None)
    return None if hook is None else hook(value)


def ids_of(value: Any) -> tuple[str, ...]:
    """Return the task ids of a handle, group handle, placeholder or task id (``after=``).

    Raises:
        TypeError: ``value`` is none of these.
    """
    if isinstance(value, str) and value.strip():
        return (value.strip(),)
    found = _placeholder(value)
    if isinstance(found, Upstream):
        return (found.task_id,)
    if isinstance(found, UpstreamGroup):
        return found.task_ids
    raise TypeError(f"after= takes task handles, group handles or task ids, got {value!r}")


def extract(args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any], tuple[str, ...]]:
    """Swap the handles in a call's arguments for placeholders; return the new arguments and the ids, in order.

    Only lists, tuples and dicts are looked into (not their subclasses, nor other objects).
    Positional arguments without a handle come back as they are (a ``tuple`` is not copied), and so
    does an empty ``dict`` of keyword arguments.
    """
    ids: dict[str, None] = {}

    def walk(value: Any) -> Any:
        kind = type(value)
        if kind in _ATOMS:
            return value
        if kind is list or kind is tuple:
            for at, item in enumerate(value):
                if (new := walk(item)) is not item:  # copy only a container that holds a handle
                    return kind([*value[:at], new, *(walk(rest) for rest in value[at + 1 :])])
            return value
        if kind is dict:
            changed = {key: new for key, item in value.items() if (new := walk(item)) is not item}
            return {**value, **changed} if changed else value
        found = _placeholder(value)
        if found is not None:
            ids.update(dict.fromkeys(found.task_ids if isinstance(found, UpstreamGroup) else (found.task_id,)))
            return found
        return value

    try:
        new_args = walk(args) if type(args) is tuple else tuple(walk(arg) for arg in args)
        new_kwargs = kwargs if type(kwargs) is dict and not kwargs else {key: walk(v) for key, v in kwargs.items()}
    except RecursionError:  # no handle hides that deep: serializing names the argument that is too deep
        return tuple(args), dict(kwargs), ()
    return new_args, new_kwargs, tuple(ids)


def substitute(
    args: Sequence[Any], kwargs: Mapping[str, Any], values: Mapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Return ``(args, kwargs)`` with every placeholder replaced by its value from ``values`` (by task id)."""

    def value_of(task_id: str) -> Any:
        try:
            return values[task_id]
        except KeyError:
            raise SerializationError(f"the result of task {task_id}, an argument of this task, was not given") from None

    def walk(value: Any) -> Any:
        if isinstance(value, Upstream):
            return value_of(value.task_id)
        if isinstance(value, UpstreamGroup):
            return [value_of(task_id) for task_id in value.task_ids]
        kind = type(value)
        if kind is list or kind is tuple:
            return kind(walk(item) for item in value)
        if kind is dict:
            return {key: walk(item) for key, item in value.items()}
        return value

    return tuple(walk(arg) for arg in args), {key: walk(value) for key, value in kwargs.items()}


def task_inputs(task_ids: Sequence[str], rows: Iterable[Task]) -> dict[str, Input]:
    """Return what a run gets of its dependencies ``task_ids`` given their rows: each one's result, or its error.

    A dependency without a row (purged before its dependent ran) gets an error saying so.
    """
    inputs: dict[str, Input] = {
        task_id: TaskError(
            type="omniq_nb.errors.DependencyFailed",
            message=f"dependency {task_id} no longer exists (purged before this task ran: keep results longer)",
        )
        for task_id in task_ids
    }
    for row in rows:
        if row.has_value:
            inputs[row.id] = row.result
        elif row.error is not None:
            inputs[row.id] = row.error
        else:
            kind = _ENDED_AS.get(row.status, "TaskFailed")
            message = f"task {row.id} ({row.name}) ended as {row.status.value}"
            inputs[row.id] = TaskError(type=f"omniq_nb.errors.{kind}", message=message, attempt=row.attempt)
    return inputs


async def gathered(*values: Any) -> list[Any]:
    """Return its arguments as a list: the task ``omniq.gather`` enqueues over its handles."""
    return list(values)
