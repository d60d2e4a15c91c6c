"""Every public exception of omniq_nb.

Hierarchy::

    OmniQError
    ├── ConfigError            a setting has a bad value (names the variable)
    ├── SignatureError         a payload's HMAC signature is missing or wrong
    ├── SerializationError     a value cannot be serialized (also a TypeError)
    ├── TaskNotFound           no task has that id (also a KeyError)
    ├── InvalidTransition      a status change the lifecycle forbids
    ├── StorageError           the store failed or cannot be opened
    │   ├── NotSupported       the backend lacks a capability
    │   ├── StoreLost          the store went away under an open connection (file deleted or moved)
    │   └── RecordTooLarge     the store refused a record larger than it accepts (writing it again fails too)
    └── TaskFailed             result() of a task that did not succeed
        ├── TaskCancelled      the task was cancelled
        ├── TaskTimeout        the task ran longer than its timeout
        ├── TaskExpired        its TTL passed before it ran
        ├── WorkerLost         the worker running it died
        ├── DependencyFailed   a task it depends on did not succeed, so it never ran
        └── PayloadRejected    its payload failed the signature check (also a SignatureError)

Waiting too long in ``result(timeout=...)`` raises the built-in ``TimeoutError``.
One warning category: ``CacheWarning`` (a ``UserWarning``), when a call submitted with
``cache=True`` cannot be keyed and runs without the result cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omniq_nb.models import TaskError


class OmniQError(Exception):
    """Base class of every exception raised by omniq_nb."""


class CacheWarning(UserWarning):
    """A call submitted with ``cache=True`` cannot be keyed (say, an argument cannot be pickled): it runs uncached."""


class ConfigError(OmniQError, ValueError):
    """A setting has a value that cannot be used."""


class SignatureError(OmniQError):
    """A payload's HMAC signature is missing or does not match ``OMNIQ_SECRET``."""


class SerializationError(OmniQError, TypeError):
    """A callable, argument or result cannot be serialized."""


class CallableMissing(SerializationError):
    """A task names its function by digest (a batch's, kept once) and the store does not keep it.

    Only a purge of everything between a batch's insert and its run does that; running the
    task again fails the same way, so it is not retried.
    """


class TaskNotFound(OmniQError, KeyError):
    """No task with the given id exists in the store."""

    def __str__(self) -> str:
        """Return the message without KeyError's quoting."""
        return str(self.args[0]) if self.args else "task not found"


class InvalidTransition(OmniQError):
    """A status change that the task lifecycle does not allow."""


class StorageError(OmniQError):
    """The store failed, or could not be opened."""


class NotSupported(StorageError):
    """The backend does not offer the requested capability."""


class StoreLost(StorageError):
    """The store went away while open (its file deleted or moved): nothing written now would last.

    A worker pool that meets it stops serving; reopen the queue to use the store's new file.
    """


class RecordTooLarge(StorageError):
    """The store refused one record larger than it accepts (a NATS server's ``max_payload``).

    Unlike other ``StorageError``s it is no outage: writing the same record again fails the
    same way. A worker whose outcome meets it fails that task with it and stores the others.
    """


class TaskFailed(OmniQError):
    """The task did not succeed; ``error`` holds the remote type, message and traceback.

    Args:
        error: the stored error of the task's last attempt.
        task_id: the id of the task, for the message.

    """

    def __init__(self, error: TaskError, task_id: str = "") -> None:
        self.error = error
        self.task_id = task_id
        super().__init__(self._describe(error, task_id))

    @staticmethod
    def _describe(error: TaskError, task_id: str) -> str:
        head = f"{error.type}: {error.message}" if error.message else error.type
        text = f"task {task_id} failed on attempt {error.attempt}: {head}"
        if error.traceback:
            text += "\n\nRemote traceback:\n" + error.traceback.rstrip()
        return text


class TaskCancelled(TaskFailed):
    """The task was cancelled before it finished."""


class TaskTimeout(TaskFailed):
    """The task ran longer than its ``timeout`` and was stopped."""


class TaskExpired(TaskFailed):
    """The task's ``ttl`` passed before any worker ran it."""


class WorkerLost(TaskFailed):
    """The worker running the task died or lost its lease and no retries remained."""


class DependencyFailed(TaskFailed):
    """The task never ran: a task it depends on failed, was cancelled or expired (named in the message)."""


class PayloadRejected(TaskFailed, SignatureError):
    """The task failed because its payload's signature was missing or wrong; it never ran."""


def type_name(kind: type[BaseException]) -> str:
    """Return the name a stored error gives an exception type: ``ValueError``, ``pkg.mod.Error``.

    Args:
        kind: the exception class.

    """
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def failure_class(stored_type: str) -> type[TaskFailed]:
    """Return the ``TaskFailed`` subclass that ``result()`` raises for a stored error type.

    Args:
        stored_type: ``TaskError.type`` of the failed attempt.

    """
    for kind in (TaskTimeout, WorkerLost, TaskCancelled, TaskExpired, DependencyFailed):
        if stored_type == type_name(kind):
            return kind
    if stored_type in (type_name(SignatureError), type_name(PayloadRejected)):
        return PayloadRejected
    return TaskFailed
