"""Tasks that wait for others: what a finished task does to the tasks depending on it.

A task enqueued with dependencies (``after=``, or a handle among its arguments) is stored as
``waiting``. Whoever finishes a task (the pool settling outcomes, ``cancel``, the maintenance
runner expiring or rescuing) calls ``settle_dependents`` right after, in the same process:
it reads the waiting dependents and their dependencies' states and moves each one on with
one compare-and-set (``QueueStore.move_dependents``), so two processes finishing the last
two dependencies at once promote the dependent exactly once (the later of the two reads sees
both finished). A dependent stopped by a failure stops its own dependents in turn. Should a
process die between the two steps, the maintenance runner's ``sweep`` moves what it left.
Retrying a failed task re-arms the dependents it stopped (``rearm_dependents``).

Example:
    >>> from datetime import datetime, timezone
    >>> from omniq_nb.models import Task, TaskStatus
    >>> at = datetime.now(timezone.utc)
    >>> done = Task(id="a", name="load", eta=at, created_at=at, status=TaskStatus.SUCCEEDED)
    >>> fit = Task(id="b", name="fit", eta=at, created_at=at, status=TaskStatus.WAITING, depends_on=("a",))
    >>> dependency_move(fit, {"a": done}).target.value
    'pending'

"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from omniq_nb.errors import DependencyFailed, TaskCancelled, TaskNotFound, type_name
from omniq_nb.models import DependencyMove, Task, TaskError, TaskStatus
from omniq_nb.storage import Storage

__all__ = [
    "arm",
    "check_known",
    "dependency_move",
    "rearm_dependents",
    "rearm_move",
    "settle_dependents",
    "sweep",
    "waiting_for",
]

_STOPPED_BY_DEPENDENCY = (type_name(DependencyFailed), type_name(TaskCancelled))
_WORDS = {TaskStatus.FAILED: "failed", TaskStatus.CANCELLED: "was cancelled", TaskStatus.EXPIRED: "expired"}


def waiting_for(template: Task, upstream: Sequence[str]) -> Task:
    """Return ``template`` depending also on ``upstream`` (ids, in order): ``waiting`` when it depends on any."""
    depends_on = tuple(dict.fromkeys((*template.depends_on, *upstream)))
    if not depends_on:
        return template
    return msgspec.structs.replace(template, depends_on=depends_on, status=TaskStatus.WAITING)


async def check_known(storage: Storage, tasks: Sequence[Task]) -> None:
    """Refuse tasks that depend on tasks the store does not have (nothing is inserted then).

    A dependency always exists before its dependents (a handle names a stored task), so no
    cycle can form; an unknown id is a typo, a purged task, or a task of another store.

    Raises:
        TaskNotFound: a dependency is not in ``storage`` (named in the message).
    """
    needed = sorted({task_id for task in tasks for task_id in task.depends_on})
    if not needed:
        return
    missing = set(needed) - {row.id for row in await storage.get_many(needed)}
    if missing:
        shown = ", ".join(sorted(missing)[:3]) + (", ..." if len(missing) > 3 else "")
        raise TaskNotFound(
            f"cannot wait for {len(missing)} unknown task(s) ({shown}): no such task in {storage.url} "
            "(purged, or a task of another store)"
        )


def dependency_move(task: Task, dependencies: Mapping[str, Task]) -> DependencyMove | None:
    """Return what becomes of a waiting ``task`` given its dependencies' rows, or ``None``: it waits on.

    ``run_on="success"``: pending once all succeeded; failed (cancelled, when that dependency
    was cancelled) as soon as one did not succeed, naming the first failed ancestor.
    ``"any"``: pending once all finished. ``"failure"``: pending once all finished and one did
    not succeed; cancelled when all succeeded. A dependency that no longer exists counts as
    failed.

    Args:
        task: a task in status ``waiting``.
        dependencies: the rows of (at least) the tasks it depends on, by id.
    """
    if task.status is not TaskStatus.WAITING:
        return None
    rows = [dependencies.get(task_id) for task_id in task.depends_on]
    unsuccessful = [
        (task_id, row)
        for task_id, row in zip(task.depends_on, rows, strict=True)
        if row is None or (row.status.is_terminal and row.status is not TaskStatus.SUCCEEDED)
    ]
    all_finished = all(row is None or row.status.is_terminal for row in rows)  # a missing one is over too
    if task.run_on == "success" and unsuccessful:
        return _stopped(task, *unsuccessful[0])
    if not all_finished:
        return None
    if task.run_on == "failure" and not unsuccessful:
        error = TaskError(
            type=type_name(TaskCancelled),
            message="cancelled: every dependency succeeded (run_on='failure')",
            attempt=task.attempt,
        )
        return DependencyMove(task_id=task.id, source=TaskStatus.WAITING, target=TaskStatus.CANCELLED, error=error)
    return DependencyMove(task_id=task.id, source=TaskStatus.WAITING, target=TaskStatus.PENDING)


def rearm_move(task: Task) -> DependencyMove | None:
    """Return the move that makes ``task`` wait again, if a dependency stopped it; else ``None``."""
    stopped = task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED) and task.depends_on
    if not stopped or task.error is None or task.error.type not in _STOPPED_BY_DEPENDENCY or task.attempt:
        return None
    return DependencyMove(task_id=task.id, source=task.status, target=TaskStatus.WAITING)


async def settle_dependents(storage: Storage, finished: Iterable[Task]) -> builtins.list[Task]:
    """Move on the tasks waiting for ``finished`` ones, and theirs in turn; return every task moved.

    Args:
        storage: the queue's store.
        finished: tasks as a transition left them (those not finished are skipped).
    """
    frontier = [task.id for task in finished if task.status.is_terminal]
    moved: builtins.list[Task] = []
    while frontier:
        waiting = [task for task in await storage.dependents(frontier) if task.status is TaskStatus.WAITING]
        if not waiting:
            break
        step = await _move(storage, waiting)
        moved += step
        frontier = [task.id for task in step if task.status.is_terminal]
    return moved


async def arm(storage: Storage, tasks: Sequence[Task]) -> builtins.list[Task]:
    """Move on the just-inserted waiting ``tasks`` whose dependencies already finished; return those moved."""
    waiting = [task for task in tasks if task.status is TaskStatus.WAITING]
    if not waiting:
        return []
    moved = await _move(storage, waiting)
    return moved + await settle_dependents(storage, moved)


async def rearm_dependents(storage: Storage, retried: Task) -> builtins.list[Task]:
    """Make the tasks that ``retried``'s failure stopped (and those they stopped) wait again; return them."""
    frontier = [retried.id]
    rearmed: builtins.list[Task] = []
    while frontier:
        moves = [move for task in await storage.dependents(frontier) if (move := rearm_move(task)) is not None]
        if not moves:
            break
        step = await storage.move_dependents(moves)
        rearmed += step
        frontier = [task.id for task in step]
    return rearmed


