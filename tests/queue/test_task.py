"""@omniq.task: inline calls, submit/map on the default queue, options, omniq.get."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import omniq_nb as omniq
from omniq_nb.task import default_queue, use_queue


def triple(x: int) -> int:
    return 3 * x


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[omniq.OmniQ]:
    q = omniq.OmniQ(db_url=f"sqlite:///{tmp_path / 'tasks.db'}", poll_interval=0.05)
    use_queue(q)
    try:
        with omniq.WorkerPool(q, concurrency=2):
            yield q
    finally:
        use_queue(None)
        q.close()


def test_a_task_can_opt_out_of_the_ttl_settings(tmp_path: Path) -> None:
    """Issue 13: ``@omniq.task(ttl=None)`` never expires even with TASK_TTL set."""
    q = omniq.OmniQ(db_url=f"sqlite:///{tmp_path / 'tasks.db'}", task_ttl=30, result_ttl=60)
    use_queue(q)
    try:
        forever = omniq.task(ttl=None, result_ttl=None)(triple)
        kept, mapped = forever.submit(1), forever.map([1, 2])
        defaulted = forever.options(ttl=omniq.DEFAULT).submit(1)
        assert [(h.task.expires_at, h.task.result_ttl) for h in (kept, *mapped.handles)] == [(None, None)] * 3
        assert defaulted.task.expires_at is not None and defaulted.task.result_ttl is None
        assert omniq.task(triple).submit(1).task.result_ttl == 60.0
    finally:
        use_queue(None)
        q.close()


def test_works_with_and_without_parentheses() -> None:
    bare = omniq.task(triple)
    configured = omniq.task(retries=3, timeout=60, priority=2)(triple)
    assert isinstance(bare, omniq.TaskFunction) and isinstance(configured, omniq.TaskFunction)
    assert bare(2) == configured(2) == 6  # a plain call runs inline
    assert configured.task_options.retries == 3
    assert configured.name == bare.name == f"{__name__}.triple"
    assert configured.__name__ == "triple" and configured.__doc__ == triple.__doc__
    assert "triple" in repr(configured)


def test_options_override_some_and_keep_the_rest() -> None:
    base = omniq.task(retries=1, queue="q1", cron="*/5 * * * *")(triple)
    changed = base.options(retries=5, interval=timedelta(seconds=30))
    assert (changed.task_options.retries, changed.task_options.queue) == (5, "q1")
    assert changed.task_options.schedule == omniq.Schedule(interval=timedelta(seconds=30))
    assert base.task_options.retries == 1  # the original is unchanged
    with pytest.raises(TypeError, match="unknown task option"):
        base.options(retrys=2)


def test_bad_options_fail_at_decoration() -> None:
    with pytest.raises(TypeError, match="unknown task option"):
        omniq.task(tries=3)
    with pytest.raises(ValueError, match="cron"):
        omniq.task(cron="every minute")
    with pytest.raises(omniq.ConfigError, match=r"cron='0 0 31 2 \*' matches no time"):
        omniq.task(cron="0 0 31 2 *")  # valid syntax, but no February 31st ever comes
    with pytest.raises(TypeError, match="needs a function"):
        omniq.task()(42)  # type: ignore[arg-type]


def test_submit_map_and_get_use_the_default_queue(queue: omniq.OmniQ) -> None:
    task = omniq.task(retries=2, priority=4, name="triple it")(triple)
    handle = task.submit(5)
    assert handle.task.name == "triple it" and handle.task.priority == 4 and handle.task.retries == 2
    assert handle.result(timeout=30) == 15
    group = task.map(range(5))
    assert len(group.ids) == 5
    assert group.result(timeout=30) == [0, 3, 6, 9, 12]
    assert omniq.get(handle.id).result(timeout=30) == 15
    assert default_queue() is queue


def test_periodic_options_reach_the_task(queue: omniq.OmniQ) -> None:
    handle = omniq.task(interval=3600)(triple).submit(1)
    assert handle.task.schedule == omniq.Schedule(interval=timedelta(seconds=3600))
    assert handle.task.series == handle.id
    assert queue.cancel(handle.id)


def test_get_of_an_unknown_id_raises(queue: omniq.OmniQ) -> None:
    with pytest.raises(omniq.TaskNotFound, match="no task with id"):
        omniq.get("does-not-exist")


def test_the_default_queue_is_built_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OMNIQ_DB_URL", f"sqlite:///{tmp_path / 'env.db'}")
    use_queue(None)
    try:
        built = default_queue()
        assert built.settings.db_url.endswith("env.db")
        assert default_queue() is built
    finally:
        built.close()
        use_queue(None)
