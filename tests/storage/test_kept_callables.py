"""A batch's callable is kept once, under its digest, and read back by any store object on the same data."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from omniq_nb.models import Task
from omniq_nb.storage import Storage

pytestmark = pytest.mark.anyio


def _kept(body: bytes) -> tuple[str, bytes]:
    return hashlib.sha256(body).hexdigest(), body


async def test_a_kept_callable_is_read_back_by_its_digest_and_unknown_ones_are_left_out(
    store: Storage, twin_or_store: Storage
) -> None:
    first, second = _kept(b"first function"), _kept(b"\x00second\xff" * 1000)
    unknown = hashlib.sha256(b"never kept").hexdigest()
    await store.keep_callable(*first)
    await store.keep_callable(*second)
    assert await twin_or_store.kept_callables([first[0], unknown, second[0]]) == dict([first, second])
    assert await store.kept_callables([unknown]) == {}
    assert await store.kept_callables([]) == {}


async def test_keeping_a_callable_again_changes_nothing(store: Storage, twin_or_store: Storage) -> None:
    digest, body = _kept(b"the same function")
    await store.keep_callable(digest, body)
    await twin_or_store.keep_callable(digest, body)
    await store.keep_callable(digest, body)
    assert await store.kept_callables([digest]) == {digest: body}


async def test_a_large_callable_is_kept_whole(store: Storage) -> None:
    """A function with big globals pickles large: more than a NATS message (1 MB) holds."""
    digest, body = _kept(bytes(range(256)) * 8192)  # 2 MB
    await store.keep_callable(digest, body)
    assert await store.kept_callables([digest]) == {digest: body}


async def test_callables_outlive_a_purge_of_finished_tasks_and_go_with_a_purge_of_everything(
    store: Storage, make_task: Callable[..., Task]
) -> None:
    digest, body = _kept(b"function of a finished batch")
    await store.keep_callable(digest, body)
    task = make_task(result_ttl=0.0)
    await store.insert([task])
    await store.cancel(task.id)
    assert await store.purge() == 1
    assert await store.get(task.id) is None
    assert await store.kept_callables([digest]) == {digest: body}, "a purge of finished tasks kept the callable"
    await store.purge(everything=True)
    assert await store.kept_callables([digest]) == {}
