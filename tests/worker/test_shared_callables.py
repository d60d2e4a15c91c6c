"""A batch keeps its function once in the store; each row names it by digest, and every pool reads it back.

The function here is defined the way a notebook defines one (in ``__main__``, so cloudpickle
sends it by value), which is what made every row of a ``.map()`` carry some 500 bytes of
pickled function before.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import worker_tasks as wt
from processes import Processes

from omniq_nb import AsyncOmniQ, AsyncWorkerPool, SignatureError, TaskFailed, TaskStatus
from omniq_nb.blob_format import callable_digest
from omniq_nb.pickling import dumps

pytestmark = pytest.mark.anyio

RESULT_WAIT = 60.0
SOURCE = '''
import os

OFFSET = 7

def shifted(x):
    """Add OFFSET: a notebook function, sent by value with the global it reads."""
    return x + OFFSET

async def shifted_later(x):
    return x + OFFSET

def tamper(path):
    with open(path, "w") as out:
        out.write("the altered function ran")
    return -1
'''


def notebook_function(name: str) -> Callable[..., Any]:
    """Return a function of ``SOURCE`` defined as a notebook cell defines it: in ``__main__``, by value."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(SOURCE, "<notebook cell>", "exec"), namespace)
    fn: Callable[..., Any] = namespace[name]
    assert not hasattr(sys.modules["__main__"], name), "it must travel by value"
    return fn


def kept_rows(db_url: str) -> sqlite3.Connection:
    return sqlite3.connect(db_url.removeprefix("sqlite:///"))


async def test_a_batch_keeps_its_function_once_and_each_row_names_it(q: AsyncOmniQ, db_url: str) -> None:
    shifted = notebook_function("shifted")
    group = await q.enqueue_many(shifted, [(n,) for n in range(300)])
    tasks = await q.storage.get_many([h.id for h in group.handles])
    digests = {callable_digest(task.payload) for task in tasks}
    assert len(digests) == 1 and None not in digests
    [digest] = digests
    assert digest is not None
    kept = await q.storage.kept_callables([digest])
    body = kept[digest]
    assert len(body) > 300, "the function travels by value"
    assert max(len(task.payload) for task in tasks) < 100, "a row carries its arguments and a digest, no function"
    with kept_rows(db_url) as db:
        [(payload_bytes,)] = db.execute("SELECT sum(length(payload)) FROM tasks").fetchall()
        [(functions,)] = db.execute("SELECT count(*) FROM callables").fetchall()
    assert payload_bytes < 300 * 100 and functions == 1


async def test_the_same_function_in_two_batches_is_kept_once(q: AsyncOmniQ, db_url: str) -> None:
    shifted = notebook_function("shifted")
    await q.enqueue_many(shifted, [(n,) for n in range(3)])
    await q.enqueue_many(shifted, [(n,) for n in range(3, 6)])
    with kept_rows(db_url) as db:
        assert db.execute("SELECT count(*) FROM callables").fetchall() == [(1,)]


async def test_one_call_and_a_one_call_batch_carry_their_function(q: AsyncOmniQ) -> None:
    shifted = notebook_function("shifted")
    one = await q.enqueue(shifted, 1)
    [alone] = (await q.enqueue_many(shifted, [(2,)])).handles
    for handle in (one, alone):
        task = await q.storage.get(handle.id)
        assert task is not None and callable_digest(task.payload) is None


