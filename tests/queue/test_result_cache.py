"""Promise: with ``cache=True`` a call already answered by a stored success is not run again.

The key covers the function's code, the globals it reads and the arguments; a dependency
counts as its task id. Changing any of them runs the task; a failure is never reused;
``cache_ttl`` bounds the age of a reused result; ``cache_clear`` and ``purge --cache``
forget; a call that cannot be keyed runs uncached with one ``CacheWarning``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import worker_tasks as wt

from omniq_nb import AsyncOmniQ, AsyncWorkerPool, CacheWarning, TaskFailed, TaskStatus
from omniq_nb import task as omniq_task
from omniq_nb.cache_keys import call_key

pytestmark = pytest.mark.anyio

WAIT = 30.0  # seconds a test waits for a result at most (a loaded 2-core machine)

NOTEBOOK = """
import os
SCALE = {scale}
def count(log):
    with open(log, "a") as out:
        out.write("run\\n")
def fit(log, x):
    count(log)
    return x * SCALE{edit}
"""


def notebook_fit(scale: int = 2, edit: str = "", pad: int = 0) -> Callable[..., Any]:
    """Define ``fit`` as a notebook cell would: in ``__main__``'s name, so it travels by value."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile("\n" * pad + NOTEBOOK.format(scale=scale, edit=edit), "<cell>", "exec"), namespace)
    return namespace["fit"]  # type: ignore[no-any-return]


def runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


async def test_a_cached_call_returns_the_stored_task_without_running(q: AsyncOmniQ, tmp_path: Path) -> None:
    log = str(tmp_path / "runs")
    async with AsyncWorkerPool(q, concurrency=2):
        first = await q.enqueue_call(wt.append_line, args=(log,), cache=True)
        assert await first.result(timeout=WAIT) == 1
        again = await q.enqueue_call(wt.append_line, args=(log,), cache=True)
        assert (again.id, again.status, again.done()) == (first.id, TaskStatus.SUCCEEDED, True)
        assert await again.result(timeout=0) == 1
    assert len(await q.list(limit=10)) == 1
    assert (await q.get(first.id)).task.cache_key is not None


