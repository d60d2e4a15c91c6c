"""Contract: tasks that wait for others (``waiting``), the ``dependents`` lookup and ``move_dependents``.

The store keeps ``depends_on`` and ``run_on`` as given, never claims a waiting task, finds
dependents by dependency, and applies each move once (a compare-and-set on the status), so
``omniq_nb.graph`` can promote a dependent exactly once when two of its dependencies finish
at the same time in two connections.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from omniq_nb import graph
from omniq_nb.models import DependencyMove, EventKind, Task, TaskError, TaskResult, TaskStatus
from omniq_nb.storage import Storage

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]
BOOM = TaskError(type="builtins.ValueError", message="boom", attempt=1)


async def claim_all(store: Storage) -> dict[str, Task]:
    """Claim every ready task, by id."""
    return {t.id: t for t in await store.claim(queues=["default"], limit=100, lease=30, worker="w")}


async def finish(store: Storage, task: Task, status: TaskStatus, error: TaskError | None = None) -> list[Task]:
    """Settle a claimed task as ``status``; return what ``settle`` accepted."""
    return await store.settle(
        [TaskResult(task_id=task.id, lease_token=task.lease_token or "", status=status, error=error)]
    )


async def complete(store: Storage, task: Task, moved: list[list[Task]]) -> None:
    """Finish ``task`` as succeeded, then move its dependents on; add what moved to ``moved``."""
    moved.append(await graph.settle_dependents(store, await finish(store, task, TaskStatus.SUCCEEDED)))


def waiting(make_task: MakeTask, *on: Task, **fields: Any) -> Task:
    return make_task(status=TaskStatus.WAITING, depends_on=tuple(t.id for t in on), **fields)


async def test_a_waiting_task_is_kept_as_given_and_never_claimed(store: Storage, make_task: MakeTask) -> None:
    first = make_task()
    second = waiting(make_task, first, run_on="any")
    await store.insert([first, second])

    stored = await store.get(second.id)
    assert stored is not None
    assert (stored.status, stored.depends_on, stored.run_on) == (TaskStatus.WAITING, (first.id,), "any")
    claimed = await store.claim(queues=["default"], limit=10, lease=30, worker="w")
    assert [t.id for t in claimed] == [first.id]
    assert [t.id for t in await store.list(statuses=[TaskStatus.WAITING])] == [second.id]
    counts = await store.count()
    assert (counts[TaskStatus.WAITING], counts[TaskStatus.RUNNING]) == (1, 1)
    assert [e.kind for e in await store.events(task_id=second.id)] == [EventKind.ENQUEUED]


async def test_insert_many_keeps_the_templates_dependencies(store: Storage, make_task: MakeTask) -> None:
    first = make_task()
    await store.insert([first])
    template = waiting(make_task, first, run_on="failure")
    await store.insert_many(template, [("a" * 32, b"1"), ("b" * 32, b"2")])

    rows = await store.get_many(["a" * 32, "b" * 32])
    assert {(t.status, t.depends_on, t.run_on) for t in rows} == {(TaskStatus.WAITING, (first.id,), "failure")}


async def test_dependents_are_found_by_any_of_their_dependencies(store: Storage, make_task: MakeTask) -> None:
    a, b, c = make_task(), make_task(), make_task()
    on_a = waiting(make_task, a)
    on_both = waiting(make_task, a, b)
    await store.insert([a, b, c, on_a, on_both])

    assert {t.id for t in await store.dependents([a.id])} == {on_a.id, on_both.id}
    assert [t.id for t in await store.dependents([b.id])] == [on_both.id]
    assert [t.id for t in await store.dependents([a.id, b.id])].count(on_both.id) == 1
    assert await store.dependents([c.id]) == []
    assert await store.dependents([]) == []


async def test_a_move_applies_only_from_its_source_status_and_once(store: Storage, make_task: MakeTask) -> None:
    first = make_task()
    second = waiting(make_task, first)
    await store.insert([first, second])
    ready = DependencyMove(task_id=second.id, source=TaskStatus.WAITING, target=TaskStatus.PENDING)

    [moved] = await store.move_dependents([ready])
    assert (moved.id, moved.status, moved.error, moved.finished_at) == (second.id, TaskStatus.PENDING, None, None)
    assert await store.move_dependents([ready]) == []  # no longer waiting: applied once
    stopped = DependencyMove(task_id=second.id, source=TaskStatus.WAITING, target=TaskStatus.FAILED, error=BOOM)
    assert await store.move_dependents([stopped]) == []
    unknown = DependencyMove(task_id="f" * 32, source=TaskStatus.WAITING, target=TaskStatus.PENDING)
    assert await store.move_dependents([unknown]) == []
    claimed = await store.claim(queues=["default"], limit=10, lease=30, worker="w")
    assert {t.id for t in claimed} == {first.id, second.id}  # the promoted task is claimable
    assert [e.kind for e in await store.events(task_id=second.id)] == [
        EventKind.ENQUEUED,
        EventKind.READY,
        EventKind.STARTED,
    ]


async def test_a_stopped_dependent_finishes_with_the_error_and_can_be_re_armed(
    store: Storage, make_task: MakeTask
) -> None:
    first = make_task()
    second = waiting(make_task, first)
    await store.insert([first, second])
    stop = DependencyMove(task_id=second.id, source=TaskStatus.WAITING, target=TaskStatus.FAILED, error=BOOM)

    [failed] = await store.move_dependents([stop])
    assert (failed.status, failed.error) == (TaskStatus.FAILED, BOOM)
    assert failed.finished_at is not None
    rearm = DependencyMove(task_id=second.id, source=TaskStatus.FAILED, target=TaskStatus.WAITING)
    [again] = await store.move_dependents([rearm])
    assert (again.status, again.error, again.finished_at) == (TaskStatus.WAITING, None, None)
    assert await store.claim(queues=["default"], limit=10, lease=30, worker="w") != []  # only `first`
    stored = await store.get(second.id)
    assert stored is not None and stored.status is TaskStatus.WAITING
    kinds = [e.kind for e in await store.events(task_id=second.id)]
    assert kinds == [EventKind.ENQUEUED, EventKind.FAILED, EventKind.RETRIED]


async def test_a_waiting_task_can_be_cancelled(store: Storage, make_task: MakeTask) -> None:
    first = make_task()
    second = waiting(make_task, first)
    await store.insert([first, second])

    cancelled = await store.cancel(second.id)
    assert cancelled is not None and cancelled.status is TaskStatus.CANCELLED
    assert (
        await store.move_dependents(
            [DependencyMove(task_id=second.id, source=TaskStatus.WAITING, target=TaskStatus.PENDING)]
        )
        == []
    )


async def test_purging_everything_takes_waiting_tasks_and_their_links(store: Storage, make_task: MakeTask) -> None:
    first = make_task()
    second = waiting(make_task, first)
    await store.insert([first, second])
    await store.purge(everything=True)

    assert await store.get(second.id) is None
    assert await store.dependents([first.id]) == []


async def test_the_last_dependency_finishing_promotes_its_dependent(store: Storage, make_task: MakeTask) -> None:
    a, b = make_task(), make_task()
    sink = waiting(make_task, a, b)
    await store.insert([a, b, sink])
    claimed = await claim_all(store)

    assert await graph.settle_dependents(store, await finish(store, claimed[a.id], TaskStatus.SUCCEEDED)) == []
    [promoted] = await graph.settle_dependents(store, await finish(store, claimed[b.id], TaskStatus.SUCCEEDED))
    assert (promoted.id, promoted.status) == (sink.id, TaskStatus.PENDING)


async def test_a_failure_stops_dependents_transitively_naming_the_first_failed_ancestor(
    store: Storage, make_task: MakeTask
) -> None:
    root = make_task(name="tests.preprocess")
    middle = waiting(make_task, root)
    leaf = waiting(make_task, middle)
    anyway = waiting(make_task, middle, run_on="any")
    await store.insert([root, middle, leaf, anyway])

    claimed = await claim_all(store)
    moved = await graph.settle_dependents(store, await finish(store, claimed[root.id], TaskStatus.FAILED, BOOM))

    by_id = {t.id: t for t in moved}
    assert by_id[middle.id].status is TaskStatus.FAILED
    assert by_id[leaf.id].status is TaskStatus.FAILED
    assert by_id[anyway.id].status is TaskStatus.PENDING
    for task in (by_id[middle.id], by_id[leaf.id]):
        assert task.error is not None and root.id in task.error.message
        assert task.error.type == "omniq_nb.errors.DependencyFailed"


async def test_two_dependencies_finishing_at_once_in_two_connections_promote_once(
    store: Storage, twin: Storage, make_task: MakeTask
) -> None:
    for _ in range(5):
        a, b = make_task(), make_task()
        sink = waiting(make_task, a, b)
        await store.insert([a, b, sink])
        claimed = await claim_all(store)
        moved: list[list[Task]] = []

        async with anyio.create_task_group() as group:
            group.start_soon(complete, store, claimed[a.id], moved)
            group.start_soon(complete, twin, claimed[b.id], moved)

        assert sorted(len(m) for m in moved) == [0, 1], "promoted twice, or not at all"
        ready = [e for e in await store.events(task_id=sink.id) if e.kind is EventKind.READY]
        assert len(ready) == 1
        await store.purge(everything=True)
