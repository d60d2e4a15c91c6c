"""A batch's callable is kept once, with the batch's rows, and read back by any store object on the same data."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

import pytest

from omniq_nb.blob_format import callable_digest
from omniq_nb.models import Task, new_task_ids
from omniq_nb.serialization import BlobSerializer, SharedCallable
from omniq_nb.storage import Storage

pytestmark = pytest.mark.anyio


def _kept(body: bytes) -> tuple[str, bytes]:
    return hashlib.sha256(body).hexdigest(), body


async def _insert_batch(store: Storage, template: Task, kept: tuple[str, bytes], size: int = 2) -> list[str]:
    ids = new_task_ids(size)
    await store.insert_many(template, [(task_id, b"x") for task_id in ids], kept)
    return ids


async def test_a_batchs_callable_is_read_back_by_its_digest_and_unknown_ones_are_left_out(
    store: Storage, twin_or_store: Storage, make_task: Callable[..., Task]
) -> None:
    first, second = _kept(b"first function"), _kept(b"\x00second\xff" * 1000)
    unknown = hashlib.sha256(b"never kept").hexdigest()
    await _insert_batch(store, make_task(), first)
    await _insert_batch(store, make_task(), second)
    assert await twin_or_store.kept_callables([first[0], unknown, second[0]]) == dict([first, second])
    assert await store.kept_callables([unknown]) == {}
    assert await store.kept_callables([]) == {}


async def test_a_callable_kept_by_several_batches_is_kept_once(
    store: Storage, twin_or_store: Storage, make_task: Callable[..., Task]
) -> None:
    digest, body = _kept(b"the same function")
    await _insert_batch(store, make_task(), (digest, body))
    await _insert_batch(twin_or_store, make_task(), (digest, body))
    assert await store.kept_callables([digest]) == {digest: body}


async def test_a_large_callable_is_kept_whole(store: Storage, make_task: Callable[..., Task]) -> None:
    """A function with big globals pickles large: more than a NATS message (1 MB) holds."""
    digest, body = _kept(bytes(range(256)) * 8192)  # 2 MB
    await _insert_batch(store, make_task(), (digest, body))
    assert await store.kept_callables([digest]) == {digest: body}


async def test_a_batch_refused_as_a_whole_is_refused_with_its_callable(
    store: Storage, make_task: Callable[..., Task]
) -> None:
    existing = make_task()
    await store.insert([existing])
    digest, body = _kept(b"a refused batch's function")
    with pytest.raises(ValueError, match="already exists"):
        await store.insert_many(make_task(), [(new_task_ids(1)[0], b"x"), (existing.id, b"x")], (digest, body))
    if "nats" not in store.url:  # no transaction there: the object goes first, and stays (see nats_objects)
        assert await store.kept_callables([digest]) == {}


async def test_callables_outlive_a_purge_of_finished_tasks_and_go_with_a_purge_of_everything(
    store: Storage, make_task: Callable[..., Task]
) -> None:
    digest, body = _kept(b"function of a finished batch")
    [task_id, _] = await _insert_batch(store, make_task(result_ttl=0.0), (digest, body))
    await store.cancel(task_id)
    assert await store.purge() == 1
    assert await store.get(task_id) is None
    assert await store.kept_callables([digest]) == {digest: body}, "a purge of finished tasks kept the callable"
    await store.purge(everything=True)
    assert await store.kept_callables([digest]) == {}


async def test_a_purge_of_everything_racing_batches_leaves_no_task_naming_a_callable_the_store_lacks(
    store: Storage, twin: Storage, make_task: Callable[..., Task]
) -> None:
    """The callable goes in with its rows: a purge of everything lands before both or after both."""
    if "nats" in store.url:
        pytest.skip("NATS has no transaction: a purge of everything between the object and the entries is documented")
    serializer = BlobSerializer()
    done = asyncio.Event()

    async def purge_all() -> None:
        while not done.is_set():
            await twin.purge(everything=True)
            await asyncio.sleep(0)

    purger = asyncio.ensure_future(purge_all())
    try:
        for n in range(150):  # a new function each time, as an edited cell makes
            shared = SharedCallable(*_kept(f"function {n}".encode()))
            payloads = serializer.dump_calls(len, [(([n],), {}), (([n, n],), {})], shared)
            await store.insert_many(make_task(), zip(new_task_ids(2), payloads, strict=True), shared)
    finally:
        done.set()
        await purger
    tasks = await store.list(limit=1000)
    named = {callable_digest(task.payload) for task in tasks}
    assert None not in named
    kept = await store.kept_callables([digest for digest in named if digest is not None])
    assert named == set(kept), f"{len(named - set(kept))} of {len(named)} functions named by tasks are gone"