async def test_code_globals_and_arguments_each_make_a_new_key(q: AsyncOmniQ, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    async with AsyncWorkerPool(q, concurrency=2):

        async def submit(fn: Callable[..., Any], x: int) -> Any:
            return await (await q.enqueue_call(fn, args=(str(log), x), cache=True)).result(timeout=WAIT)

        assert await submit(notebook_fit(), 1) == 2
        assert await submit(notebook_fit(pad=5), 1) == 2  # the same code further down the cell: same key
        assert runs(log) == 1
        assert await submit(notebook_fit(), 3) == 6  # another argument
        assert await submit(notebook_fit(scale=10), 1) == 10  # a global it reads changed
        assert await submit(notebook_fit(edit=" + 1"), 1) == 3  # its code changed
        assert runs(log) == 4
        assert await submit(notebook_fit(edit=" + 1"), 1) == 3
        assert runs(log) == 4


async def test_a_failure_is_never_reused(q: AsyncOmniQ, tmp_path: Path) -> None:
    counter = str(tmp_path / "count")
    async with AsyncWorkerPool(q, concurrency=1):
        failed = await q.enqueue_call(wt.flaky, args=(counter, 1), cache=True)
        with pytest.raises(TaskFailed):
            await failed.result(timeout=WAIT)
        second = await q.enqueue_call(wt.flaky, args=(counter, 1), cache=True)
        assert second.id != failed.id
        assert await second.result(timeout=WAIT) == 2


async def test_cache_ttl_reuses_only_a_recent_result(q: AsyncOmniQ, tmp_path: Path, wait_until: Any) -> None:
    log = str(tmp_path / "runs")
    async with AsyncWorkerPool(q, concurrency=1):
        first = await q.enqueue_call(wt.append_line, args=(log,), cache_ttl=3600)
        assert await first.result(timeout=WAIT) == 1
        assert (await q.enqueue_call(wt.append_line, args=(log,), cache_ttl=3600)).id == first.id
        finished = (await q.get(first.id)).task.finished_at
        assert finished is not None
        await wait_until(lambda: time.time() - finished.timestamp() > 0.5, timeout=10)
        later = await q.enqueue_call(wt.append_line, args=(log,), cache_ttl=0.5)
        assert later.id != first.id
        assert await later.result(timeout=WAIT) == 2


async def test_a_map_reuses_what_it_can_and_keeps_the_order(q: AsyncOmniQ) -> None:
    async with AsyncWorkerPool(q, concurrency=2):
        some = await q.enqueue_many(wt.add, [(1, 1), (2, 2)], cache=True)
        assert await some.result(timeout=WAIT) == [2, 4]
        more = await q.enqueue_many(wt.add, [(0, 0), (2, 2), (5, 5), (1, 1)], cache=True)
        assert await more.result(timeout=WAIT) == [0, 4, 10, 2]
        assert [h.id for h in more][1::2] == [some[1].id, some[0].id]
    assert len(await q.list(limit=10)) == 4


async def test_a_pipeline_reruns_only_from_the_changed_step(q: AsyncOmniQ, tmp_path: Path) -> None:
    async def pipeline(scale: int) -> tuple[Any, Any, Any]:
        load = await q.enqueue_call(wt.append_line, args=(str(tmp_path / "load"),), cache=True)
        fit = await q.enqueue_call(notebook_fit(scale), args=(str(tmp_path / "fit"), load), cache=True)
        report = await q.enqueue_call(wt.add, args=(fit, 100), cache=True)
        return load, fit, report

    async with AsyncWorkerPool(q, concurrency=2):
        first = await pipeline(2)
        assert await first[2].result(timeout=WAIT) == 102
        again = await pipeline(2)
        assert [h.id for h in again] == [h.id for h in first]
        edited = await pipeline(3)
        assert await edited[2].result(timeout=WAIT) == 103
        assert (edited[0].id, edited[1].id == first[1].id, edited[2].id == first[2].id) == (first[0].id, False, False)
    assert (runs(tmp_path / "load"), runs(tmp_path / "fit")) == (1, 2)


async def test_a_call_that_cannot_be_keyed_runs_with_one_warning(q: AsyncOmniQ, tmp_path: Path) -> None:
    log = str(tmp_path / "runs")
    with pytest.warns(CacheWarning, match="append_line: runs without the result cache") as caught:
        handle = await q.enqueue_call(
            wt.append_line,
            args=(log,),
            cache_key=lambda path: threading.Lock(),
        )
    assert len(caught) == 1
    async with AsyncWorkerPool(q, concurrency=1):
        assert await handle.result(timeout=WAIT) == 1
    assert (await q.get(handle.id)).task.cache_key is None
    with pytest.warns(CacheWarning, match="2 of 3 calls") as caught:
        await q.enqueue_many(wt.add, [(1, 1), (2, 2), (3, 3)], cache_key=lambda a, b: 1 // (a // 3))
    assert len(caught) == 1


async def test_cache_key_stands_for_the_arguments(q: AsyncOmniQ, tmp_path: Path) -> None:
    log = str(tmp_path / "runs")
    async with AsyncWorkerPool(q, concurrency=1):
        first = await q.enqueue_call(wt.add, args=(1, 2), cache_key=lambda a, b: a)
        assert await first.result(timeout=WAIT) == 3
        same = await q.enqueue_call(wt.add, args=(1, 99), cache_key=lambda a, b: a)
        assert same.id == first.id
        assert await (await q.enqueue_call(wt.append_line, args=(log,), cache=True)).result(timeout=WAIT) == 1


async def test_cache_clear_and_purge_cache_forget_but_keep_the_tasks(q: AsyncOmniQ, tmp_path: Path) -> None:
    log = str(tmp_path / "runs")
    async with AsyncWorkerPool(q, concurrency=1):
        line = await q.enqueue_call(wt.append_line, args=(log,), cache=True)
        added = await q.enqueue_call(wt.add, args=(1, 1), cache=True)
        await line.result(timeout=WAIT)
        await added.result(timeout=WAIT)
        assert await q.cache_clear(wt.append_line) == 1
        assert await q.cache_clear("tests.nothing") == 0
        rerun = await q.enqueue_call(wt.append_line, args=(log,), cache=True)
        assert rerun.id != line.id and await rerun.result(timeout=WAIT) == 2
        assert (await q.enqueue_call(wt.add, args=(1, 1), cache=True)).id == added.id
        assert await q.purge_report(cache=True) == "forgot 2 cache entries (the tasks and their results stay)"
        assert (await q.enqueue_call(wt.add, args=(1, 1), cache=True)).id != added.id
    assert len(await q.list(limit=10)) == 4


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"cache": "yes"}, TypeError, "cache='yes' must be True or False"),
        ({"cache_key": 3}, TypeError, "cache_key=3 must be a callable"),
        ({"cache_ttl": -1}, ValueError, "cache_ttl"),
        ({"cache": False, "cache_key": str}, ValueError, "need the cache"),
        ({"cache": True, "interval": 60}, ValueError, "does not combine with interval"),
    ],
)
async def test_bad_cache_options_are_refused(
    q: AsyncOmniQ, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        await q.enqueue_call(wt.add, args=(1, 1), **options)
    assert await q.list() == []


def test_a_key_is_the_same_in_another_process(tmp_path: Path) -> None:
    """Two scripts define the same function at other lines, with other hash seeds: the second reuses."""
    db = tmp_path / "omniq.db"
    script = textwrap.dedent(
        """
        import sys
        import omniq_nb as omniq
        {pad}
        TAGS = {{"alpha", "beta", "gamma"}}
        def labels(words):
            return sorted(set(words) & TAGS)
        with omniq.OmniQ(db_url=sys.argv[1]) as q, omniq.WorkerPool(q, concurrency=1):
            h = q.enqueue_call(labels, args=({{"beta", "delta", "alpha"}},), cache=True)
            print(h.id, h.result(timeout=30))
        """
    )
    outputs = []
    for seed, pad in (("1", ""), ("2", "\n\n# a comment\n")):
        path = tmp_path / f"script{seed}.py"
        path.write_text(script.format(pad=pad))
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, str(path), f"sqlite:///{db}"], capture_output=True, text=True, env=env, timeout=120
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.split())
    assert outputs[0] == outputs[1]
    assert outputs[0][1:] == ["['alpha',", "'beta']"]


