"""Promise: a handle passed as an argument (or named in ``after=``) makes a task wait for it.

The dependent is stored ``waiting``, runs once its dependencies succeeded with their results
in the handles' places, and is stopped (failed, or cancelled) with the first failed
ancestor named when one of them did not; ``run_on`` says otherwise; a retry re-arms it.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
import worker_tasks as wt

import omniq_nb as omniq
from omniq_nb import (
    AsyncOmniQ,
    AsyncWorkerPool,
    DependencyFailed,
    InvalidTransition,
    TaskCancelled,
    TaskNotFound,
    TaskStatus,
)

pytestmark = pytest.mark.anyio

WAIT = 30.0  # seconds a test waits for a result at most (a loaded 2-core machine)


async def test_a_handle_as_an_argument_waits_for_its_result(q: AsyncOmniQ) -> None:
    load = await q.enqueue(wt.add, 2, 3)
    double = await q.enqueue_call(wt.add, args=(load, load))
    nested = await q.enqueue_call(dict, kwargs={"x": [load, (load, {"y": load})]})
    assert (double.status, (await q.get(double.id)).task.depends_on) == (TaskStatus.WAITING, (load.id,))

    async with AsyncWorkerPool(q, concurrency=2):
        assert await double.result(timeout=WAIT) == 10
        assert await nested.result(timeout=WAIT) == {"x": [5, (5, {"y": 5})]}
    assert [e.kind.value for e in await q.events(task_id=double.id)][:2] == ["enqueued", "ready"]


async def test_groups_then_and_gather_pass_results_along(q: AsyncOmniQ) -> None:
    base = await q.enqueue(wt.add, 1, 1)
    fits = await q.enqueue_many(wt.add, [(base, n) for n in range(3)])
    summed = await fits.then(sum)
    plus = await summed.then(wt.add, kwargs={"b": 100})
    everything = await omniq.gather(base, fits, plus)

    async with AsyncWorkerPool(q, concurrency=4):
        assert await fits.result(timeout=WAIT) == [2, 3, 4]
        assert await plus.result(timeout=WAIT) == 109
        assert await everything.result(timeout=WAIT) == [2, [2, 3, 4], 109]


async def test_a_failure_stops_dependents_naming_the_first_failed_ancestor(q: AsyncOmniQ) -> None:
    broken = await q.enqueue(wt.raise_value_error, "bad input")
    middle = await q.enqueue_call(wt.add, args=(broken, 1))
    last = await middle.then(wt.add, 1)
    anyway = await q.enqueue_call(repr, args=(broken,), run_on="any")
    on_failure = await q.enqueue_call(wt.add, args=(1, 1), after=[broken], run_on="failure")

    async with AsyncWorkerPool(q, concurrency=2):
        for handle in (middle, last):
            with pytest.raises(DependencyFailed) as info:
                await handle.result(timeout=WAIT)
            assert broken.id in info.value.error.message and "bad input" in info.value.error.message
            assert handle.attempt == 0  # never ran
        assert (await anyway.result(timeout=WAIT)).startswith("TaskError(type='ValueError'")
        assert await on_failure.result(timeout=WAIT) == 2


async def test_run_on_failure_is_cancelled_when_every_dependency_succeeded(q: AsyncOmniQ) -> None:
    fine = await q.enqueue(wt.add, 1, 2)
    cleanup = await q.enqueue_call(wt.add, args=(0, 0), after=fine, run_on="failure")
    async with AsyncWorkerPool(q, concurrency=2):
        with pytest.raises(TaskCancelled) as info:
            await cleanup.result(timeout=WAIT)
    assert "every dependency succeeded" in info.value.error.message


async def test_cancelling_a_dependency_cancels_its_dependents(q: AsyncOmniQ) -> None:
    first = await q.enqueue(wt.add, 1, 2)
    second = await first.then(wt.add, 1)
    third = await second.then(wt.add, 1)
    assert await first.cancel() is True
    for handle in (second, third):
        with pytest.raises(TaskCancelled) as info:
            await handle.result(timeout=WAIT)
        assert first.id in info.value.error.message


async def test_retrying_the_failed_ancestor_re_arms_its_dependents(q: AsyncOmniQ, tmp_path: Path) -> None:
    counter = str(tmp_path / "counter")
    flaky = await q.enqueue(wt.flaky, counter, 1)  # fails on its first run, then returns the run count
    after = await flaky.then(wt.add, 10)
    async with AsyncWorkerPool(q, concurrency=2):
        with pytest.raises(DependencyFailed):
            await after.result(timeout=WAIT)
        again = await flaky.retry()
        assert await again.result(timeout=WAIT) == 2
        assert await after.result(timeout=WAIT) == 12


async def test_unknown_dependencies_are_refused_and_nothing_is_queued(q: AsyncOmniQ) -> None:
    with pytest.raises(TaskNotFound, match="unknown task"):
        await q.enqueue_call(wt.add, args=(1, 2), after=["f" * 32])
    assert await q.list() == []


async def test_bad_dependency_options_are_refused(q: AsyncOmniQ) -> None:
    with pytest.raises(ValueError, match="run_on='never' must be one of 'success', 'any', 'failure'"):
        await q.enqueue_call(wt.add, args=(1, 2), run_on="never")
    with pytest.raises(TypeError, match="after= takes task handles, group handles or task ids, got 5"):
        await q.enqueue_call(wt.add, args=(1, 2), after=5)
    with pytest.raises(ValueError, match="gather"):
        omniq.gather()


async def test_a_dependency_already_finished_lets_its_dependent_run_at_once(q: AsyncOmniQ) -> None:
    async with AsyncWorkerPool(q, concurrency=2):
        done = await q.enqueue(wt.add, 1, 1)
        assert await done.result(timeout=WAIT) == 2
        later = await q.enqueue_call(wt.add, args=(done, 1))
        assert later.status is not TaskStatus.WAITING  # pending, or already claimed by the pool, or done
        assert await later.result(timeout=WAIT) == 3


@pytest.mark.parametrize("kind", ["thread", "process", "async"])
async def test_every_kind_of_run_gets_its_dependencies_values(q: AsyncOmniQ, kind: str) -> None:
    first = await q.enqueue(wt.add, 20, 1)
    adder = wt.async_add if kind == "async" else wt.add
    second = await q.enqueue_call(adder, args=(first, first), kind=None if kind == "async" else kind)
    async with AsyncWorkerPool(q, concurrency=2, kind="thread" if kind == "async" else kind):
        assert await second.result(timeout=WAIT) == 42


async def test_a_diamond_runs_every_task_once(q: AsyncOmniQ, tmp_path: Path) -> None:
    log = str(tmp_path / "runs.log")
    root = await q.enqueue(wt.append_line, log)
    middles = await q.enqueue_many(wt.append_line, [(log,)] * 200, after=[root])
    sink = await q.enqueue_call(wt.append_line, args=(log,), after=middles)
    async with AsyncWorkerPool(q, concurrency=8):
        assert await sink.result(timeout=WAIT * 2) == 202
    assert len((await anyio.Path(log).read_text()).splitlines()) == 202
    assert {h.attempt for h in middles} == {1}


async def test_a_stopped_dependent_is_retried_through_its_failed_dependency(q: AsyncOmniQ, tmp_path: Path) -> None:
    flaky = await q.enqueue(wt.flaky, str(tmp_path / "counter"), 1)
    after = await flaky.then(wt.add, 10)
    async with AsyncWorkerPool(q, concurrency=2):
        with pytest.raises(DependencyFailed):
            await after.result(timeout=WAIT)
        with pytest.raises(InvalidTransition, match=f"never ran: dependency {flaky.id}.*retry that task instead"):
            await after.retry()  # it would run with the failure as its input
        assert (await q.get(after.id)).status is TaskStatus.FAILED
        await flaky.retry()
        assert await after.result(timeout=WAIT) == 12


async def test_a_dependency_purged_before_its_dependent_ran_arrives_as_an_error(q: AsyncOmniQ, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    quick = await q.enqueue(wt.add, 1, 1)
    slow = await q.enqueue(wt.gated, str(tmp_path), "slow", str(gate))
    both = await omniq.gather(quick, slow, run_on="any")
    async with AsyncWorkerPool(q, concurrency=2):
        assert await quick.result(timeout=WAIT) == 2
        assert await q.purge(status="succeeded", older_than=0) == 1
        await anyio.Path(gate).touch()
        missing, value = await both.result(timeout=WAIT)
    assert value == "slow"
    assert missing.type == "omniq_nb.errors.DependencyFailed" and "no longer exists" in missing.message
