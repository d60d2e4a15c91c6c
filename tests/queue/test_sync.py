from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import omniq_nb
from omniq_nb import AsyncOmniQ, OmniQ, TaskFailed, TaskHandle, TaskResult, TaskStatus

Wait = Callable[..., Any]


def triple(x: int) -> int:
    return 3 * x


def emulate_worker(url: str, value: Any, claimed: threading.Event | None = None) -> None:
    """Claim one task from another AsyncOmniQ on the same file and settle it with ``value``."""

    async def work() -> None:
        async with AsyncOmniQ(db_url=url) as q:
            deadline = time.monotonic() + 10
            while not (tasks := await q.storage.claim(queues=["default"], limit=1, lease=30, worker="thread")):
                assert time.monotonic() < deadline, "no task to claim"
                await asyncio.sleep(0.01)
            [task] = tasks
            if claimed is not None:
                claimed.set()
            await q.storage.settle(
                [
                    TaskResult(
                        task_id=task.id,
                        lease_token=task.lease_token or "",
                        status=TaskStatus.SUCCEEDED,
                        result=q.serializer.dumps(value),
                    )
                ]
            )

    asyncio.run(work())


def run_in_thread(target: Callable[[], None]) -> concurrent.futures.Future[None]:
    future: concurrent.futures.Future[None] = concurrent.futures.Future()

    def body() -> None:
        try:
            target()
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(None)

    threading.Thread(target=body, name="test-worker", daemon=True).start()
    return future


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sync.db'}"


def test_omniq_in_plain_sync_code() -> None:
    with OmniQ(db_url="memory://") as q:
        h = q.enqueue(triple, 2)
        assert isinstance(h, TaskHandle)
        assert h.status == "pending"
        assert q.get(h.id).id == h.id
        assert [t.id for t in q.list(status="pending")] == [h.id]
        group = q.enqueue_many(triple, [(1,), (2,)])
        assert len(group) == 2
        assert q.cancel(h.id) is True
        assert q.get(h.id).status == "cancelled"
        assert q.retry(h.id).status == "pending"
        assert len(q.events(task_id=h.id)) >= 3
        assert q.purge(everything=True) == 3
        assert q.list() == []


def test_result_blocks_until_a_worker_in_another_thread_settles(sqlite_url: str) -> None:
    with OmniQ(db_url=sqlite_url) as q:
        h = q.enqueue(triple, 14)
        with pytest.raises(TimeoutError):
            h.result(timeout=0.2)  # nobody runs it yet: blocks, then gives up
        worker = run_in_thread(lambda: emulate_worker(sqlite_url, 42))
        assert h.result(timeout=10) == 42
        worker.result(timeout=10)
        assert q.result(h.id, timeout=1) == 42
        assert q.get(h.id).status == "succeeded"


def test_group_result_blocks_in_sync_code(sqlite_url: str) -> None:
    with OmniQ(db_url=sqlite_url) as q:
        group = q.enqueue_many(triple, [(1,)])
        worker = run_in_thread(lambda: emulate_worker(sqlite_url, "done"))
        assert group.result(timeout=10) == ["done"]
        worker.result(timeout=10)
        assert q.results(group.ids, timeout=1) == ["done"]


def test_failed_task_raises_in_sync_code(sqlite_url: str) -> None:
    with OmniQ(db_url=sqlite_url) as q:
        h = q.enqueue(triple, 1)
        assert q.cancel(h.id)
        with pytest.raises(TaskFailed):
            h.result(timeout=5)


def test_omniq_works_inside_a_running_event_loop(sqlite_url: str) -> None:
    """As in a Jupyter cell: sync calls on a thread whose loop is running."""

    async def main() -> tuple[Any, Any, str]:
        asyncio.get_running_loop()  # a loop runs on this thread
        with OmniQ(db_url=sqlite_url) as q:
            h = q.enqueue(triple, 5)
            async with AsyncOmniQ(db_url=sqlite_url) as worker:  # a worker on this loop
                [task] = await worker.storage.claim(queues=["default"], limit=1, lease=30, worker="w")
                await worker.storage.settle(
                    [
                        TaskResult(
                            task_id=task.id,
                            lease_token=task.lease_token or "",
                            status=TaskStatus.SUCCEEDED,
                            result=worker.serializer.dumps(15),
                        )
                    ]
                )
            blocking = h.result(timeout=10)
            awaited = await q.get(h.id)  # awaiting a sync twin's handle from another loop
            return blocking, awaited, str(q.get(h.id).status)

    assert asyncio.run(main()) == (15, 15, "succeeded")


