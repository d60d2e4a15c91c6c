"""How long tasks take: statistics of a function's past runs, and what they say about a task now.

Pure: no I/O, no loop. ``omniq_nb.history`` reads the durations from the store; the views
and ``omniq-nb show`` turn the estimates into words with ``estimate_parts``.

A task's expected duration is the median of its function's recent successful runs. While it
runs, the time left is estimated from the history and, once it reports progress ``p`` (0 < p
< 1), from its own pace, blended with a weight ``w = (1 - p)²`` on the history::

    left = w · max(0, expected - elapsed) + (1 - w) · elapsed · (1 - p) / p

so the history leads while little is done and the task's own pace takes over as it advances
(at p = 0.5 the history still counts for a quarter).

Example:
    >>> stats = stats_of("fit", [2.0, 2.2, 1.8, 2.0, 2.1])
    >>> stats.count, stats.median, round(stats.p90, 2)
    (5, 2.0, 2.16)
    >>> time_left(stats, elapsed=0.5, progress=0.0)
    1.5
    >>> time_left(None, elapsed=1.0, progress=0.25)      # no history: its own pace only
    3.0
    >>> seconds_text(1.25), seconds_text(125), seconds_text(7380)
    ('1.2 s', '2 min 05 s', '2 h 03 min')

"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone

import msgspec

from omniq_nb.models import Task, TaskStatus

_UTC = timezone.utc


class TaskStats(msgspec.Struct, frozen=True, kw_only=True):
    """How long a function's recent successful runs took (``omniq.stats(fn)``), in seconds.

    The sample is bounded: at most the latest ``omniq_nb.history.SAMPLE`` runs the store
    still keeps. Every duration is ``None`` when ``count`` is 0.
    """

    name: str
    """The task name the runs were found under (``Task.name``)."""
    count: int = 0
    """How many runs the figures are taken from."""
    median: float | None = None
    """The middle duration: what a new run is expected to take."""
    p90: float | None = None
    """Nine runs in ten took at most this long."""
    mean: float | None = None
    """The average duration."""
    last: float | None = None
    """The duration of the latest run."""


def stats_of(name: str, durations: Sequence[float]) -> TaskStats:
    """Return the statistics of one function's run durations.

    Args:
        name: the task name.
        durations: seconds each run took, oldest first (the last one is ``last``).

    """
    if not durations:
        return TaskStats(name=name)
    ordered = sorted(durations)
    median = statistics.median(ordered)
    p90 = statistics.quantiles(ordered, n=10, method="inclusive")[8] if len(ordered) > 1 else ordered[0]
    return TaskStats(
        name=name,
        count=len(ordered),
        median=median,
        p90=min(max(p90, median), ordered[-1]),  # the interpolation's rounding can cross them
        mean=statistics.fmean(ordered),
        last=durations[-1],
    )


def run_seconds(task: Task) -> float | None:
    """Return how long a succeeded task's last attempt ran, ``None`` for any other task."""
    if task.status is not TaskStatus.SUCCEEDED or task.started_at is None or task.finished_at is None:
        return None
    return max(0.0, (task.finished_at - task.started_at).total_seconds())


def elapsed(task: Task) -> float | None:
    """Return seconds from the task's start to its finish (or to now), ``None`` before it starts.

    Args:
        task: the snapshot.
    """
    if task.started_at is None:
        return None
    end = task.finished_at or datetime.now(_UTC)
    return max(0.0, (end - task.started_at).total_seconds())


def time_left(stats: TaskStats | None, *, elapsed: float, progress: float) -> float | None:
    """Return the seconds a running task still needs (the blend in the module's docstring).

    Args:
        stats: its function's past runs (``None`` or empty: none known).
        elapsed: seconds it has run.
        progress: the fraction it reported done (0 when it reported nothing).

    Returns:
        Seconds, never negative; ``None`` when neither the history nor progress tells.

    """
    reported = 0.0 < progress < 1.0
    pace = elapsed * (1.0 - progress) / progress if reported else None
    expected = stats.median if stats is not None else None
    if expected is None:
        return pace
    by_history = max(0.0, expected - elapsed)
    if pace is None:
        return by_history
    weight = (1.0 - progress) ** 2
    return weight * by_history + (1.0 - weight) * pace


def group_time_left(
    tasks: Iterable[Task], stats: Callable[[str], TaskStats | None], *, concurrency: int
) -> float | None:
    """Return the seconds until every unfinished task of a group is done, from their expected durations.

    The work left (each running task's ``time_left``, each pending task's expected duration)
    is shared by ``concurrency`` runs at a time, and the group cannot finish before its
    slowest running task does.

    Args:
        tasks: the group's snapshots.
        stats: the past runs of a task name (``None``: not known yet).
        concurrency: how many of its tasks run at once (at least 1 is assumed).

    Returns:
        Seconds, or ``None`` when an unfinished task has no estimate or none is unfinished.

    """
    running: list[float] = []
    waiting: list[float] = []
    for task in tasks:
        if task.status.is_terminal:
            continue
        known = stats(task.name)
        if task.status is TaskStatus.RUNNING:
            left = time_left(known, elapsed=elapsed(task) or 0.0, progress=task.progress)
        else:
            left = known.median if known is not None else None
        if left is None:
            return None
        (running if task.status is TaskStatus.RUNNING else waiting).append(left)
    if not running and not waiting:
        return None
    return max(max(running, default=0.0), (sum(running) + sum(waiting)) / max(1, concurrency))


def estimate_parts(task: Task, stats: TaskStats | None) -> list[str]:
    """Return what a view says about a task's time: its expected duration and the time left.

    A pending task shows ``expected ~2.0 s``; a running one also ``ETA 1.2 s``, or, once it
    has run past its expected duration without reporting progress, ``longer than usual
    (p90 2.1 s)``. Without history, a running task that reported progress shows the ETA of
    its own pace. Finished tasks show nothing.

    Args:
        task: the snapshot.
        stats: its function's past runs, if known.

    Example:
        >>> from datetime import timedelta
        >>> now = datetime.now(_UTC)
        >>> task = Task(id="t", name="f", eta=now, created_at=now, status=TaskStatus.RUNNING,
        ...             started_at=now - timedelta(seconds=0.5))
        >>> estimate_parts(task, stats_of("f", [2.0, 2.0]))
        ['expected ~2.0 s', 'ETA 1.5 s']

    """
    if task.status.is_terminal:
        return []
    expected = stats.median if stats is not None else None
    parts = [] if expected is None else [f"expected ~{seconds_text(expected)}"]
    ran = elapsed(task)
    if task.status is not TaskStatus.RUNNING or ran is None:
        return parts
    usual = stats.p90 if stats is not None else None
    if expected is not None and usual is not None and ran >= expected and not 0.0 < task.progress < 1.0:
        return [*parts, f"longer than usual (p90 {seconds_text(usual)})"]
    left = time_left(stats, elapsed=ran, progress=task.progress)
    return parts if left is None else [*parts, f"ETA {seconds_text(left)}"]


def seconds_text(value: float) -> str:
    """Return a duration for people: ``1.2 s``, ``2 min 05 s``, ``2 h 03 min``.

    Args:
        value: seconds (negative counts as 0).
    """
    value = max(0.0, value)
    if value < 59.95:
        return f"{value:.1f} s"
    whole = round(value)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
