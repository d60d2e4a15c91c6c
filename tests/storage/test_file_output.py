"""The file store's cache markers and output files: what is on disk, and how a torn write is recovered."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from omniq_nb.models import Task, TaskResult, TaskStatus
from omniq_nb.storage.file import FileStorage

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]
BIG = 1 << 20


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FileStorage]:
    async with FileStorage(f"file://{tmp_path}/queue") as opened:
        yield opened


def entries(folder: Path) -> list[str]:
    """Return the paths of every file and folder under ``folder``, relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


async def succeed(store: FileStorage, task: Task) -> None:
    await store.insert([task])
    [claimed] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
    outcome = TaskResult(task_id=claimed.id, lease_token=claimed.lease_token or "", status=TaskStatus.SUCCEEDED)
    assert await store.settle([outcome])


async def test_any_key_makes_a_marker_and_purge_leaves_no_file(
    store: FileStorage, make_task: MakeTask, tmp_path: Path
) -> None:
    key = "../a/b\x00" + "k" * 400  # a path, a NUL, longer than a file name may be
    task = make_task(cache_key=key, result_ttl=0.0)
    await succeed(store, task)
    await store.append_output(task.id, [("stdout", "hi\n")], limit_bytes=BIG, limit_lines=BIG)
    root = tmp_path / "queue"
    [marker] = entries(root / "cache")[1:]
    assert marker.endswith("/" + task.id)
    assert entries(root / "output") == [task.id, f"{task.id}/index", f"{task.id}/log"]
    assert [hit.id for hit in (await store.cached([key])).values()] == [task.id]

    assert await store.purge() == 1
    assert entries(root / "cache") == [] and entries(root / "output") == []


async def test_forget_cached_removes_the_markers(store: FileStorage, make_task: MakeTask, tmp_path: Path) -> None:
    await succeed(store, make_task(cache_key="k"))
    assert await store.forget_cached() == 1
    assert entries(tmp_path / "queue" / "cache") == []


async def test_a_torn_append_is_cut_off_and_seq_goes_on(
    store: FileStorage, make_task: MakeTask, tmp_path: Path
) -> None:
    task = make_task()
    await store.insert([task])
    await store.append_output(task.id, [("stdout", "1\n"), ("stdout", "2\n")], limit_bytes=BIG, limit_lines=BIG)
    log = tmp_path / "queue" / "output" / task.id / "log"
    log.write_bytes(log.read_bytes() + b"\x03\x00\x00")  # a writer that died half way through a frame

    assert [c.seq for c in (await store.output(task.id)).chunks] == [1, 2]  # readers skip the torn tail
    await store.append_output(task.id, [("stderr", "3\n")], limit_bytes=BIG, limit_lines=BIG)
    assert [(c.seq, c.stream, c.text) for c in (await store.output(task.id)).chunks] == [
        (1, "stdout", "1\n"),
        (2, "stdout", "2\n"),
        (3, "stderr", "3\n"),
    ]


async def test_a_lost_index_is_rebuilt_after_a_trim(store: FileStorage, make_task: MakeTask, tmp_path: Path) -> None:
    task = make_task()
    await store.insert([task])
    for n in range(5):
        await store.append_output(task.id, [("stdout", f"{n}\n")], limit_bytes=BIG, limit_lines=2)
    os.unlink(tmp_path / "queue" / "output" / task.id / "index")

    await store.append_output(task.id, [("stdout", "5\n")], limit_bytes=BIG, limit_lines=2)
    page = await store.output(task.id)
    assert [(c.seq, c.text) for c in page.chunks] == [(5, "4\n"), (6, "5\n")] and page.dropped
