"""``q.enqueue`` / ``q.enqueue_call``: what is stored, option defaults and the errors raised at enqueue time."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from emulated_worker import claim

import omniq_nb
from omniq_nb import (
    AsyncOmniQ,
    ConfigError,
    Schedule,
    SerializationError,
    TaskHandle,
    TaskStatus,
)

pytestmark = pytest.mark.anyio

UTC = timezone.utc


def add(a: int, b: int = 0) -> int:  # defined here: a task's name is its function's module.qualname
    return a + b


async def test_enqueue_stores_a_pending_task(q: AsyncOmniQ) -> None:
    h = await q.enqueue(add, 1, b=2)
    assert isinstance(h, TaskHandle)
    assert h.status == "pending"
    assert h.status is TaskStatus.PENDING
    assert (h.attempt, h.progress, h.error, h.done()) == (0, 0.0, None, False)
    task = await q.storage.get(h.id)
    assert task is not None
    assert task.name == f"{__name__}.add"
    assert task.queue == "default"
    assert task.retries == 0
    fn, args, kwargs = q.serializer.load_call(task.payload)
    assert fn(*args, **kwargs) == 3


async def test_enqueue_call_stores_every_option(q: AsyncOmniQ) -> None:
    h = await q.enqueue_call(
        add,
        args=(1,),
        kwargs={"b": 2},
        retries=3,
        retry_on=[KeyError],
        timeout=12,
        priority=5,
        queue="gpu",
        result_ttl=600,
        at_most_once=True,
        kind="process",
        name="adder",
    )
    task = await q.storage.get(h.id)
    assert task is not None
    assert task.retries == 3
    assert task.max_attempts == 4
    assert task.retry_on == ("KeyError",)
    assert task.timeout == 12.0
    assert task.priority == 5
    assert task.queue == "gpu"
    assert task.result_ttl == 600.0
    assert task.at_most_once is True
    assert task.kind == "process"
    assert task.name == "adder"
    assert task.schedule is None
    assert task.expires_at is None


async def test_delay_sets_eta(q: AsyncOmniQ) -> None:
    h = await q.enqueue_call(add, args=(1,), delay=timedelta(minutes=5))
    task = await q.storage.get(h.id)
    assert task is not None
    assert abs((task.eta - task.created_at) - timedelta(minutes=5)) < timedelta(milliseconds=1)
    assert await claim(q) == []  # not ready yet


async def test_eta_is_stored_in_utc(q: AsyncOmniQ) -> None:
    eta = datetime(2030, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    task = (await q.get((await q.enqueue_call(add, args=(1,), eta=eta)).id)).task
    assert task.eta == eta
    assert task.eta.utcoffset() == timedelta(0)


async def test_ttl_sets_expires_at(q: AsyncOmniQ) -> None:
    task = (await q.get((await q.enqueue_call(add, args=(1,), ttl=90)).id)).task
    assert task.expires_at is not None
    assert abs((task.expires_at - task.created_at) - timedelta(seconds=90)) < timedelta(milliseconds=1)


async def test_settings_give_defaults(tmp_path: Path) -> None:
    async with AsyncOmniQ(db_url="memory://", default_queue="batch", default_retries=2, task_ttl=30, result_ttl=5) as q:
        task = (await q.get((await q.enqueue(add, 1)).id)).task
    assert (task.queue, task.retries, task.result_ttl) == ("batch", 2, 5.0)
    assert task.expires_at is not None


async def test_explicit_none_opts_out_of_the_ttl_settings_and_leaving_them_out_takes_them() -> None:
    """Issue 13: with TASK_TTL / RESULT_TTL set, ``ttl=None`` / ``result_ttl=None`` mean no limit."""
    async with AsyncOmniQ(db_url="memory://", task_ttl=30, result_ttl=5) as q:
        defaulted = (await q.get((await q.enqueue(add, 1)).id)).task
        unlimited = (await q.get((await q.enqueue_call(add, args=(1,), ttl=None, result_ttl=None)).id)).task
        asked = (await q.get((await q.enqueue_call(add, args=(1,), ttl=omniq_nb.DEFAULT)).id)).task
        group = await q.enqueue_many(add, [(1,), (2,)], ttl=None, result_ttl=None)
        mapped = [(await q.get(task_id)).task for task_id in group.ids]
    assert defaulted.expires_at == defaulted.created_at + timedelta(seconds=30)
    assert defaulted.result_ttl == 5.0
    assert (unlimited.expires_at, unlimited.result_ttl) == (None, None)
    assert asked.expires_at == asked.created_at + timedelta(seconds=30)
    assert [(t.expires_at, t.result_ttl) for t in mapped] == [(None, None), (None, None)]


async def test_ttl_zero_says_that_none_means_no_expiry(q: AsyncOmniQ) -> None:
    with pytest.raises(ValueError, match="ttl=None means no limit"):
        await q.enqueue_call(add, args=(1,), ttl=0)


@pytest.mark.parametrize(
    ("options", "schedule"),
    [
        ({"cron": "*/5 * * * *"}, Schedule(cron="*/5 * * * *")),
        ({"interval": 60}, Schedule(interval=timedelta(seconds=60))),
        ({"interval": timedelta(hours=1)}, Schedule(interval=timedelta(hours=1))),
    ],
)
async def test_cron_and_interval_set_a_schedule(q: AsyncOmniQ, options: dict[str, Any], schedule: Schedule) -> None:
    task = (await q.get((await q.enqueue_call(add, args=(1,), **options)).id)).task
    assert task.schedule == schedule
    assert task.series == task.id
    assert task.eta > task.created_at  # the first run waits for the first slot


async def test_bad_options_fail_at_enqueue(q: AsyncOmniQ) -> None:
    with pytest.raises(TypeError, match="retrys"):
        await q.enqueue_call(add, retrys=1)
    with pytest.raises(ValueError, match="eta"):
        await q.enqueue_call(add, eta=datetime.now(UTC), delay=1)
    with pytest.raises(TypeError, match="callable"):
        await q.enqueue(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"cron='0 0 31 2 \*' matches no time"):
        await q.enqueue_call(add, cron="0 0 31 2 *")
    assert await q.list() == []


async def test_unpicklable_argument_fails_at_enqueue(q: AsyncOmniQ) -> None:
    with pytest.raises(SerializationError, match="argument 1") as info:
        await q.enqueue(add, 1, threading.Lock())
    assert "lock" in str(info.value)
    with pytest.raises(SerializationError, match="'b'"):
        await q.enqueue_call(add, args=(1,), kwargs={"b": threading.Lock()})
    assert await q.list() == []


async def test_enqueue_many_refuses_an_unpicklable_function_or_argument_and_inserts_nothing(q: AsyncOmniQ) -> None:
    lock = threading.Lock()

    def holds_a_lock(n: int) -> bool:
        return lock.locked() or n > 0

    with pytest.raises(SerializationError):
        await q.enqueue_many(holds_a_lock, [])  # the function is pickled even for no calls
    with pytest.raises(SerializationError, match="argument 1"):
        await q.enqueue_many(add, [(n, n) for n in range(6000)] + [(1, threading.Lock())])
    assert await q.list() == []