def test_on_event_listener_runs_for_the_sync_twin(wait_until_sync: Wait) -> None:
    seen: list[tuple[str, str]] = []
    threads: set[str] = set()

    def listener(event: Any) -> None:
        threads.add(threading.current_thread().name)
        seen.append((event.task_id, str(event.kind)))

    with OmniQ(db_url="memory://") as q:
        unsubscribe = q.on_event(listener)
        h = q.enqueue(triple, 1)
        q.cancel(h.id)
        wait_until_sync(lambda: (h.id, "cancelled") in seen, timeout=5)
        unsubscribe()
    assert [kind for task_id, kind in seen if task_id == h.id] == ["enqueued", "cancelled"]
    assert threading.current_thread().name not in threads  # it ran on the twin's loop thread


def test_handle_methods_block_from_omniq(sqlite_url: str) -> None:
    with OmniQ(db_url=sqlite_url) as q:
        h = q.enqueue(triple, 1)
        assert h.cancel() is True
        again = h.retry()
        assert isinstance(again, TaskHandle)
        assert again.status == "pending"


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
def test_close_leaves_no_thread_behind(url: str, sqlite_url: str, wait_until_sync: Wait) -> None:
    before = _threads()
    q = OmniQ(db_url=sqlite_url if url == "sqlite" else url)
    h = q.enqueue(triple, 1)
    with pytest.raises(TimeoutError):
        h.result(timeout=0.05)  # exercise the event hub
    assert _threads() - before  # the portal's loop thread, at least
    q.close()
    wait_until_sync(lambda: not (_threads() - before), timeout=5)


def test_failed_constructor_leaves_no_thread_behind(tmp_path: Path, wait_until_sync: Wait) -> None:
    before = _threads()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(omniq_nb.StorageError):
        OmniQ(db_url=f"sqlite:///{blocker / 'x.db'}")
    with pytest.raises(TypeError):
        OmniQ(db_url="memory://", no_such_setting=1)
    wait_until_sync(lambda: not (_threads() - before), timeout=5)


def test_calling_omniq_from_its_own_loop_thread_raises() -> None:
    with OmniQ(db_url="memory://") as q:
        outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def on_bridge_loop() -> None:
            try:
                outcome.set_result(q.list())
            except BaseException as exc:
                outcome.set_exception(exc)

        q.core.loop.call_soon_threadsafe(on_bridge_loop)
        with pytest.raises(RuntimeError, match="AsyncOmniQ") as info:
            outcome.result(timeout=5)
        assert "await" in str(info.value)
        assert q.list() == []  # the twin still works afterwards


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(omniq_nb).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(omniq_nb.__all__) - {"__version__"} == public
    assert len(omniq_nb.__all__) == len(set(omniq_nb.__all__))
    for name in omniq_nb.__all__:
        assert hasattr(omniq_nb, name), name
    assert isinstance(omniq_nb.__version__, str)


def test_pinned_names_are_exported() -> None:
    pinned = {
        "AsyncOmniQ",
        "OmniQ",
        "TaskHandle",
        "GroupHandle",
        "Task",
        "TaskStatus",
        "TaskError",
        "TaskEvent",
        "TaskFailed",
        "TaskCancelled",
        "TaskTimeout",
        "WorkerLost",
        "SignatureError",
        "ConfigError",
    }
    assert pinned <= set(omniq_nb.__all__)


def test_import_pulls_in_no_widget_or_driver(tmp_path: Path) -> None:
    code = (
        "import sys, omniq_nb\n"
        "heavy = ('ipywidgets', 'aiosqlite', 'asyncpg', 'redis', 'nats')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_closed_omniq_says_it_is_closed(sqlite_url: str) -> None:
    """It raised anyio's "This portal is not running", which named nothing the user knows."""
    with OmniQ(db_url=sqlite_url) as q:
        h = q.enqueue(triple, 1)
    closed = "this OmniQ is closed (its with block ended, or close() was called); open a new one to go on"
    for call in (lambda: q.enqueue(triple, 2), q.list, lambda: h.result(timeout=1)):
        with pytest.raises(RuntimeError) as caught:
            call()
        assert str(caught.value) == closed
    with OmniQ(db_url=sqlite_url) as again:  # the task is still there
        assert again.get(h.id).status is TaskStatus.PENDING