async def sweep(storage: Storage, *, limit: int = 1000) -> builtins.list[Task]:
    """Move on waiting tasks whose dependencies all finished (a process died before it did); return them."""
    waiting = await storage.list(statuses=[TaskStatus.WAITING], limit=limit)
    moved = await _move(storage, waiting)
    return moved + await settle_dependents(storage, moved)


async def _move(storage: Storage, waiting: Sequence[Task]) -> builtins.list[Task]:
    """Read the dependencies of ``waiting`` tasks and apply the moves they call for."""
    needed = sorted({task_id for task in waiting for task_id in task.depends_on})
    rows = {row.id: row for row in await storage.get_many(needed)} if needed else {}
    moves = [move for task in waiting if (move := dependency_move(task, rows)) is not None]
    return await storage.move_dependents(moves) if moves else []


def _stopped(task: Task, dependency_id: str, dependency: Task | None) -> DependencyMove:
    """Return the move that stops ``task`` because ``dependency`` did not succeed (naming the first failed ancestor)."""
    if dependency is None:
        reason = f"dependency {dependency_id} no longer exists"
    elif dependency.error is not None and dependency.error.type in _STOPPED_BY_DEPENDENCY:
        reason = dependency.error.message  # it names the ancestor that failed first
    else:
        reason = f"dependency {dependency_id} ({dependency.name}) {_WORDS.get(dependency.status, 'failed')}"
        if dependency.error is not None and dependency.status is TaskStatus.FAILED:
            reason += f": {dependency.error.type.rpartition('.')[2]}: {dependency.error.message}"
    cancelled = dependency is not None and dependency.status is TaskStatus.CANCELLED
    kind = TaskCancelled if cancelled else DependencyFailed
    target = TaskStatus.CANCELLED if cancelled else TaskStatus.FAILED
    error = TaskError(type=type_name(kind), message=reason, attempt=task.attempt)
    return DependencyMove(task_id=task.id, source=TaskStatus.WAITING, target=target, error=error)
