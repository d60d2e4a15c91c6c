"""The file store's reverse index of dependencies: an empty ``dependents/<dependency id>/<task id>`` per link.

Written with a task's first record, listed by ``dependents`` (one listing per asked id, no
scan of the tasks), deleted with the task (purge, a batch rolled back).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from test_file_only import fail_third_task_write

from omniq_nb.errors import StorageError
from omniq_nb.models import DependencyMove, Task, TaskStatus
from omniq_nb.storage import file_base, file_change, open_storage

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]


def url_of(path: Path) -> str:
    return f"file://{path}"


def links(folder: Path) -> set[str]:
    """Return the dependency markers of a store folder as ``<dependency id>/<task id>``."""
    return {f"{d.name}/{m.name}" for d in (folder / "dependents").iterdir() for m in d.iterdir()}


def ready_ids(folder: Path) -> set[str]:
    """Return the ids that have a pending marker in the default queue."""
    queue = folder / "ready" / b"default".hex()
    return {p.name.rsplit("-", 1)[1] for p in queue.iterdir()} if queue.exists() else set()


def waiting(make_task: MakeTask, *on: Task, **fields: Any) -> Task:
    return make_task(status=TaskStatus.WAITING, depends_on=tuple(t.id for t in on), **fields)


async def test_a_waiting_task_has_dependency_markers_and_a_ready_marker_only_once_moved(
    tmp_path: Path, make_task: MakeTask
) -> None:
    folder = tmp_path / "q"
    async with open_storage(url_of(folder)) as store:
        a, b = make_task(), make_task()
        sink = waiting(make_task, a, b)
        await store.insert([a, b, sink])
        assert links(folder) == {f"{a.id}/{sink.id}", f"{b.id}/{sink.id}"}
        assert ready_ids(folder) == {a.id, b.id}

        await store.move_dependents(
            [DependencyMove(task_id=sink.id, source=TaskStatus.WAITING, target=TaskStatus.PENDING)]
        )
        assert ready_ids(folder) == {a.id, b.id, sink.id}
        assert links(folder) == {f"{a.id}/{sink.id}", f"{b.id}/{sink.id}"}  # kept whatever the state


async def test_purging_a_task_deletes_its_dependency_markers_and_an_emptied_folder(
    tmp_path: Path, make_task: MakeTask
) -> None:
    folder = tmp_path / "q"
    async with open_storage(url_of(folder)) as store:
        first = make_task()
        second, third = waiting(make_task, first), waiting(make_task, first)
        await store.insert([first, second, third])
        stop = DependencyMove(task_id=second.id, source=TaskStatus.WAITING, target=TaskStatus.CANCELLED)
        await store.move_dependents([stop])

        assert await store.purge(statuses=[TaskStatus.CANCELLED], finished_before=await store.now()) == 1
        assert links(folder) == {f"{first.id}/{third.id}"}
        await store.purge(everything=True)
        assert list((folder / "dependents").iterdir()) == []


async def test_dependents_of_tasks_nobody_waits_for_reads_no_task_file(
    tmp_path: Path, make_task: MakeTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_storage(url_of(tmp_path / "q")) as store:
        tasks = [make_task() for _ in range(3)]
        await store.insert(tasks)

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("dependents read a task file or listed the tasks")

        monkeypatch.setattr(file_base.FileLayout, "read", refuse)
        monkeypatch.setattr(file_base.FileLayout, "task_ids", refuse)
        assert await store.dependents([t.id for t in tasks] + ["..", ""]) == []


async def test_a_stale_dependency_marker_is_passed_over(tmp_path: Path, make_task: MakeTask) -> None:
    folder = tmp_path / "q"
    async with open_storage(url_of(folder)) as store:
        first, other = make_task(), make_task()
        await store.insert([first, other])
        (folder / "dependents" / first.id).mkdir()
        for name in (other.id, "gone"):  # a task that does not depend on it, one that no longer exists
            (folder / "dependents" / first.id / name).touch()
        assert await store.dependents([first.id]) == []


async def test_a_task_file_written_before_dependencies_loads_with_the_defaults(
    tmp_path: Path, make_task: MakeTask
) -> None:
    folder = tmp_path / "q"
    async with open_storage(url_of(folder)) as store:
        task = make_task()
        await store.insert([task])
        path = folder / "tasks" / task.id
        fields, seq = msgspec.msgpack.decode(path.read_bytes())
        del fields["depends_on"], fields["run_on"]
        path.write_bytes(msgspec.msgpack.encode([fields, seq]))

        stored = await store.get(task.id)
        assert stored is not None and (stored.depends_on, stored.run_on) == ((), "success")
        [claimed] = await store.claim(queues=["default"], limit=1, lease=30, worker="w")
        assert (claimed.id, claimed.depends_on) == (task.id, ())


async def test_a_batch_insert_that_fails_half_way_leaves_no_dependency_markers(
    tmp_path: Path, make_task: MakeTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "q"
    async with open_storage(url_of(folder)) as store:
        first = make_task()
        await store.insert([first])
        fail_third_task_write(monkeypatch)
        with pytest.raises(StorageError, match="is full"):
            await store.insert([waiting(make_task, first) for _ in range(4)])
        monkeypatch.undo()
        assert [t.id for t in await store.list()] == [first.id]
        assert list((folder / "dependents").iterdir()) == []


async def test_a_batch_whose_writer_died_half_way_loses_its_dependency_markers_at_the_next_open(
    tmp_path: Path, make_task: MakeTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "q"
    async with open_storage(url_of(folder)) as store:
        first = make_task()
        await store.insert([first])
        fail_third_task_write(monkeypatch)
        monkeypatch.setattr(file_change, "roll_back_batches", lambda layout: None)  # the writer dies: no rollback
        with pytest.raises(StorageError):
            await store.insert([waiting(make_task, first) for _ in range(4)])
        monkeypatch.undo()
    assert len(links(folder)) == 3  # two records on disk, the third's marker made before its write failed

    async with open_storage(url_of(folder)) as store:  # opening rolls the batch back
        assert [t.id for t in await store.list()] == [first.id]
        assert await store.dependents([first.id]) == []
    assert list((folder / "dependents").iterdir()) == []
