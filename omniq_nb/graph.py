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
import logging
from collections.abc import Awaitable, Iterable, Mapping, Sequence

import msgspec

from omniq_nb.errors import DependencyFailed, InvalidTransition, TaskCancelled, TaskNotFound, type_name
from omniq_nb.models import DependencyMove, Task, TaskError, TaskStatus
from omniq_nb.storage import Storage

__all__ = [
    "arm",
    "check_known",
    "dependency_move",
    "followed",
    "rearm_dependents",
    "rearm_move",
    "settle_dependents",
    "sweep",
    "wait_again",
    "waiting_for",
]

logger = logging.getLogger(__name__)

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
    known = {task.id: task for task in finished if task.status.is_terminal}
    moved: builtins.list[Task] = []
    while known:
        waiting = [task for task in await storage.dependents(builtins.list(known)) if task.status is TaskStatus.WAITING]
        if not waiting:
            break
        step, _ = await _move(storage, waiting, known)
        moved += step
        known = {task.id: task for task in step if task.status.is_terminal}
    return moved


async def arm(storage: Storage, tasks: Sequence[Task]) -> builtins.list[Task]:
    """Move on the just-inserted waiting ``tasks`` whose dependencies already finished; return those moved.

    Those that the follow-up of a dependency finishing meanwhile moved first are returned too,
    read again: the caller makes handles of them, which must not show them still waiting.
    """
    waiting = [task for task in tasks if task.status is TaskStatus.WAITING]
    if not waiting:
        return []
    moved, taken = await _move(storage, waiting)
    fresh = await storage.get_many(taken) if taken else []  # their rows as they are now, for the new handles
    return moved + await settle_dependents(storage, moved) + fresh


async def rearm_dependents(storage: Storage, retried: Task) -> builtins.list[Task]:
    """Make the tasks that ``retried``'s failure stopped (and those they stopped) wait again; return them.

    Should ``retried`` have finished again meanwhile (a fast worker), they move on at once.
    """
    frontier = [retried.id]
    rearmed: builtins.list[Task] = []
    while frontier:
        moves = [move for task in await storage.dependents(frontier) if (move := rearm_move(task)) is not None]
        if not moves:
            break
        step = await storage.move_dependents(moves)
        rearmed += step
        frontier = [task.id for task in step]
    moved = {row.id: row for row in await arm(storage, rearmed)}
    return [moved.pop(row.id, row) for row in rearmed] + builtins.list(moved.values())


async def wait_again(storage: Storage, task: Task) -> builtins.list[Task]:
    """Make ``task``, stopped by a dependency, wait again (a retry); return it and every task that moved.

    It moves on at once if its dependencies are all done by now; the tasks its stop stopped
    wait again too. Returns ``[]`` when ``task`` was not stopped by a dependency.

    Raises:
        InvalidTransition: a dependency it needs still failed: that one is to be retried.
    """
    move = rearm_move(task)
    if move is None:
        return []
    rows = {row.id: row for row in await storage.get_many(builtins.list(task.depends_on))}
    decided = dependency_move(msgspec.structs.replace(task, status=TaskStatus.WAITING), rows)
    if decided is not None and decided.target is not TaskStatus.PENDING:
        reason = decided.error.message if decided.error is not None else "a dependency did not succeed"
        raise InvalidTransition(
            f"task {task.id} never ran: {reason}; retry that task instead (the tasks it stopped then wait again)"
        )
    waiting = await storage.move_dependents([move])
    if not waiting:
        return []
    moved = {row.id: row for row in await arm(storage, waiting)}
    others = [row for row in moved.values() if row.id != task.id]
    return [moved.get(task.id, waiting[0]), *others, *await rearm_dependents(storage, task)]


async def followed(step: Awaitable[builtins.list[Task]], what: str) -> builtins.list[Task]:
    """Await a follow-up ``step`` of a transition that already happened; log a failure instead of raising.

    The transition stands (raising would make a caller repeat it, and enqueue twice); what
    the step did not do, the maintenance runner's sweep does later.
    """
    try:
        return await step
    except Exception as exc:
        logger.warning("could not move on the tasks waiting for %s (the maintenance sweep will): %s", what, exc)
        return []


async def sweep(storage: Storage, *, limit: int = 1000) -> builtins.list[Task]:
    """Move on waiting tasks whose dependencies all finished (a process died before it did); return them."""
    waiting = await storage.list(statuses=[TaskStatus.WAITING], limit=limit)
    moved, _ = await _move(storage, waiting)
    return moved + await settle_dependents(storage, moved)


async def _move(
    storage: Storage, waiting: Sequence[Task], known: Mapping[str, Task] | None = None
) -> tuple[builtins.list[Task], builtins.list[str]]:
    """Read the dependencies of ``waiting`` tasks and apply the moves they call for.

    ``known`` rows (the tasks that just finished) are not read again. First each task's last
    other dependency is read, the likeliest to be unfinished (dependencies run in enqueue
    order): a task it shows unfinished waits on, unread further, so a task waiting for
    thousands costs one row per wake-up, not all of them. The rest read all they need.

    Returns:
        The tasks moved, and the ids of those another writer moved first (the follow-up of a
        dependency that finished meanwhile).
    """
    rows = dict(known or {})

    async def read(task_ids: Iterable[str]) -> None:
        unread = sorted(set(task_ids) - rows.keys())
        if unread:
            rows.update((row.id, row) for row in await storage.get_many(unread))

    await read(
        next(i for i in reversed(t.depends_on) if i not in rows) for t in waiting if set(t.depends_on) - rows.keys()
    )
    deciding = [task for task in waiting if not any(_unfinished(rows.get(i)) for i in task.depends_on)]
    await read(task_id for task in deciding for task_id in task.depends_on)
    moves = [move for task in deciding if (move := dependency_move(task, rows)) is not None]
    applied = await storage.move_dependents(moves) if moves else []
    return applied, sorted({move.task_id for move in moves} - {task.id for task in applied})


def _unfinished(row: Task | None) -> bool:
    """Return True for a dependency read and found not finished (unread ones are not known to be)."""
    return row is not None and not row.status.is_terminal


def _stopped(task: Task, dependency_id: str, dependency: Task | None) -> DependencyMove:
    """Return the move that stops ``task`` because ``dependency`` did not succeed (naming the first failed ancestor)."""
    if dependency is None:
        reason = f"dependency {dependency_id} no longer exists"
    elif dependency.error is not None and dependency.error.message.startswith("dependency "):
        reason = dependency.error.message  # a stop of its own: it names the ancestor that failed first
    else:
        reason = f"dependency {dependency_id} ({dependency.name}) {_WORDS.get(dependency.status, 'failed')}"
        if dependency.error is not None and dependency.status is TaskStatus.FAILED:
            reason += f": {dependency.error.type.rpartition('.')[2]}: {dependency.error.message}"
    cancelled = dependency is not None and dependency.status is TaskStatus.CANCELLED
    kind = TaskCancelled if cancelled else DependencyFailed
    target = TaskStatus.CANCELLED if cancelled else TaskStatus.FAILED
    error = TaskError(type=type_name(kind), message=reason, attempt=task.attempt)
    return DependencyMove(task_id=task.id, source=TaskStatus.WAITING, target=target, error=error)