KEY_SCRIPT = """
import sys
from omniq_nb.cache_keys import call_key
from omniq_nb.notebook.cells import capture, cell_key, run_cell
sys.path.insert(0, sys.argv[1])
import helpers

source = "frame = load(path)\\nscale * len(frame) + offset"
namespace = {"load": helpers.load, "path": "data.csv", "scale": 3, "offset": 1}
cell = call_key(run_cell, (source, f"<omniq cell {sys.argv[2]}>", capture(source, namespace)), {}, key=cell_key)
print(cell, call_key(helpers.load, ("data.csv",), {}))
"""


def test_cells_and_functions_of_the_users_modules_keep_their_keys_until_edited(tmp_path: Path) -> None:
    """A cell reading several names keys the same in every process; editing a module's helper changes the key."""
    (tmp_path / "helpers.py").write_text(
        "SCALE = 1\ndef clean(x):\n    return x + SCALE\ndef load(p):\n    return clean(p)\n"
    )
    script = tmp_path / "keys.py"
    script.write_text(KEY_SCRIPT)

    def keys(seed: str, count: str) -> list[str]:
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, str(script), str(tmp_path), count], capture_output=True, text=True, env=env, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    first = keys("1", "3")
    assert [keys(seed, count) for seed, count in (("2", "7"), ("3", "12"), ("4", "1"))] == [first] * 3
    (tmp_path / "helpers.py").write_text(
        "SCALE = 2\ndef clean(x):\n    return x + SCALE\ndef load(p):\n    return clean(p)\n"
    )
    edited = keys("1", "3")
    assert edited[0] != first[0] and edited[1] != first[1]  # a global the helper reads changed


def test_a_cached_helper_the_task_calls_counts_by_its_code() -> None:
    """``functools.cache`` pickles by name; the key follows it to the code it wraps."""

    def key_with(value: int) -> str:
        source = f"import functools\n@functools.cache\ndef scale():\n    return {value}\n"
        source += "def fit(x):\n    return x * scale()\n"
        namespace: dict[str, Any] = {"__name__": "__main__"}
        exec(compile(source, "<cell>", "exec"), namespace)
        return call_key(namespace["fit"], (10,), {})

    assert key_with(1) == key_with(1)
    assert key_with(1) != key_with(1000)


async def test_after_ids_and_the_name_are_part_of_the_key(q: AsyncOmniQ, tmp_path: Path) -> None:
    log = str(tmp_path / "runs")
    async with AsyncWorkerPool(q, concurrency=1):
        one, two = await q.enqueue(wt.add, 1, 1), await q.enqueue(wt.add, 2, 2)
        first = await q.enqueue_call(wt.append_line, args=(log,), after=[one], cache=True)
        assert await first.result(timeout=WAIT) == 1
        assert (await q.enqueue_call(wt.append_line, args=(log,), after=[one], cache=True)).id == first.id
        other = await q.enqueue_call(wt.append_line, args=(log,), after=[two], cache=True)
        assert other.id != first.id and await other.result(timeout=WAIT) == 2
        named = await q.enqueue_call(wt.append_line, args=(log,), after=[one], cache=True, name="lines v2")
        assert named.id != first.id and await named.result(timeout=WAIT) == 3


async def test_run_on_any_with_dependencies_runs_uncached_each_time_with_a_warning(q: AsyncOmniQ) -> None:
    upstream = await q.enqueue(wt.add, 1, 1)
    for _ in range(2):
        with pytest.warns(CacheWarning, match="run_on='any' with dependencies"):
            handle = await q.enqueue_call(wt.add, args=(upstream, 1), run_on="any", cache=True)
        assert (await q.get(handle.id)).task.cache_key is None


async def test_cache_ttl_and_cache_key_alone_turn_the_cache_on_for_task_functions(q: AsyncOmniQ) -> None:
    add = omniq_task(wt.add)
    assert add.options(cache_ttl=60).task_options.cache
    assert add.options(cache_key=lambda a, b: a).task_options.cache
    assert not add.options(cache_ttl=60).options(cache=False).task_options.cache
    upstream = await q.enqueue(wt.add, 1, 1)
    async with AsyncWorkerPool(q, concurrency=1):
        first = await upstream.then(wt.add, 1, cache_ttl=60)
        assert await first.result(timeout=WAIT) == 3
        assert (await upstream.then(wt.add, 1, cache_ttl=60)).id == first.id
