"""Contract: ``claim(skip_kinds=...)`` leaves tasks of those kinds for another pool (gevent tasks, for gevent workers).

Every backend: a task whose ``kind`` is skipped is neither claimed nor touched (attempt 0,
still pending), tasks without a kind or of another kind are claimed as usual, and a claim
that skips nothing takes the skipped task.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from omniq_nb.models import Task, TaskStatus
from omniq_nb.storage import Storage

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]


async def test_claim_skips_the_kinds_it_is_told_and_only_those(store: Storage, make_task: MakeTask) -> None:
    gevent, plain, thread = make_task(kind="gevent"), make_task(), make_task(kind="thread")
    await store.insert([gevent, plain, thread])
    claimed = await store.claim(queues=["default"], limit=10, lease=30, worker="w", skip_kinds=("gevent",))
    assert {t.id for t in claimed} == {plain.id, thread.id}
    left = await store.get(gevent.id)
    assert left is not None and left.status is TaskStatus.PENDING and left.attempt == 0
    assert await store.claim(queues=["default"], limit=10, lease=30, worker="w", skip_kinds=("gevent",)) == []

    [taken] = await store.claim(queues=["default"], limit=10, lease=30, worker="gevent-worker")
    assert (taken.id, taken.attempt, taken.kind) == (gevent.id, 1, "gevent")


async def test_claim_skips_kinds_together_with_kernel_affinity(store: Storage, make_task: MakeTask) -> None:
    mine_gevent, mine = make_task(kind="gevent", owner="k1"), make_task(owner="k1")
    await store.insert([mine_gevent, mine])
    claimed = await store.claim(
        queues=["default"], limit=10, lease=30, worker="w", unowned_only=True, owner="k1", skip_kinds=("gevent",)
    )
    assert [t.id for t in claimed] == [mine.id]
