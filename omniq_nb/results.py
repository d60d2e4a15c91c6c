"""Reading outcomes: waiting for tasks and turning what they stored into values or exceptions.

``ResultReading`` gives ``AsyncOmniQ`` its ``result`` and ``results``; ``failure`` is the
exception ``result()`` raises for a task that did not succeed.

Example:
    >>> from datetime import datetime, timezone
    >>> from omniq_nb.models import Task, TaskStatus
    >>> at = datetime.now(timezone.utc)
    >>> task = Task(id="t1", name="f", eta=at, created_at=at, status=TaskStatus.CANCELLED)
    >>> type(failure(task)).__name__
    'TaskCancelled'

"""

from __future__ import annotations

import builtins
import time
from collections.abc import Sequence
from typing import Any

from omniq_nb.errors import TaskFailed, TaskNotFound, failure_class, type_name
from omniq_nb.events import EventHub
from omniq_nb.models import Task, TaskError, TaskStatus
from omniq_nb.schedule import seconds
from omniq_nb.serialization import BlobSerializer
from omniq_nb.storage import Storage


class ResultReading:
    """The result-reading role of ``AsyncOmniQ``: wait for tasks and return their results."""

    storage: Storage
    serializer: BlobSerializer
    _hub: EventHub

    async def result(self, task_id: str, /, *, timeout: float | None = None) -> Any:
        """Wait for a task to finish and return its result.

        Raises:
            TaskFailed: the task did not succeed (a subclass says why).
            TimeoutError: it did not finish within ``timeout`` seconds.
            TaskNotFound: no task has this id.

        """
        wait = seconds(timeout, name="timeout")
        try:
            task = await self._hub.wait(task_id, wait)
        except TimeoutError:
            raise TimeoutError(f"task {task_id} did not finish within {timeout} s") from None
        if task is None:
            raise TaskNotFound(f"no task with id {task_id!r} in {self.storage.url}")
        if task.status is TaskStatus.SUCCEEDED:
            return None if task.result is None else self.serializer.loads(task.result)
        raise failure(task)

    async def results(
        self, task_ids: Sequence[str], /, *, timeout: float | None = None, return_exceptions: bool = False
    ) -> builtins.list[Any]:
        """Wait for several tasks and return their results in order.

        Args:
            task_ids: the tasks.
            timeout: seconds for all of them together.
            return_exceptions: return each failure's exception in the list instead of raising.

        Raises:
            TaskFailed: the first failure in order, unless ``return_exceptions``.
            TimeoutError: not all finished in time.

        """
        if isinstance(task_ids, (str, bytes)):
            raise TypeError(f"task_ids={task_ids!r} must be a sequence of task ids, not one id")
        limit = seconds(timeout, name="timeout")
        end = None if limit is None else time.monotonic() + limit
        values: builtins.list[Any] = []
        for task_id in task_ids:
            left = None if end is None else max(0.0, end - time.monotonic())
            try:
                values.append(await self.result(task_id, timeout=left))
            except TaskFailed as exc:
                if not return_exceptions:
                    raise
                values.append(exc)
        return values


def failure(task: Task) -> TaskFailed:
    """Return the exception ``result()`` raises for a task that did not succeed.

    Args:
        task: a finished task whose status is not ``succeeded``.

    """
    error = task.error
    if task.status is TaskStatus.CANCELLED:
        error = TaskError(type="omniq_nb.errors.TaskCancelled", message="the task was cancelled", attempt=task.attempt)
    elif task.status is TaskStatus.EXPIRED:
        error = TaskError(
            type="omniq_nb.errors.TaskExpired", message="its ttl passed before a worker ran it", attempt=task.attempt
        )
    elif error is None:
        error = TaskError(
            type=type_name(TaskFailed), message=f"task ended as {task.status.value}", attempt=task.attempt
        )
    return failure_class(error.type)(error, task.id)
