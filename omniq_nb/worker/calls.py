"""What every executor takes and gives back: a ``Call`` in, an ``Outcome`` out, and the ``Slot`` it holds."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec

from omniq_nb.errors import CallableMissing, DependencyFailed, SignatureError, TaskTimeout, type_name
from omniq_nb.inputs import Input
from omniq_nb.models import Task, TaskError
from omniq_nb.policy import describe_exception


class Call(msgspec.Struct, frozen=True, kw_only=True):
    """One run of a task to make: its identity, payload (and kept callable), time limit and dependencies' results."""

    task_id: str
    attempt: int
    queue: str
    run_id: str
    payload: bytes
    timeout: float | None
    inputs: dict[str, Input] | None = None
    stored: bytes | None = None
    """The kept callable the payload names by digest (``None`` when it carries its own)."""


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """How one run of a call ended: a serialized result, or an error (retryable or not)."""

    result: bytes | None = None
    error: TaskError | None = None
    raised: tuple[str, ...] = ()
    retryable: bool = True


class Slot:
    """One run's concurrency slot: free once the run and any thread it started have ended.

    Args:
        free: called once, when the last holder lets go.

    Example:
        >>> freed = []
        >>> slot = Slot(lambda: freed.append(True))
        >>> release = slot.keep()   # a thread that may outlive the run
        >>> slot.release(); freed
        []
        >>> release(); freed
        [True]
    """

    __slots__ = ("_free", "_holders")

    def __init__(self, free: Callable[[], None]) -> None:
        self._free, self._holders = free, 1

    def keep(self) -> Callable[[], None]:
        """Keep the slot taken after the run ends, until the returned function is called."""
        self._holders += 1
        return self.release

    def release(self) -> None:
        """Let go of the slot; the last holder frees it."""
        self._holders -= 1
        if not self._holders:
            self._free()


RESULT_LABEL = "the task's result"
"""Names the value in a serialization error of a result."""


def timed_out(call: Call) -> Outcome:
    """Return the outcome of a call stopped for running longer than its timeout."""
    error = TaskError(
        type=type_name(TaskTimeout),
        message=f"the task timed out after {call.timeout:g} s",
        attempt=call.attempt,
    )
    return Outcome(error=error, raised=(type_name(TaskTimeout),))


def failed(exc: BaseException, attempt: int) -> Outcome:
    """Return the outcome of a call that raised ``exc`` (a bad signature or a missing callable is not retried)."""
    error, raised = describe_exception(exc, attempt)
    return Outcome(error=error, raised=raised, retryable=not isinstance(exc, (SignatureError, CallableMissing)))


def unmet(task: Task, inputs: Mapping[str, Input] | None) -> Outcome | None:
    """Return the outcome of a ``run_on="success"`` task one of whose dependencies has no value, else ``None``.

    The graph runs such a task only once every dependency succeeded; it can still get here
    when retried by hand, or when a dependency's kept result is gone: it fails, without
    running, with ``DependencyFailed`` naming that dependency (not retried).
    """
    if task.run_on != "success" or not inputs:
        return None
    for task_id, value in inputs.items():
        if isinstance(value, TaskError):
            message = (
                value.message if value.type == type_name(DependencyFailed) else f"dependency {task_id}: {value.message}"
            )
            error = TaskError(type=type_name(DependencyFailed), message=message, attempt=task.attempt)
            return Outcome(error=error, raised=(type_name(DependencyFailed),), retryable=False)
    return None
