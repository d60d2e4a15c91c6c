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

from omniq_nb.errors import TaskCancelled, TaskFailed, TaskNotFound, failure_class, type_name
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

        A task whose finished row a handle of this process already holds is answered without
        reading the store.

        Raises:
            TaskFailed: the task did not succeed (a subclass says why).
            TimeoutError: it did not finish within ``timeout`` seconds.
            TaskNotFound: no task has this id.

        """
        wait = seconds(timeout, name="timeout")
        try:
            found = await self._hub.wait_many((task_id,), wait)
        except TimeoutError:
            raise TimeoutError(f"task {task_id} did not finish within {timeout} s") from None
        return self._value(task_id, found[task_id])

    async def results(
        self, task_ids: Sequence[str], /, *, timeout: float | None = None, return_exceptions: bool = False
    ) -> builtins.list[Any]:
        """Wait for several tasks and return their results in order.

        The tasks are awaited as one set (unfinished ones read from the store in batches), so
        the cost follows the tasks that change, not how many there are. The first failure in
        input order is raised as soon as every task before it has succeeded.

        Args:
            task_ids: the tasks.
            timeout: seconds for all of them together.
            return_exceptions: return each failure's exception in the list instead of raising.

        Raises:
            TaskFailed: the first failure in order, unless ``return_exceptions``.
            TimeoutError: not all finished in time.
            TaskNotFound: no task has one of these ids.

        """
        if isinstance(task_ids, (str, bytes)):
            raise TypeError(f"task_ids={task_ids!r} must be a sequence of task ids, not one id")
        task_ids = builtins.list(task_ids)
        limit = seconds(timeout, name="timeout")
        end = None if limit is None else time.monotonic() + limit
        found: dict[str, Task | None] = {}
        values: builtins.list[Any] = []
        while len(values) < len(task_ids):
            rest = task_ids[len(values) :]
            if not return_exceptions:  # a failure found further on is raised once the tasks before it succeed
                rest = rest[: next((at for at, task_id in enumerate(rest) if _failed(found, task_id)), len(rest))]
            waiting = [task_id for task_id in rest if task_id not in found]
            left = None if end is None else max(0.0, end - time.monotonic())
            try:
                found |= await self._hub.wait_many(waiting, left, until_failure=not return_exceptions)
            except TimeoutError:
                unfinished = len(set(waiting) - found.keys())
                raise TimeoutError(f"{unfinished} of {len(task_ids)} tasks did not finish within {timeout} s") from None
            for task_id in task_ids[len(values) :]:  # in input order, as far as the tasks have finished
                if task_id not in found:
                    break
                try:
                    values.append(self._value(task_id, found[task_id]))
                except TaskFailed as exc:
                    if not return_exceptions:
                        raise
                    values.append(exc)
        return values

    def _value(self, task_id: str, task: Task | None) -> Any:
        """Return a finished task's result, or raise why there is none."""
        if task is None:
            raise TaskNotFound(f"no task with id {task_id!r} in {self.storage.url}")
        if task.has_value:
            return None if task.result is None else self.serializer.loads(task.result)
        raise failure(task)


def _failed(found: dict[str, Task | None], task_id: str) -> bool:
    """Return whether ``task_id`` is known to have no result: missing, or finished without success."""
    if task_id not in found:
        return False
    task = found[task_id]
    return task is None or not task.has_value


def failure(task: Task) -> TaskFailed:
    """Return the exception ``result()`` raises for a task that did not succeed.

    Args:
        task: a finished task that has no value (``Task.has_value`` is false).

    """
    error = task.error
    if task.status is TaskStatus.CANCELLED and (error is None or error.type != type_name(TaskCancelled)):
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
