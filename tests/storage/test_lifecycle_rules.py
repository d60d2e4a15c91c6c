"""Unit tests of storage.lifecycle: the rules memory applies in Python and SQLite writes as SQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from omniq_nb.errors import InvalidTransition
from omniq_nb.models import EventKind, Task, TaskResult, TaskStatus, WorkerInfo
from omniq_nb.storage import lifecycle
from omniq_nb.storage.sql_text import FINISHED_SQL, REQUEUEABLE_SQL, UNFINISHED_SQL

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
SECOND = timedelta(seconds=1)


def task(**overrides: Any) -> Task:
    fields: dict[str, Any] = {"id": "t", "name": "job", "payload": b"", "eta": NOW, "created_at": NOW}
    fields.update(overrides)
    return Task(**fields)


def test_status_sets_and_their_sql_lists_agree() -> None:
    assert {s for s in TaskStatus if s.is_terminal} == lifecycle.FINISHED
    assert {TaskStatus.WAITING, TaskStatus.PENDING, TaskStatus.RUNNING} == lifecycle.UNFINISHED
    assert {TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED} == lifecycle.REQUEUEABLE
    assert FINISHED_SQL == "('succeeded', 'failed', 'cancelled', 'expired')"
    assert UNFINISHED_SQL == "('waiting', 'pending', 'running')"
    assert REQUEUEABLE_SQL == "('failed', 'cancelled', 'expired')"


def test_progress_fraction_is_clamped_and_zero_without_a_total() -> None:
    assert lifecycle.progress_fraction(1, 4) == 0.25
    assert lifecycle.progress_fraction(9, 4) == 1.0
    assert lifecycle.progress_fraction(-1, 4) == 0.0
    assert lifecycle.progress_fraction(3, None) == 0.0
    assert lifecycle.progress_fraction(3, 0) == 0.0


def test_outcomes_must_follow_running() -> None:
    ok = TaskResult(task_id="t", lease_token="k", status=TaskStatus.SUCCEEDED)
    lifecycle.check_outcomes([ok])
    with pytest.raises(InvalidTransition):
        lifecycle.check_outcomes([ok, TaskResult(task_id="t", lease_token="k", status=TaskStatus.EXPIRED)])


def test_an_outcome_applies_only_on_the_held_lease_and_a_rescue_only_after_it_lapsed() -> None:
    running = task(status=TaskStatus.RUNNING, lease_token="k", lease_until=NOW + SECOND)
    done = TaskResult(task_id="t", lease_token="k", status=TaskStatus.SUCCEEDED)
    rescue = TaskResult(task_id="t", lease_token="k", status=TaskStatus.PENDING, rescue=True)
    assert lifecycle.outcome_applies(running, done, NOW)
    assert not lifecycle.outcome_applies(
        running, TaskResult(task_id="t", lease_token="x", status=TaskStatus.FAILED), NOW
    )
    assert not lifecycle.outcome_applies(running, rescue, NOW)
    assert lifecycle.outcome_applies(running, rescue, NOW + SECOND)
    assert not lifecycle.holds_lease(task(status=TaskStatus.PENDING, lease_token="k"), "k")


def test_claimable_lapsed_and_expiry() -> None:
    assert lifecycle.claimable(task(), ["default"], NOW)
    assert not lifecycle.claimable(task(), ["other"], NOW)
    assert not lifecycle.claimable(task(eta=NOW + SECOND), ["default"], NOW)
    assert not lifecycle.claimable(task(expires_at=NOW), ["default"], NOW)
    assert lifecycle.due_to_expire(task(expires_at=NOW), NOW)
    assert not lifecycle.due_to_expire(task(expires_at=NOW, status=TaskStatus.RUNNING), NOW)
    assert lifecycle.lease_lapsed(task(status=TaskStatus.RUNNING, lease_until=NOW), NOW)
    assert not lifecycle.lease_lapsed(task(status=TaskStatus.RUNNING, lease_until=NOW + SECOND), NOW)


def test_a_requeued_task_gets_its_whole_ttl_again() -> None:
    later = NOW + timedelta(hours=1)
    assert lifecycle.requeued_expiry(task(expires_at=NOW + 10 * SECOND), later) == later + 10 * SECOND
    assert lifecycle.requeued_expiry(task(), later) is None


def test_worker_alive_until_its_ttl_after_the_heartbeat() -> None:
    worker = WorkerInfo(id="w", name="w", host="h", pid=1, kind="async", concurrency=1, queues=("q",), ttl=5.0)
    assert not lifecycle.worker_alive(worker, NOW)
    beat = msgspec.structs.replace(worker, heartbeat=NOW)
    assert lifecycle.worker_alive(beat, NOW + 4 * SECOND)
    assert not lifecycle.worker_alive(beat, NOW + 5 * SECOND)


def test_purgeable_by_result_ttl_or_by_age_and_status() -> None:
    done = task(status=TaskStatus.SUCCEEDED, finished_at=NOW, result_ttl=10.0)
    assert not lifecycle.purgeable(done, NOW + SECOND, finished_before=None, statuses=())
    assert lifecycle.purgeable(done, NOW + 10 * SECOND, finished_before=None, statuses=())
    assert lifecycle.purgeable(done, NOW, finished_before=NOW + SECOND, statuses=())
    assert not lifecycle.purgeable(done, NOW, finished_before=NOW + SECOND, statuses={TaskStatus.FAILED})
    assert not lifecycle.purgeable(task(finished_at=NOW), NOW, finished_before=NOW + SECOND, statuses=())


def test_entered_names_the_event_of_each_status() -> None:
    assert lifecycle.entered(TaskStatus.PENDING) is EventKind.RETRIED
    assert lifecycle.entered(TaskStatus.RUNNING) is EventKind.STARTED
    assert {lifecycle.entered(s) for s in lifecycle.FINISHED} == {
        EventKind.SUCCEEDED,
        EventKind.FAILED,
        EventKind.CANCELLED,
        EventKind.EXPIRED,
    }
