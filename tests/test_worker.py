"""In-process worker pools: every executor kind against a real SQLite file.

Task functions live in ``worker_tasks`` (importable by the child processes of process pools).
Tests synchronise on conditions (files written by tasks, stored statuses) with bounded waits.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
import worker_tasks as wt

from omniq_nb import (
    AsyncOmniQ,
    AsyncWorkerPool,
    ConfigError,
    EventKind,
    OmniQ,
    SignatureError,
    Task,
    TaskCancelled,
    TaskEvent,
    TaskExpired,
    TaskFailed,
    TaskStatus,
    TaskTimeout,
    WorkerLost,
    WorkerPool,
)

pytestmark = pytest.mark.anyio

UTC = timezone.utc
KINDS = ["async", "thread", "process"]
Wait = Callable[..., Any]
RESULT_WAIT = 30.0  # seconds a test waits for a result at most (generous: a loaded 2-core machine)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'omniq.db'}"


@pytest.fixture
async def q(db_url: str) -> AsyncIterator[AsyncOmniQ]:
    async with AsyncOmniQ(db_url=db_url, retry_backoff=0.05, poll_interval=0.05) as queue:
        yield queue


async def stored(q: AsyncOmniQ, task_id: str) -> Task:
    task = await q.storage.get(task_id)
    assert task is not None, f"task {task_id} is gone"
    return task


async def kinds_of_events(q: AsyncOmniQ, task_id: str) -> list[EventKind]:
    return [event.kind for event in await q.events(task_id=task_id)]


def read(path: Path | str) -> str:
    return Path(path).read_text()


def exists(path: Path | str) -> bool:
    return Path(path).exists()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def holds_within(predicate: Callable[[], Any], seconds: float) -> bool:
    """Poll an async ``predicate`` until it holds; return False (not fail) after ``seconds``."""
    with anyio.move_on_after(seconds):
        while True:
            if await predicate():
                return True
            await anyio.sleep(0.02)
    return False


def blocking_fn(kind: str) -> Callable[..., Any]:
    """A task that waits for a gate: on the loop for the async kind, else in a thread or child."""
    return wt.async_gated if kind == "async" else wt.gated


# --- each kind runs tasks -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_each_kind_runs_a_task_and_returns_its_value(q: AsyncOmniQ, kind: str) -> None:
    async with AsyncWorkerPool(q, concurrency=2, kind=kind, lease=5):
        sync = await q.enqueue(wt.add, 2, 3)
        coroutine = await q.enqueue(wt.async_add, 4, 5)
        info = await q.enqueue(wt.where)
        assert await sync.result(timeout=RESULT_WAIT) == 5
        assert await coroutine.result(timeout=RESULT_WAIT) == 9
        ran = await info.result(timeout=RESULT_WAIT)
    if kind == "process":
        assert ran["pid"] != os.getpid(), "a process pool ran a sync task in the parent"
    else:
        assert ran["pid"] == os.getpid()
    task = await stored(q, sync.id)
    assert task.status is TaskStatus.SUCCEEDED
    assert task.attempt == 1
    assert task.lease_token is None or task.status.is_terminal


@pytest.mark.parametrize("kind", KINDS)
async def test_current_gives_id_attempt_queue_and_run_id_inside_a_task(q: AsyncOmniQ, kind: str) -> None:
    fn = wt.async_where if kind == "async" else wt.where
    async with AsyncWorkerPool(q, concurrency=1, kind=kind, queues=["special"], lease=5):
        h = await q.enqueue_call(fn, queue="special")
        ran = await h.result(timeout=RESULT_WAIT)
    run_id = (await q.get(h.id)).task.run_id
    assert run_id
    assert ran["context"] == {"id": h.id, "task_id": h.id, "attempt": 1, "queue": "special", "run_id": run_id}
    assert wt.where()["context"] is None  # outside a task


# --- concurrency ----------------------------------------------------------------------------------


def max_overlap(folder: Path, names: list[str]) -> int:
    """Return how many of the recorded [start, end] intervals overlapped at most."""
    edges: list[tuple[float, int]] = []
    for name in names:
        edges.append((float((folder / f"{name}.start").read_text()), 1))
        edges.append((float((folder / f"{name}.end").read_text()), -1))
    running = peak = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):  # an end before a start at a tie
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("kind", KINDS)
async def test_concurrency_is_honoured_exactly(q: AsyncOmniQ, tmp_path: Path, kind: str, wait_until: Wait) -> None:
    folder, gate = tmp_path / "runs", tmp_path / "gate"
    names = [f"t{n}" for n in range(6)]
    fn = blocking_fn(kind)
    async with AsyncWorkerPool(q, concurrency=3, kind=kind, lease=5) as pool:
        handles = [await q.enqueue(fn, str(folder), name, str(gate)) for name in names]
        ids = [h.id for h in handles]

        def started() -> int:
            return len(list(folder.glob("*.start"))) if folder.exists() else 0

        await wait_until(lambda: started() >= 3, timeout=RESULT_WAIT)
        counts = await q.storage.count(task_ids=ids)
        assert counts.get(TaskStatus.RUNNING, 0) == 3
        assert counts.get(TaskStatus.PENDING, 0) == 3
        # An observation window (not synchronisation): with a 0.05 s poll the pool goes through
        # many claim cycles here, and must start no fourth task while three hold its slots.
        await anyio.sleep(0.5)
        assert started() == 3
        assert pool.busy == 3
        assert (await q.storage.count(task_ids=ids)).get(TaskStatus.RUNNING, 0) == 3

        gate.touch()
        assert await q.results(ids, timeout=RESULT_WAIT) == names
    assert max_overlap(folder, names) == 3


# --- retries --------------------------------------------------------------------------------------


async def test_retry_with_backoff_until_success(q: AsyncOmniQ, tmp_path: Path) -> None:
    counter = tmp_path / "calls"
    h = await q.enqueue_call(wt.flaky, args=(str(counter), 2), retries=3)
    async with AsyncWorkerPool(q, concurrency=2, kind="thread", lease=5):
        assert await h.result(timeout=RESULT_WAIT) == 3
    task = await stored(q, h.id)
    assert task.status is TaskStatus.SUCCEEDED
    assert task.attempt == 3
    events = await q.events(task_id=h.id)
    kinds = [e.kind for e in events]
    assert kinds.count(EventKind.STARTED) == 3
    assert kinds.count(EventKind.RETRIED) == 2
    assert kinds.count(EventKind.SUCCEEDED) == 1
    assert EventKind.FAILED not in kinds
    # Each retry waits its backoff: base 0.05 s doubling, with jitter between half and all of it.
    retried = [e for e in events if e.kind is EventKind.RETRIED]
    restarted = [e for e in events if e.kind is EventKind.STARTED][1:]
    for n, (retry, start) in enumerate(zip(retried, restarted, strict=True), start=1):
        assert retry.attempt == n
        assert start.attempt == n + 1
        assert (start.at - retry.at).total_seconds() >= 0.05 * 2 ** (n - 1) / 2 - 0.005


async def test_retry_on_limits_which_exceptions_retry(q: AsyncOmniQ, tmp_path: Path) -> None:
    other = await q.enqueue_call(wt.flaky, args=(str(tmp_path / "a"), 5, "KeyError"), retries=3, retry_on=[ValueError])
    listed = await q.enqueue_call(
        wt.flaky, args=(str(tmp_path / "b"), 1, "ValueError"), retries=3, retry_on=[ValueError]
    )
    base = await q.enqueue_call(wt.flaky, args=(str(tmp_path / "c"), 1, "KeyError"), retries=3, retry_on=[LookupError])
    async with AsyncWorkerPool(q, concurrency=3, kind="thread", lease=5):
        with pytest.raises(TaskFailed) as info:
            await other.result(timeout=RESULT_WAIT)
        assert await listed.result(timeout=RESULT_WAIT) == 2
        assert await base.result(timeout=RESULT_WAIT) == 2  # KeyError is a LookupError
    assert info.value.error.type == "KeyError"
    failed = await stored(q, other.id)
    assert failed.status is TaskStatus.FAILED
    assert failed.attempt == 1
    assert (tmp_path / "a").read_text() == "x"  # ran once
    assert EventKind.RETRIED not in await kinds_of_events(q, other.id)
    assert (await stored(q, listed.id)).attempt == 2


# --- timeouts -------------------------------------------------------------------------------------


async def test_timeout_cancels_an_async_task(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    marker = tmp_path / "slow"
    async with AsyncWorkerPool(q, concurrency=1, kind="async", lease=5):
        h = await q.enqueue_call(wt.async_wait_forever, args=(str(marker),), timeout=0.3)
        with pytest.raises(TaskTimeout, match="timed out"):
            await h.result(timeout=RESULT_WAIT)
        await wait_until(lambda: Path(f"{marker}.cancelled").exists(), timeout=RESULT_WAIT)
        assert await (await q.enqueue(wt.add, 1, 1)).result(timeout=RESULT_WAIT) == 2
    task = await stored(q, h.id)
    assert task.status is TaskStatus.FAILED
    assert task.error is not None and "timed out" in task.error.message


async def test_timeout_fails_a_thread_task_and_flags_it(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    marker = tmp_path / "slow"
    async with AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5):
        h = await q.enqueue_call(wt.wait_until_cancelled, args=(str(marker),), timeout=0.3)
        with pytest.raises(TaskTimeout) as info:
            await h.result(timeout=RESULT_WAIT)
        assert "timed out" in str(info.value)
        await wait_until(lambda: Path(f"{marker}.flagged").exists(), timeout=RESULT_WAIT)
        assert read(f"{marker}.flagged") == "cancelled"
        assert await (await q.enqueue(wt.add, 1, 1)).result(timeout=RESULT_WAIT) == 2
    task = await stored(q, h.id)
    assert task.status is TaskStatus.FAILED
    assert task.error is not None and task.error.type.endswith("TaskTimeout")


@pytest.mark.parametrize("kind", KINDS)
async def test_sys_exit_in_a_task_fails_only_that_task(q: AsyncOmniQ, kind: str) -> None:
    async with AsyncWorkerPool(q, concurrency=1, kind=kind, lease=5):
        h = await q.enqueue(wt.exit_softly, 3)
        with pytest.raises(TaskFailed, match="SystemExit"):
            await h.result(timeout=RESULT_WAIT)
        assert await (await q.enqueue(wt.add, 1, 1)).result(timeout=RESULT_WAIT) == 2
    task = await stored(q, h.id)
    assert task.status is TaskStatus.FAILED
    assert task.error is not None and task.error.type.endswith("SystemExit")


async def test_a_timed_out_thread_keeps_its_slot_until_it_returns(q: AsyncOmniQ, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    async with AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5) as pool:
        slow = await q.enqueue_call(wt.wait_for_gate_only, args=(str(gate),), timeout=0.3)
        with pytest.raises(TaskTimeout):
            await slow.result(timeout=RESULT_WAIT)
        following = await q.enqueue(wt.add, 1, 1)
        # An observation window (not synchronisation): the thread still runs, so its slot is
        # still taken and the next task must not start.
        await anyio.sleep(0.3)
        assert pool.busy == 1
        assert (await stored(q, following.id)).status is TaskStatus.PENDING
        gate.touch()
        assert await following.result(timeout=RESULT_WAIT) == 2
    assert pool.busy == 0


async def test_timeout_terminates_a_process_task(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    marker = tmp_path / "slow"
    async with AsyncWorkerPool(q, concurrency=1, kind="process", lease=5):
        child = await (await q.enqueue(wt.pid)).result(timeout=RESULT_WAIT)  # start the child first
        h = await q.enqueue_call(wt.sleep_in_process, args=(str(marker),), timeout=1.0)
        with pytest.raises(TaskTimeout, match="timed out"):
            await h.result(timeout=RESULT_WAIT)
        assert marker.read_text() == str(child)
        await wait_until(lambda: not pid_alive(child), timeout=RESULT_WAIT)
        assert await (await q.enqueue(wt.add, 1, 1)).result(timeout=RESULT_WAIT) == 2
    assert not exists(f"{marker}.finished")
    assert (await stored(q, h.id)).status is TaskStatus.FAILED


# --- cancel of running tasks ----------------------------------------------------------------------


async def test_cancel_a_running_async_task(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    marker = tmp_path / "running"
    async with AsyncWorkerPool(q, concurrency=1, kind="async", lease=5):
        h = await q.enqueue(wt.async_wait_forever, str(marker))
        await wait_until(marker.exists, timeout=RESULT_WAIT)
        assert await h.cancel() is True
        with pytest.raises(TaskCancelled):
            await h.result(timeout=RESULT_WAIT)
        await wait_until(lambda: Path(f"{marker}.cancelled").exists(), timeout=RESULT_WAIT)
        assert await (await q.enqueue(wt.add, 2, 2)).result(timeout=RESULT_WAIT) == 4
    assert (await stored(q, h.id)).status is TaskStatus.CANCELLED


async def test_cancel_a_running_thread_task(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    marker = tmp_path / "running"
    async with AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5):
        h = await q.enqueue(wt.wait_until_cancelled, str(marker))
        await wait_until(marker.exists, timeout=RESULT_WAIT)
        assert await h.cancel() is True
        with pytest.raises(TaskCancelled):
            await h.result(timeout=RESULT_WAIT)
        await wait_until(lambda: Path(f"{marker}.flagged").exists(), timeout=RESULT_WAIT)
        assert read(f"{marker}.flagged") == "cancelled"
        assert await (await q.enqueue(wt.add, 2, 2)).result(timeout=RESULT_WAIT) == 4
    task = await stored(q, h.id)
    assert task.status is TaskStatus.CANCELLED
    assert task.result is None  # the thread's late return value is not stored


async def test_cancel_a_running_process_task(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    marker = tmp_path / "running"
    async with AsyncWorkerPool(q, concurrency=1, kind="process", lease=5):
        h = await q.enqueue(wt.sleep_in_process, str(marker))
        await wait_until(marker.exists, timeout=RESULT_WAIT)
        await wait_until(lambda: marker.read_text() != "", timeout=RESULT_WAIT)
        child = int(marker.read_text())
        assert await h.cancel() is True
        with pytest.raises(TaskCancelled):
            await h.result(timeout=RESULT_WAIT)
        await wait_until(lambda: not pid_alive(child), timeout=RESULT_WAIT)
        assert await (await q.enqueue(wt.add, 2, 2)).result(timeout=RESULT_WAIT) == 4
    assert not exists(f"{marker}.finished")
    assert (await stored(q, h.id)).status is TaskStatus.CANCELLED


# --- periodic tasks -------------------------------------------------------------------------------


async def series_of(q: AsyncOmniQ, series: str) -> list[Task]:
    return [t for t in await q.list(limit=1000) if t.series == series]


async def test_interval_task_reschedules_itself_after_each_run(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    lines = tmp_path / "runs"
    h = await q.enqueue_call(wt.append_line, args=(str(lines),), interval=0.3)
    async with AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5):

        async def three_runs_and_a_next() -> bool:
            tasks = await series_of(q, h.id)
            done = [t for t in tasks if t.status is TaskStatus.SUCCEEDED]
            return len(done) >= 3 and any(t.status is TaskStatus.PENDING for t in tasks)

        await wait_until(three_runs_and_a_next, timeout=RESULT_WAIT)
    tasks = sorted(await series_of(q, h.id), key=lambda t: t.eta)
    assert tasks[0].id == h.id
    assert len({t.id for t in tasks}) == len(tasks)
    assert all(t.name == tasks[0].name for t in tasks)
    assert len(lines.read_text().splitlines()) == sum(t.status is TaskStatus.SUCCEEDED for t in tasks)
    pending = [t for t in tasks if t.status is TaskStatus.PENDING]
    assert len(pending) == 1, "exactly one next run is scheduled"
    assert pending[0].attempt == 0
    for earlier, later in itertools.pairwise(tasks):
        assert (later.eta - earlier.eta).total_seconds() >= 0.3 - 1e-3


async def test_cron_task_gets_its_next_run_at_the_right_minute(q: AsyncOmniQ, wait_until: Wait) -> None:
    h = await q.enqueue_call(wt.add, args=(1, 2), cron="*/2 * * * *", eta=datetime.now(UTC))
    following: list[Task] = []

    async def scheduled() -> bool:
        following[:] = [t for t in await series_of(q, h.id) if t.id != h.id]
        return bool(following)

    async with AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5):
        assert await h.result(timeout=RESULT_WAIT) == 3
        await wait_until(scheduled, timeout=RESULT_WAIT)
    [after] = following
    ran = await stored(q, h.id)
    assert ran.finished_at is not None
    assert after.status is TaskStatus.PENDING
    assert after.eta.second == 0 and after.eta.microsecond == 0
    assert after.eta.minute % 2 == 0
    assert ran.finished_at < after.eta <= ran.finished_at + timedelta(minutes=2)
    assert after.series == h.id


# --- TTL ------------------------------------------------------------------------------------------


async def test_ttl_expires_a_task_nobody_claimed(q: AsyncOmniQ, tmp_path: Path, wait_until: Wait) -> None:
    marker = tmp_path / "ran"
    h = await q.enqueue_call(wt.touch, args=(str(marker),), ttl=0.2, queue="unserved")
    task = await stored(q, h.id)
    assert task.expires_at is not None

    async def past_deadline() -> bool:
        return await q.storage.now() > task.expires_at  # type: ignore[operator]

    await wait_until(past_deadline, timeout=RESULT_WAIT)
    async with AsyncWorkerPool(q, concurrency=1, kind="thread", queues=["default"], lease=2):

        async def expired() -> bool:
            return (await stored(q, h.id)).status is TaskStatus.EXPIRED

        await wait_until(expired, timeout=RESULT_WAIT)
    with pytest.raises(TaskExpired):
        await h.result(timeout=RESULT_WAIT)
    assert EventKind.EXPIRED in await kinds_of_events(q, h.id)
    assert (await stored(q, h.id)).attempt == 0
    async with AsyncWorkerPool(q, concurrency=1, kind="thread", queues=["unserved"], lease=2):
        control = await q.enqueue_call(wt.add, args=(1, 1), queue="unserved")
        assert await control.result(timeout=RESULT_WAIT) == 2
    assert not marker.exists(), "an expired task ran"


async def test_result_ttl_lets_purge_remove_finished_tasks(q: AsyncOmniQ, wait_until: Wait) -> None:
    short = await q.enqueue_call(wt.add, args=(1, 2), result_ttl=0.2)
    kept = await q.enqueue(wt.add, 3, 4)
    async with AsyncWorkerPool(q, concurrency=2, kind="thread", lease=5):
        assert await short.result(timeout=RESULT_WAIT) == 3
        assert await kept.result(timeout=RESULT_WAIT) == 7

    async def purged() -> bool:
        await q.purge()
        return await q.storage.get(short.id) is None

    await wait_until(purged, timeout=RESULT_WAIT)
    assert (await stored(q, kept.id)).status is TaskStatus.SUCCEEDED


# --- progress -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_progress_reaches_the_store_and_events(
    q: AsyncOmniQ, tmp_path: Path, kind: str, wait_until: Wait
) -> None:
    gate = tmp_path / "gate"
    fn = wt.async_progress_then_wait if kind == "async" else wt.progress_then_wait
    async with AsyncWorkerPool(q, concurrency=1, kind=kind, lease=5):
        h = await q.enqueue(fn, str(gate))
        seen: list[Task] = []

        async def all_reported() -> bool:
            seen[:] = [await stored(q, h.id)]
            return seen[0].progress_done == 4 and seen[0].progress_message == "all done"

        try:
            await holds_within(all_reported, 15)
            task = seen[0]
            assert (task.progress_done, task.progress_total, task.progress_message) == (4, 4, "all done"), (
                f"the last progress report never reached the store: stored done={task.progress_done} "
                f"total={task.progress_total} message={task.progress_message!r}"
            )
            assert task.status is TaskStatus.RUNNING
            assert task.progress == pytest.approx(1.0)
        finally:
            gate.touch()
        assert await h.result(timeout=RESULT_WAIT) == "reported"
    progress = [e for e in await q.events(task_id=h.id) if e.kind is EventKind.PROGRESS]
    assert progress, "no progress event was recorded"
    assert progress[-1].progress == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["thread", "process"])
async def test_every_progress_report_of_a_long_task_reaches_the_store(
    q: AsyncOmniQ, tmp_path: Path, kind: str, wait_until: Wait
) -> None:
    async with AsyncWorkerPool(q, concurrency=1, kind=kind, lease=5):
        h = await q.enqueue(wt.progress_in_steps, str(tmp_path), 4)
        for n in range(1, 5):  # each step is reported long after the pool's previous write
            await wait_until(lambda n=n: has_progress(q, h.id, n), timeout=RESULT_WAIT)
            (tmp_path / f"go{n}").touch()
        assert await h.result(timeout=RESULT_WAIT) == 4


async def has_progress(q: AsyncOmniQ, task_id: str, done: int) -> bool:
    task = await stored(q, task_id)
    return task.progress_done == done and task.progress_message == f"step {done}"


# --- lost child processes -------------------------------------------------------------------------


async def test_a_child_that_exits_fails_only_that_attempt(q: AsyncOmniQ, tmp_path: Path) -> None:
    async with AsyncWorkerPool(q, concurrency=1, kind="process", lease=5):
        lost = await q.enqueue(wt.exit_hard, str(tmp_path / "exited"))
        after = await q.enqueue(wt.add, 5, 6)
        with pytest.raises(WorkerLost) as info:
            await lost.result(timeout=RESULT_WAIT)
        assert await after.result(timeout=RESULT_WAIT) == 11
        again = await q.enqueue_call(wt.exit_on_first_attempt, retries=1)
        assert await again.result(timeout=RESULT_WAIT) == 2
    assert "lost" in info.value.error.message
    assert info.value.error.attempt == 1
    task = await stored(q, lost.id)
    assert task.status is TaskStatus.FAILED
    assert task.attempt == 1
    assert (await stored(q, again.id)).attempt == 2


# --- graceful stop --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_stop_hands_a_running_task_back_without_using_an_attempt(
    q: AsyncOmniQ, tmp_path: Path, kind: str, wait_until: Wait
) -> None:
    folder, gate = tmp_path / "runs", tmp_path / "gate"
    fn = blocking_fn(kind)
    h = await q.enqueue(fn, str(folder), "job", str(gate))
    pool = AsyncWorkerPool(q, concurrency=1, kind=kind, lease=5)
    await pool.start()
    try:
        await wait_until(lambda: (folder / "job.start").exists(), timeout=RESULT_WAIT)
        running = await stored(q, h.id)
        assert running.status is TaskStatus.RUNNING
        assert running.attempt == 1
    finally:
        with anyio.fail_after(RESULT_WAIT):
            await pool.stop(timeout=0.2)
    assert not pool.running
    task = await stored(q, h.id)
    assert task.status is TaskStatus.PENDING
    assert task.attempt == 0
    assert task.lease_token is None
    assert EventKind.RELEASED in await kinds_of_events(q, h.id)

    gate.touch()
    async with AsyncWorkerPool(q, concurrency=1, kind=kind, lease=5):
        assert await h.result(timeout=RESULT_WAIT) == "job"
    assert (await stored(q, h.id)).attempt == 1


# --- sync twin ------------------------------------------------------------------------------------


def test_worker_pool_sync_twin_runs_tasks(db_url: str) -> None:
    with OmniQ(db_url=db_url, poll_interval=0.05) as q:
        pool = WorkerPool(q, concurrency=2, kind="thread", lease=5)
        assert not pool.running
        pool.start()
        try:
            assert pool.running
            assert q.enqueue(wt.add, 1, 2).result(timeout=RESULT_WAIT) == 3
        finally:
            pool.stop()
        assert not pool.running
        with WorkerPool(q, concurrency=1, kind="process", lease=5) as other:
            assert other.running
            ran = q.enqueue(wt.where).result(timeout=RESULT_WAIT)
            assert ran["pid"] != os.getpid()
        assert not other.running
        assert q.list(status="succeeded", limit=10)


# --- events, errors, signatures -------------------------------------------------------------------


async def test_on_event_listeners_hear_the_pool(q: AsyncOmniQ, wait_until: Wait) -> None:
    seen: list[TaskEvent] = []
    unsubscribe = q.on_event(seen.append)
    try:
        async with AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5):
            h = await q.enqueue(wt.add, 1, 2)
            assert await h.result(timeout=RESULT_WAIT) == 3

            def heard() -> list[EventKind]:
                return [e.kind for e in seen if e.task_id == h.id]

            await wait_until(lambda: EventKind.SUCCEEDED in heard(), timeout=RESULT_WAIT)
    finally:
        unsubscribe()
    kinds = heard()
    assert EventKind.STARTED in kinds
    assert kinds.index(EventKind.STARTED) < kinds.index(EventKind.SUCCEEDED)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_raising_task_stores_the_remote_traceback(q: AsyncOmniQ, kind: str) -> None:
    async with AsyncWorkerPool(q, concurrency=1, kind=kind, lease=5):
        h = await q.enqueue(wt.raise_value_error, "boom 42")
        with pytest.raises(TaskFailed) as info:
            await h.result(timeout=RESULT_WAIT)
    error = info.value.error
    assert error.type == "ValueError"
    assert error.message == "boom 42"
    assert error.attempt == 1
    assert "raise_value_error" in error.traceback
    assert "ValueError: boom 42" in error.traceback
    assert "library frame" in error.traceback  # the executor's frames are collapsed
    assert "omniq_nb" not in error.traceback
    assert "Remote traceback" in str(info.value)
    task = await stored(q, h.id)
    assert task.status is TaskStatus.FAILED
    assert task.error == error


@pytest.mark.parametrize("kind", KINDS)
async def test_a_bad_signature_fails_the_task_without_running_it(db_url: str, tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "ran"
    async with (
        AsyncOmniQ(db_url=db_url, secret="secret-A", poll_interval=0.05, retry_backoff=0.05) as producer,
        AsyncOmniQ(db_url=db_url, secret="secret-B", poll_interval=0.05, retry_backoff=0.05) as consumer,
    ):
        h = await producer.enqueue_call(wt.touch, args=(str(marker),), retries=2)
        async with AsyncWorkerPool(consumer, concurrency=1, kind=kind, lease=5):
            with pytest.raises(SignatureError) as info:
                await consumer.result(h.id, timeout=RESULT_WAIT)
        task = await stored(consumer, h.id)
    assert isinstance(info.value, TaskFailed)
    assert "signature" in str(info.value).lower()
    assert task.status is TaskStatus.FAILED
    assert task.attempt == 1, "a bad signature is not retried"
    assert task.error is not None and "signature" in task.error.message.lower()
    assert not marker.exists(), "a payload with a bad signature was executed"


@pytest.mark.parametrize("periodic", [False, True], ids=["plain", "interval"])
async def test_a_task_finishing_during_stop_keeps_its_outcome(
    q: AsyncOmniQ, db_url: str, tmp_path: Path, periodic: bool, wait_until: Wait
) -> None:
    folder, gate = tmp_path / "runs", tmp_path / "gate"
    options: dict[str, Any] = {"interval": 3600, "eta": datetime.now(UTC)} if periodic else {}
    h = await q.enqueue_call(wt.gated, args=(str(folder), "job", str(gate)), **options)
    pool = AsyncWorkerPool(q, concurrency=1, kind="thread", lease=5)
    await pool.start()
    try:
        await wait_until(lambda: (folder / "job.start").exists(), timeout=RESULT_WAIT)
    finally:
        async with anyio.create_task_group() as group:
            group.start_soon(pool.stop, RESULT_WAIT)  # waits for the running task to finish
            await wait_until(lambda: pool._stopping, timeout=RESULT_WAIT)
            gate.touch()
    task = await stored(q, h.id)
    assert task.status is TaskStatus.SUCCEEDED, f"the outcome of a task that finished during stop was lost: {task}"
    assert task.attempt == 1
    if periodic:
        assert [t.status for t in await series_of(q, h.id) if t.id != h.id] == [TaskStatus.PENDING]
    # The queue's connection is left clean: another connection sees its later writes.
    later = await q.enqueue(wt.add, 1, 1)
    async with AsyncOmniQ(db_url=db_url) as other:
        assert (await other.get(later.id)).status is TaskStatus.PENDING


@pytest.mark.parametrize(("pool_kind", "task_kind"), [("thread", "process"), ("process", "thread")])
async def test_the_kind_task_option_chooses_where_a_sync_task_runs(
    q: AsyncOmniQ, pool_kind: str, task_kind: str
) -> None:
    async with AsyncWorkerPool(q, concurrency=1, kind=pool_kind, lease=5):
        h = await q.enqueue_call(wt.where, kind=task_kind)
        ran = await h.result(timeout=RESULT_WAIT)
    in_child = ran["pid"] != os.getpid()
    assert in_child is (task_kind == "process"), f"a kind={task_kind!r} task ran in a {pool_kind} slot as such"
    assert ran["context"]["attempt"] == 1


@pytest.mark.parametrize("lease", [0.001, 0.5, 0, -1, float("nan"), "soon"])
async def test_a_lease_shorter_than_a_second_is_refused(q: AsyncOmniQ, lease: Any) -> None:
    with pytest.raises(ConfigError, match=r"lease=.*seconds >= 1") as info:
        AsyncWorkerPool(q, lease=lease)
    assert len(str(info.value).splitlines()) == 1
    assert AsyncWorkerPool(q, lease=1).lease == 1.0
    assert AsyncWorkerPool(q, lease=timedelta(minutes=1)).lease == 60.0


def test_the_blocking_pool_refuses_a_short_lease_too(db_url: str) -> None:
    with OmniQ(db_url=db_url) as q, pytest.raises(ConfigError, match=r"lease=0\.001 .*seconds >= 1"):
        WorkerPool(q, lease=0.001)
