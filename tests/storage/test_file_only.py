"""What only the file store does: its URL, its folder, the write order that survives a crash, fencing across objects."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from processes import child_env

from omniq_nb.errors import StorageError, StoreLost
from omniq_nb.models import Task, TaskError, TaskResult, TaskStatus
from omniq_nb.storage import Storage, file_base, open_outcome_store, open_storage
from omniq_nb.storage.file import FileStorage
from omniq_nb.storage.file_base import Record, marker_key

pytestmark = pytest.mark.anyio

MakeTask = Callable[..., Task]
Eventually = Callable[..., Awaitable[Any]]


def url_of(path: Path) -> str:
    assert path.is_absolute()
    return f"file://{path}"


async def claim_one(store: Storage, lease: float = 30) -> Task:
    [task] = await store.claim(queues=["default"], limit=1, lease=lease, worker="w")
    return task


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("file://relative/dir", "three slashes, no host"),
        ("file://otherhost/srv/queue", "three slashes, no host"),
        ("file:relative/dir", "does not name an absolute folder"),
        ("file:///", "does not name an absolute folder"),
        ("file:///srv/queue?mode=x", "malformed file store URL"),
        ("file:///srv/queue#x", "malformed file store URL"),
    ],
)
def test_a_url_that_is_not_an_absolute_local_folder_is_refused_and_says_the_form(url: str, says: str) -> None:
    with pytest.raises(StorageError, match=says) as refused:
        open_storage(url)
    assert "file:///absolute/folder" in str(refused.value)


def test_a_file_url_opens_the_file_store_and_keeps_results_on_fsspec_when_it_is_a_result_url(tmp_path: Path) -> None:
    store = open_storage(url_of(tmp_path / "q"))
    assert isinstance(store, FileStorage) and store.path == str(tmp_path / "q")
    assert (store.supports_notify, store.multi_host) == (True, False)
    assert type(open_outcome_store(url_of(tmp_path / "r"))).__name__ == "FsspecOutcomes"


async def test_a_folder_on_a_network_filesystem_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_base, "filesystem_type", lambda path: "nfs4")
    with pytest.raises(StorageError, match=r"network filesystem \(nfs4\).*local disk"):
        async with open_storage(url_of(tmp_path / "q")):
            pass


async def test_the_folder_is_created_owner_only(tmp_path: Path) -> None:
    async with open_storage(url_of(tmp_path / "a" / "q")):
        pass
    assert (tmp_path / "a" / "q").stat().st_mode & 0o077 == 0
    assert (tmp_path / "a" / "q" / "tasks").is_dir()


async def test_check_of_a_missing_folder_says_so_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no store at"):
        await open_storage(url_of(tmp_path / "nothing")).check(stale_after=60)
    assert not (tmp_path / "nothing").exists()


async def test_a_late_settle_after_the_lease_was_lost_is_rejected_across_store_objects(
    tmp_path: Path, make_task: MakeTask, eventually: Eventually
) -> None:
    url = url_of(tmp_path / "q")
    async with open_storage(url) as slow, open_storage(url) as rescuer:
        task = make_task(retries=2)
        await slow.insert([task])
        lost = await claim_one(slow, lease=0.2)
        [lapsed] = await eventually(lambda: rescuer.expired_leases(limit=10), what="the lease to run out")
        error = TaskError(type="omniq_nb.errors.WorkerLost", message="worker lost")
        rescue = TaskResult(
            task_id=task.id, lease_token=lapsed.lease_token or "", status=TaskStatus.PENDING, error=error, rescue=True
        )
        assert [t.status for t in await rescuer.settle([rescue])] == [TaskStatus.PENDING]
        again = await claim_one(rescuer)
        assert again.attempt == 2 and again.lease_token != lost.lease_token

        late = TaskResult(
            task_id=task.id, lease_token=lost.lease_token or "", status=TaskStatus.SUCCEEDED, result=b"late"
        )
        assert await slow.settle([late]) == []
        assert not await slow.progress(
            task_id=task.id, lease_token=lost.lease_token or "", done=1, total=1, message=None
        )
        assert await slow.renew(leases={task.id: lost.lease_token or ""}, lease=60) == set()
        stored = await rescuer.get(task.id)
        assert stored is not None and (stored.status, stored.lease_token, stored.result) == (
            TaskStatus.RUNNING,
            again.lease_token,
            None,
        )


async def test_a_half_written_task_and_a_marker_left_by_a_crash_are_never_seen(
    tmp_path: Path, make_task: MakeTask
) -> None:
    folder = tmp_path / "q"
    async with open_storage(url_of(folder)) as store:
        kept = make_task()
        await store.insert([kept])
        ghost = make_task()
        (folder / "tmp" / f"{ghost.id}.abc123").write_bytes(b"\x93\xde half a rec")  # died before the rename
        marker = folder / "ready" / b"default".hex() / marker_key(ghost, 99)
        marker.touch()  # died after the marker, before the record
        assert await store.get(ghost.id) is None
        assert [t.id for t in await store.list()] == [kept.id]
        assert (await store.count())[TaskStatus.PENDING] == 1
        assert [t.id for t in await store.claim(queues=["default"], limit=10, lease=30, worker="w")] == [kept.id]
        assert not marker.exists()  # the claim dropped the stale marker
        assert (await store.check(stale_after=60)).ok


CRASH_BEFORE_RENAME = textwrap.dedent(
    """
    import asyncio, os, sys
    from datetime import datetime, timezone
    from omniq_nb.models import Task
    from omniq_nb.storage import open_storage

    real_replace = os.replace
    def replace(source, target):
        if "/tasks/" in str(target):
            os._exit(9)  # the process dies between writing the temporary file and renaming it
        real_replace(source, target)
    os.replace = replace

    async def main():
        now = datetime.now(timezone.utc)
        async with open_storage(sys.argv[1]) as store:
            await store.insert([Task(id=sys.argv[2], name="t", payload=b"x" * 5000, eta=now, created_at=now)])

    asyncio.run(main())
    """
)


async def test_a_process_killed_between_the_temporary_write_and_the_rename_leaves_no_task(
    tmp_path: Path, make_task: MakeTask
) -> None:
    folder = tmp_path / "q"
    url = url_of(folder)
    script = tmp_path / "crash.py"
    script.write_text(CRASH_BEFORE_RENAME)
    with anyio.fail_after(60):
        done = await anyio.run_process([sys.executable, str(script), url, "ghost"], env=child_env(), check=False)
    assert done.returncode == 9, done.stderr.decode()
    [orphan] = (folder / "tmp").iterdir()
    assert orphan.name.startswith("ghost.")  # the temporary file it was writing is all that is left
    async with open_storage(url) as store:
        assert await store.get("ghost") is None
        assert await store.list() == [] and await store.claim(queues=["default"], limit=5, lease=5, worker="w") == []
        await store.insert([make_task()])  # the store still works, and the lock is free
        assert len(await store.list()) == 1
        old = time.time() - 3600
        for orphan in (folder / "tmp").iterdir():
            os.utime(orphan, (old, old))
        await store.checkpoint()
    assert list((folder / "tmp").iterdir()) == []  # an old orphan is swept


async def test_a_torn_event_line_is_skipped_and_ended_by_the_next_append(tmp_path: Path, make_task: MakeTask) -> None:
    folder = tmp_path / "q"
    async with open_storage(url_of(folder)) as store:
        first = make_task()
        await store.insert([first])
        [segment] = (folder / "events").iterdir()
        with segment.open("ab") as log:
            log.write(b'{"seq": 2, "task_id": "torn')  # a writer died mid-line
        assert [e.task_id for e in await store.events()] == [first.id]
        second = make_task()
        await store.insert([second])
        assert [e.task_id for e in await store.events()] == [first.id, second.id]


async def test_a_record_is_a_task_and_its_enqueue_number(tmp_path: Path, make_task: MakeTask) -> None:
    folder = tmp_path / "q"
    async with open_storage(url_of(folder)) as store:
        task = make_task()
        await store.insert([task])
    record = file_base.FileLayout(str(folder)).read(task.id)
    assert record == Record(task, 1)


async def test_an_id_that_cannot_be_a_file_name_is_refused_and_nothing_is_inserted(
    tmp_path: Path, make_task: MakeTask
) -> None:
    async with open_storage(url_of(tmp_path / "q")) as store:
        with pytest.raises(ValueError, match="cannot be stored in a file store"):
            await store.insert([make_task(), make_task(id="../escape")])
        assert await store.list() == []


def test_a_child_forked_while_a_change_holds_the_lock_does_not_keep_it(tmp_path: Path) -> None:
    layout = file_base.FileLayout(str(tmp_path / "q"))
    layout.prepare()
    ready, told = os.pipe()
    with layout.locked():
        pid = os.fork()
        if pid == 0:  # the child lives on after its parent's change ended
            os.write(told, b"!")  # the fork hooks have run
            time.sleep(30)
            os._exit(0)
    try:
        assert os.read(ready, 1) == b"!"
        fd = os.open(tmp_path / "q" / "lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if the child kept the lock
        finally:
            os.close(fd)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready)
        os.close(told)


async def test_a_claim_that_died_between_its_rename_and_its_write_gives_the_task_back(
    tmp_path: Path, make_task: MakeTask
) -> None:
    folder = tmp_path / "q"
    async with open_storage(url_of(folder)) as store:
        task = make_task()
        await store.insert([task])
        [marker] = (folder / "ready" / b"default".hex()).iterdir()
        marker.rename(folder / "running" / task.id)  # the claim's rename, then the process died
        assert await store.claim(queues=["default"], limit=5, lease=30, worker="w") == []
        assert await store.expired_leases(limit=10) == []  # the rescue scan puts its markers back
        assert marker.exists() and not (folder / "running" / task.id).exists()
        [claimed] = await store.claim(queues=["default"], limit=5, lease=30, worker="w")
        assert (claimed.id, claimed.attempt) == (task.id, 1)
        assert (folder / "running" / task.id).exists() and not marker.exists()


CRASH_MID_BATCH = textwrap.dedent(
    """
    import asyncio, os, sys
    from datetime import datetime, timezone
    from omniq_nb.models import Task
    from omniq_nb.storage import open_storage

    written = 0
    real_replace = os.replace
    def replace(source, target):
        global written
        if "/tasks/" in str(target):
            written += 1
            if written == 3:
                os._exit(9)  # the process dies with two tasks of the batch on disk
        real_replace(source, target)
    os.replace = replace

    async def main():
        now = datetime.now(timezone.utc)
        async with open_storage(sys.argv[1]) as store:
            await store.insert([Task(id=f"t{n}", name="t", eta=now, created_at=now) for n in range(5)])

    asyncio.run(main())
    """
)


async def test_a_process_killed_in_the_middle_of_a_batch_insert_leaves_none_of_it(
    tmp_path: Path, make_task: MakeTask
) -> None:
    folder = tmp_path / "q"
    url = url_of(folder)
    script = tmp_path / "crash.py"
    script.write_text(CRASH_MID_BATCH)
    with anyio.fail_after(60):
        done = await anyio.run_process([sys.executable, str(script), url], env=child_env(), check=False)
    assert done.returncode == 9, done.stderr.decode()
    assert sorted(p.name for p in (folder / "tasks").iterdir()) == ["t0", "t1"]  # on disk, not yet committed
    async with open_storage(url) as store:  # opening rolls the batch back
        assert await store.get_many([f"t{n}" for n in range(5)]) == []
        assert await store.claim(queues=["default"], limit=10, lease=30, worker="w") == []
        kept = [make_task(), make_task()]
        await store.insert(kept)
        assert {t.id for t in await store.list()} == {t.id for t in kept}
    assert list((folder / "batches").iterdir()) == []


def fail_third_task_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the third task record written fail as a full disk does."""
    real_write, calls = file_base.FileLayout.write, []

    def full_disk(self: file_base.FileLayout, path: Path, data: bytes, *, durable: bool) -> None:
        if path.parent.name == "tasks":
            calls.append(path.name)
            if len(calls) == 3:
                raise OSError(28, "No space left on device")
        real_write(self, path, data, durable=durable)

    monkeypatch.setattr(file_base.FileLayout, "write", full_disk)


async def test_a_batch_insert_that_fails_half_way_leaves_none_of_it(
    tmp_path: Path, make_task: MakeTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_storage(url_of(tmp_path / "q")) as store:
        layout = file_base.FileLayout(str(tmp_path / "q"))
        fail_third_task_write(monkeypatch)
        with pytest.raises(StorageError, match="is full"):
            await store.insert([make_task() for _ in range(5)])
        monkeypatch.undo()
        assert await store.list() == [] and layout.task_ids() == []


async def test_a_folder_deleted_while_in_use_raises_store_lost(tmp_path: Path, make_task: MakeTask) -> None:
    folder = tmp_path / "q"
    async with open_storage(url_of(folder)) as store:
        await store.insert([make_task()])
        shutil.rmtree(folder)
        with pytest.raises(StoreLost, match="deleted or moved while in use"):
            await store.insert([make_task()])
        with pytest.raises(StoreLost):
            await store.claim(queues=["default"], limit=1, lease=30, worker="w")