@pytest.mark.parametrize("kind", ["thread", "async", "process"])
async def test_a_pool_reads_a_batchs_function_from_the_store_once(
    q: AsyncOmniQ, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[list[str]] = []
    read = q.storage.kept_callables

    async def counted(digests: Any) -> dict[str, bytes]:
        reads.append(list(digests))
        return await read(digests)

    monkeypatch.setattr(q.storage, "kept_callables", counted)
    fn = notebook_function("shifted_later" if kind == "async" else "shifted")
    group = await q.enqueue_many(fn, [(n,) for n in range(200)], kind=kind)
    async with AsyncWorkerPool(q, concurrency=8, kind=kind, lease=10):
        assert await group.result(timeout=RESULT_WAIT) == [n + 7 for n in range(200)]
    assert len(reads) == 1, f"the pool read the function {len(reads)} times"


@pytest.mark.slow
async def test_a_cli_worker_runs_a_batch_whose_function_a_script_kept(db_url: str, workers: Processes) -> None:
    async with AsyncOmniQ(db_url=db_url, poll_interval=0.05) as q:
        group = await q.enqueue_many(notebook_function("shifted"), [(n,) for n in range(100)])
        workers.worker(db_url, concurrency=4, program=(sys.executable, "-m", "omniq_nb"))
        assert await group.result(timeout=RESULT_WAIT) == [n + 7 for n in range(100)]


@pytest.mark.parametrize("secret", [None, "s3cret"], ids=["unsigned", "signed"])
async def test_an_altered_kept_function_is_refused_and_never_runs(
    db_url: str, tmp_path: Path, secret: str | None
) -> None:
    marker = tmp_path / "ran"
    async with AsyncOmniQ(db_url=db_url, secret=secret, poll_interval=0.05, retry_backoff=0.05) as q:
        group = await q.enqueue_many(wt.touch, [(str(marker),), (str(marker),)], retries=2)
        with kept_rows(db_url) as db:
            db.execute("UPDATE callables SET body = ?", (dumps(notebook_function("tamper")),))
        async with AsyncWorkerPool(q, concurrency=2, lease=5):
            for handle in group.handles:
                with pytest.raises(SignatureError, match="altered") as info:
                    await handle.result(timeout=RESULT_WAIT)
                assert isinstance(info.value, TaskFailed)
        tasks = await q.storage.get_many([h.id for h in group.handles])
    assert [(t.status, t.attempt) for t in tasks] == [(TaskStatus.FAILED, 1)] * 2, "an altered function is not retried"
    assert not marker.exists(), "the altered function was executed"


async def test_a_function_the_store_no_longer_keeps_fails_its_tasks_at_once_with_a_clear_message(
    q: AsyncOmniQ, db_url: str
) -> None:
    group = await q.enqueue_many(notebook_function("shifted"), [(1,), (2,)], retries=3)
    with kept_rows(db_url) as db:
        db.execute("DELETE FROM callables")
    async with AsyncWorkerPool(q, concurrency=2, lease=5):
        for handle in group.handles:
            with pytest.raises(TaskFailed, match="does not keep it") as info:
                await handle.result(timeout=RESULT_WAIT)
            assert info.value.error.type == "omniq_nb.errors.CallableMissing"
    tasks = await q.storage.get_many([h.id for h in group.handles])
    assert [t.attempt for t in tasks] == [1, 1], "it would fail the same way again: not retried"


def test_a_kept_function_is_checked_against_the_digest_its_payload_names() -> None:
    """``load_call`` refuses bytes that do not hash to the digest, and a call whose kept bytes were not given."""
    from omniq_nb.serialization import BlobSerializer

    serializer = BlobSerializer(secret="k")
    shared = serializer.share_callable(wt.add)
    [blob] = serializer.dump_calls(wt.add, [((1, 2), {})], shared)
    fn, args, kwargs = serializer.load_call(blob, stored=shared.body)
    assert fn(*args, **kwargs) == 3
    with pytest.raises(SignatureError, match="altered"):
        serializer.load_call(blob, stored=cloudpickle.dumps(wt.touch))
    with pytest.raises(TypeError, match="does not keep it"):
        serializer.load_call(blob)


async def test_rows_with_values_of_their_own_carry_their_function(q: AsyncOmniQ) -> None:
    """A batch with cache keys or dependencies writes each row apart (``insert``): each carries its function."""
    shifted = notebook_function("shifted")
    cached = await q.enqueue_many(shifted, [(1,), (2,)], cache=True)
    for handle in cached.handles:
        task = await q.storage.get(handle.id)
        assert task is not None and callable_digest(task.payload) is None
    async with AsyncWorkerPool(q, concurrency=2, lease=5):
        assert await cached.result(timeout=RESULT_WAIT) == [8, 9]


async def test_a_pool_keeps_few_bytes_of_functions_and_reads_a_larger_one_each_time() -> None:
    from omniq_nb.serialization import BlobSerializer
    from omniq_nb.worker.callables import StoredCallables

    serializer = BlobSerializer()
    small, large = (serializer.share_callable(fn) for fn in (wt.add, notebook_function("shifted")))
    blobs = {shared.digest: next(serializer.dump_calls(len, [(([1],), {})], shared)) for shared in (small, large)}
    reads: list[str] = []

    async def read(digests: Any) -> dict[str, bytes]:
        reads.extend(digests)
        return {shared.digest: shared.body for shared in (small, large) if shared.digest in digests}

    callables = StoredCallables(read, keep_bytes=len(small.body))
    for _ in range(3):
        assert await callables.body(blobs[small.digest]) == small.body
        assert await callables.body(blobs[large.digest]) == large.body
    assert reads.count(small.digest) == 1 and reads.count(large.digest) == 3
