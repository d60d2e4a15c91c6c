"""The arithmetic of expected durations and ETAs (``omniq_nb.estimates``), on real ``Task`` snapshots."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from omniq_nb.estimates import (
    TaskStats,
    estimate_parts,
    group_time_left,
    run_seconds,
    seconds_text,
    stats_of,
    time_left,
)
from omniq_nb.models import Task, TaskStatus

UTC = timezone.utc
TWO_SECONDS = stats_of("fit", [1.9, 2.0, 2.1, 2.0, 2.0])


def task(status: TaskStatus = TaskStatus.RUNNING, *, ran: float | None = None, progress: float = 0.0) -> Task:
    now = datetime.now(UTC)
    started = None if ran is None else now - timedelta(seconds=ran)
    return Task(id="t", name="fit", eta=now, created_at=now, status=status, started_at=started, progress=progress)


def test_stats_of_no_runs_are_all_none() -> None:
    assert stats_of("fit", []) == TaskStats(name="fit", count=0, median=None, p90=None, mean=None, last=None)


def test_stats_of_one_run() -> None:
    assert stats_of("fit", [3.0]) == TaskStats(name="fit", count=1, median=3.0, p90=3.0, mean=3.0, last=3.0)


def test_stats_of_many_runs() -> None:
    stats = stats_of("fit", [float(n) for n in range(10, 0, -1)])  # oldest first: the last run took 1 s
    assert (stats.count, stats.median, stats.mean, stats.last) == (10, 5.5, 5.5, 1.0)
    assert stats.p90 == pytest.approx(9.1)


def test_run_seconds_only_of_succeeded_tasks() -> None:
    started = datetime(2026, 1, 1, tzinfo=UTC)
    done = msgspec.structs.replace(
        task(TaskStatus.SUCCEEDED), started_at=started, finished_at=started + timedelta(seconds=2)
    )
    assert run_seconds(done) == 2.0
    assert run_seconds(task(TaskStatus.RUNNING, ran=2.0)) is None
    assert run_seconds(task(TaskStatus.FAILED, ran=2.0)) is None


def test_time_left_from_history_before_any_progress() -> None:
    assert time_left(TWO_SECONDS, elapsed=0.5, progress=0.0) == pytest.approx(1.5, abs=0.05)
    assert time_left(TWO_SECONDS, elapsed=3.0, progress=0.0) == 0.0  # never negative


def test_time_left_without_history_is_the_tasks_own_pace() -> None:
    assert time_left(None, elapsed=1.0, progress=0.25) == pytest.approx(3.0)
    assert time_left(stats_of("fit", []), elapsed=1.0, progress=0.5) == pytest.approx(1.0)
    assert time_left(None, elapsed=1.0, progress=0.0) is None
    assert time_left(None, elapsed=1.0, progress=1.0) is None


def test_time_left_blends_history_and_pace_as_progress_grows() -> None:
    # history says 2 s in all; the task's pace says 8 s in all (a quarter done after 2 s)
    early = time_left(TWO_SECONDS, elapsed=0.2, progress=0.025)  # weight (1 - p)^2 = 0.95 on history
    assert early == pytest.approx(0.950625 * 1.8 + 0.049375 * 7.8)
    half = time_left(TWO_SECONDS, elapsed=4.0, progress=0.5)  # history: 0 left; pace: 4 s left
    assert half == pytest.approx(0.75 * 4.0)
    late = time_left(TWO_SECONDS, elapsed=9.0, progress=0.9)  # pace: 1 s left, history almost ignored
    assert late == pytest.approx(0.99 * 1.0)


def test_estimate_parts_of_a_pending_task_is_the_expected_duration() -> None:
    assert estimate_parts(task(TaskStatus.PENDING), TWO_SECONDS) == ["expected ~2.0 s"]
    assert estimate_parts(task(TaskStatus.PENDING), None) == []
    assert estimate_parts(task(TaskStatus.PENDING), stats_of("fit", [])) == []


def test_estimate_parts_of_a_running_task() -> None:
    assert estimate_parts(task(ran=0.46), TWO_SECONDS) == ["expected ~2.0 s", "ETA 1.5 s"]  # 1.54 s, as time passes
    assert estimate_parts(task(ran=2.5), TWO_SECONDS) == ["expected ~2.0 s", "longer than usual (p90 2.1 s)"]
    assert estimate_parts(task(ran=4.0, progress=0.5), TWO_SECONDS) == ["expected ~2.0 s", "ETA 3.0 s"]
    assert estimate_parts(task(ran=1.0, progress=0.25), None) == ["ETA 3.0 s"]
    assert estimate_parts(task(ran=1.0), None) == []


def test_estimate_parts_of_a_finished_task_is_nothing() -> None:
    for status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED):
        assert estimate_parts(task(status, ran=1.0), TWO_SECONDS) == []


def test_group_time_left_shares_the_work_among_the_runs_seen_at_once() -> None:
    tasks = [
        task(ran=0.5),
        task(ran=0.5),
        task(TaskStatus.PENDING),
        task(TaskStatus.PENDING),
        task(TaskStatus.SUCCEEDED),
    ]
    known = {"fit": TWO_SECONDS}.get
    assert group_time_left(tasks, known, concurrency=2) == pytest.approx((1.5 + 1.5 + 2.0 + 2.0) / 2, abs=0.05)
    assert group_time_left(tasks, known, concurrency=1) == pytest.approx(7.0, abs=0.05)
    # the group cannot finish before its slowest running task, however many slots
    assert group_time_left(tasks, known, concurrency=100) == pytest.approx(1.5, abs=0.05)
    assert group_time_left(tasks, known, concurrency=0) == pytest.approx(7.0, abs=0.05)  # at least one run at a time


def test_group_time_left_unknown() -> None:
    assert group_time_left([task(TaskStatus.PENDING)], {}.get, concurrency=1) is None  # no history
    assert group_time_left([task(TaskStatus.SUCCEEDED)], {"fit": TWO_SECONDS}.get, concurrency=1) is None  # all done
    assert group_time_left([], {"fit": TWO_SECONDS}.get, concurrency=1) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-1.0, "0.0 s"),
        (0.04, "0.0 s"),
        (1.25, "1.2 s"),
        (59.94, "59.9 s"),
        (59.96, "1 min 00 s"),
        (125, "2 min 05 s"),
        (3599.4, "59 min 59 s"),
        (7380, "2 h 03 min"),
    ],
)
def test_seconds_text(seconds: float, text: str) -> None:
    assert seconds_text(seconds) == text


def test_the_p90_of_equal_runs_is_never_below_their_median() -> None:
    stats = stats_of("tests.nap", [1.02669] * 5)  # the interpolation once rounded it below
    assert stats.median is not None and stats.p90 is not None
    assert stats.median <= stats.p90 <= 1.02669
