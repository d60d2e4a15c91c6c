"""Process calls are routed by their header: the parent never unpickles a process task's payload.

Calls written before the header said whether the callable is a coroutine function still run
where they ran before (the parent loads them to find out).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import omniq_nb as omniq
from omniq_nb.blob_format import is_coroutine_call
from omniq_nb.serialization import BlobSerializer
from omniq_nb.worker.executors import Executors, LoopExecutor, ProcessExecutor, ThreadExecutor

pytestmark = pytest.mark.anyio


def unpickled_in(folder: str) -> str:
    """Leave a marker naming the process that unpickles the argument; return the folder."""
    Path(folder, f"unpickled-by-{os.getpid()}").touch()
    return folder


class Tattletale:
    """An argument whose unpickling leaves a marker in the unpickling process."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return unpickled_in, (self.folder,)


async def fetch() -> str:
    return "fetched"


def plain() -> str:
    return "plain"


def _legacy(blob: bytes) -> bytes:
    """The same unsigned call as written before the header flag: format ``p``."""
    return blob[:3] + b"p" + blob[4:]


@pytest.mark.parametrize("secret", [None, "key"], ids=["unsigned", "signed"])
async def test_a_process_task_payload_is_not_unpickled_in_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str | None
) -> None:
    if secret is not None:
        monkeypatch.setenv("OMNIQ_SECRET", secret)
    markers = tmp_path / "markers"
    markers.mkdir()
    async with (
        omniq.AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'q.db'}", poll_interval=0.05) as q,
        omniq.AsyncWorkerPool(q, concurrency=1, kind="process", lease=5),
    ):
        h = await q.enqueue(len, Tattletale(str(markers)))
        assert await h.result(timeout=60) == len(str(markers))
    unpicklers = [p.name for p in markers.iterdir()]
    assert len(unpicklers) == 1, unpicklers  # the child did
    assert unpicklers != [f"unpickled-by-{os.getpid()}"]


def test_call_blobs_say_whether_the_callable_is_a_coroutine_function() -> None:
    for secret in (None, "key"):
        s = BlobSerializer(secret)
        assert is_coroutine_call(s.dump_call(fetch, (), {})) is True
        assert is_coroutine_call(s.dump_call(plain, (), {})) is False
        assert [is_coroutine_call(b) for b in s.dump_calls(fetch, [((), {}), ((), {})])] == [True, True]
        assert is_coroutine_call(s.dumps({"a": 1})) is None
    assert is_coroutine_call(_legacy(BlobSerializer().dump_call(fetch, (), {}))) is None
    for garbage in (b"", b"OQ", b"xx\x01a-", b"OQ\x02a-"):
        assert is_coroutine_call(garbage) is None


def test_the_flag_is_covered_by_the_signature() -> None:
    s = BlobSerializer("key")
    blob = bytearray(s.dump_call(plain, (), {}))
    blob[3] = ord("a")
    with pytest.raises(omniq.SignatureError):
        s.load_call(bytes(blob))


async def test_executors_are_chosen_by_kind_and_header() -> None:
    s = BlobSerializer()
    executors = Executors(s, None, 1)
    try:
        coroutine, sync = s.dump_call(fetch, (), {}), s.dump_call(plain, (), {})
        for blob in (coroutine, _legacy(coroutine)):  # a legacy call is loaded here to find out
            for kind in ("async", "thread", "process"):
                assert isinstance(executors.choose(kind, blob), LoopExecutor)
        for blob in (sync, _legacy(sync)):
            assert isinstance(executors.choose("async", blob), LoopExecutor)
            assert isinstance(executors.choose("thread", blob), ThreadExecutor)
            assert isinstance(executors.choose("process", blob), ProcessExecutor)
        unverifiable = _legacy(BlobSerializer("other").dump_call(plain, (), {}))
        assert isinstance(executors.choose("process", unverifiable), LoopExecutor)  # it reports the failure
    finally:
        executors.close()


class LegacySerializer(BlobSerializer):
    """Writes calls as versions before the header flag did (unsigned)."""

    def dump_calls(
        self, fn: Callable[..., Any], calls: Iterable[tuple[Sequence[Any], Mapping[str, Any]]]
    ) -> Iterator[bytes]:
        return (_legacy(blob) for blob in super().dump_calls(fn, calls))


async def test_legacy_calls_still_run_where_they_ran(tmp_path: Path) -> None:
    async with omniq.AsyncOmniQ(db_url=f"sqlite:///{tmp_path / 'q.db'}", poll_interval=0.05) as q:
        q.serializer = LegacySerializer()
        handles = [await q.enqueue(fn) for fn in (fetch, plain, os.getpid)]
        assert [is_coroutine_call(h.task.payload) for h in handles] == [None, None, None]
        async with omniq.AsyncWorkerPool(q, concurrency=2, kind="process", lease=5):
            results = [await h.result(timeout=60) for h in handles]
    assert results[:2] == ["fetched", "plain"]
    assert results[2] != os.getpid()  # still in a child process
