"""Contract: the result cache's lookup (``cached``) and ``forget_cached``.

A task inserted with a ``cache_key`` answers ``cached([key])`` once it succeeded, newest
first, within ``finished_after``; ``forget_cached`` clears keys (all, or one function's) so
later submissions run again; purge takes the entries with the tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from omniq_nb.models import Task, TaskError, TaskResult, TaskStatus
from omniq_nb.storage import Storage

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]


async def cached(store: Storage, key: str, **options: Any) -> Task | None:
    """Ask the store for one key."""
    found = await store.cached([key], **options)
    assert set(found) <= {key}
    return found.get(key)


async def run(store: Storage, *tasks: Task, status: TaskStatus = TaskStatus.SUCCEEDED) -> None:
    """Insert ``tasks``, claim them and finish each as ``status``, one after the other."""
    await store.insert(tasks)
    for task in tasks:
        [claimed] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
        assert claimed.id == task.id
        error = None if status is TaskStatus.SUCCEEDED else TaskError(type="builtins.ValueError", message="no")
        result = b"r-" + task.id.encode() if status is TaskStatus.SUCCEEDED else None
        outcome = TaskResult(
            task_id=task.id, lease_token=claimed.lease_token or "", status=status, result=result, error=error
        )
        assert await store.settle([outcome])


async def test_a_succeeded_task_answers_its_key_with_its_result(store: Storage, make_task: MakeTask) -> None:
    task = make_task(cache_key="k1")
    await store.insert([make_task()])  # no key: never an answer
    assert await cached(store, "k1") is None  # not inserted yet
    await run(store, task)

    hit = await cached(store, "k1")
    assert hit is not None
    assert (hit.id, hit.status, hit.cache_key, hit.result) == (
        task.id,
        TaskStatus.SUCCEEDED,
        "k1",
        b"r-" + task.id.encode(),
    )
    assert await cached(store, "k2") is None
    assert (await store.get(task.id)) == hit


async def test_only_a_success_counts_and_the_newest_wins(store: Storage, make_task: MakeTask) -> None:
    waiting = make_task(cache_key="k", status=TaskStatus.WAITING, depends_on=("x" * 32,))
    pending = make_task(cache_key="k")
    await store.insert([waiting])
    failed, old, new = make_task(cache_key="k"), make_task(cache_key="k"), make_task(cache_key="k")
    await run(store, failed, status=TaskStatus.FAILED)
    assert await cached(store, "k") is None
    await run(store, old)
    await run(store, new)
    await store.insert([pending])

    hit = await cached(store, "k")
    assert hit is not None and hit.id == new.id


async def test_finished_after_leaves_older_successes_out(store: Storage, make_task: MakeTask) -> None:
    task = make_task(cache_key="k")
    await run(store, task)
    stored = await store.get(task.id)
    assert stored is not None and stored.finished_at is not None

    # a second before: stores keep times as floats, so the exact instant may round either way
    assert (await cached(store, "k", finished_after=stored.finished_at - timedelta(seconds=1))) is not None
    assert await cached(store, "k", finished_after=datetime(2999, 1, 1, tzinfo=timezone.utc)) is None


async def test_forget_cached_clears_one_name_or_all(store: Storage, make_task: MakeTask) -> None:
    fit_a, fit_b, load = (
        make_task(name="nb.fit", cache_key="a"),
        make_task(name="nb.fit", cache_key="b"),
        make_task(name="nb.load", cache_key="c"),
    )
    plain = make_task(name="nb.fit")
    await run(store, fit_a, fit_b, load, plain)

    assert await store.forget_cached(name="nb.fit") == 2
    assert await cached(store, "a") is None and await cached(store, "b") is None
    assert (await cached(store, "c")) is not None
    assert await store.forget_cached(name="nb.fit") == 0
    assert await store.forget_cached() == 1
    assert await cached(store, "c") is None
    kept = await store.get(load.id)
    assert kept is not None and (kept.status, kept.cache_key, kept.result) == (
        TaskStatus.SUCCEEDED,
        None,
        b"r-" + load.id.encode(),
    )

    again = make_task(name="nb.load", cache_key="c")  # a new entry after a forget is found
    await run(store, again)
    hit = await cached(store, "c")
    assert hit is not None and hit.id == again.id


async def test_purge_takes_the_cache_entries_with_the_tasks(store: Storage, make_task: MakeTask) -> None:
    task = make_task(cache_key="k", result_ttl=0.0)
    await run(store, task)
    assert await store.purge() == 1
    assert await cached(store, "k") is None
    assert await store.forget_cached() == 0


async def test_one_call_answers_many_keys(store: Storage, make_task: MakeTask) -> None:
    tasks = [make_task(cache_key=f"key-{n}") for n in range(30)]
    await store.insert(tasks)
    claimed = await store.claim(queues=["default"], limit=30, lease=30, worker="w")
    await store.settle(
        [
            TaskResult(task_id=t.id, lease_token=t.lease_token or "", status=TaskStatus.SUCCEEDED, result=b"ok")
            for t in claimed
        ]
    )
    asked = [f"key-{n}" for n in range(1000)] + ["key-3", "unknown"]  # past any statement's parameter limit
    found = await store.cached(asked)
    assert {key: task.id for key, task in found.items()} == {f"key-{n}": t.id for n, t in enumerate(tasks)}
    assert await store.cached([]) == {}
