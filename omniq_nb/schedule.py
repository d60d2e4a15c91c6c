"""Pure schedule maths: when a task first runs, when a periodic task runs next, retry backoff.

Every function takes ``now`` (or an explicit time) and reads no clock, so each is tested
without a store; the one exception is ``make_schedule``, which checks that a cron expression
still matches a time from now on. Durations are accepted as ``float`` seconds or ``timedelta``
and converted here, once.
"""

from __future__ import annotations

import math
import random
import re
from datetime import datetime, timedelta, timezone

from croniter import CroniterBadDateError, croniter

from omniq_nb.errors import ConfigError
from omniq_nb.models import Schedule

_BACKOFF_CAP = 600.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(value: float | timedelta | None, *, name: str, allow_zero: bool = True) -> float | None:
    """Convert a duration given as seconds or ``timedelta`` to float seconds.

    Args:
        value: the duration, or ``None`` for "not set".
        name: the option's name, for the error message.
        allow_zero: whether 0 is accepted.

    Returns:
        The duration in seconds, or ``None``.

    Raises:
        TypeError: ``value`` is neither a number nor a ``timedelta``.
        ValueError: ``value`` is negative, zero where not allowed, or not finite.

    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
    else:
        raise TypeError(f"{name}={value!r} must be seconds (a number) or a timedelta")
    if not math.isfinite(result) or result < 0 or (result == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r} must be a finite duration {bound} seconds")
    return result


def duration(text: str) -> float:
    """Parse a duration as written on the command line and in magics: ``90``, ``90s``, ``15m``, ``12h``, ``7d``.

    Args:
        text: a number of seconds, optionally with a unit ``s``, ``m``, ``h`` or ``d``.

    Returns:
        The duration in seconds.

    Raises:
        ConfigError: ``text`` is not such a duration; also a ``ValueError``, so argparse
            reports it as ``invalid duration value``.

    Example:
        >>> duration("15m"), duration("90"), duration("1.5h")
        (900.0, 90.0, 5400.0)

    """
    match = _DURATION.match(text) if isinstance(text, str) else None
    value = float(match.group(1)) * _DURATION_UNITS[match.group(2)] if match else math.nan
    if not math.isfinite(value):
        raise ConfigError(f"{text!r} is not a duration; use seconds, or 90s, 15m, 12h, 7d")
    return value


def duration_text(value: float) -> str:
    """Write seconds the way ``duration`` reads them, in the largest whole unit.

    Example:
        >>> duration_text(604800), duration_text(5400), duration_text(90), duration_text(0.5)
        ('7d', '90m', '90s', '0.5s')

    """
    for unit in ("d", "h", "m"):
        size = _DURATION_UNITS[unit]
        if value >= size and value % size == 0:
            return f"{value // size:g}{unit}"
    return f"{value:g}s"


def as_utc(moment: datetime, *, name: str = "eta") -> datetime:
    """Return ``moment`` as an aware UTC datetime; a naive one is taken as local time.

    Args:
        moment: the time.
        name: the option's name, for the error message.

    Raises:
        TypeError: ``moment`` is not a datetime.

    """
    if not isinstance(moment, datetime):
        raise TypeError(f"{name}={moment!r} must be a datetime")
    return moment.astimezone(timezone.utc)


def first_run(now: datetime, *, eta: datetime | None = None, delay: float | timedelta | None = None) -> datetime:
    """Return when a new task becomes ready: at ``eta``, after ``delay``, or ``now``.

    Args:
        now: the current time (UTC).
        eta: an absolute time.
        delay: seconds or a ``timedelta`` from ``now``.

    Raises:
        ValueError: both ``eta`` and ``delay`` are given, or ``delay`` is negative.
        TypeError: a value has the wrong type.

    """
    if eta is not None and delay is not None:
        raise ValueError("give either eta= or delay=, not both")
    if eta is not None:
        return as_utc(eta)
    wait = seconds(delay, name="delay")
    return now if not wait else now + timedelta(seconds=wait)


def make_schedule(*, interval: float | timedelta | None = None, cron: str | None = None) -> Schedule | None:
    """Validate periodic options and return the ``Schedule``, or ``None`` when neither is given.

    Args:
        interval: run every this many seconds (or ``timedelta``), > 0.
        cron: a cron expression such as ``"*/5 * * * *"``.

    Raises:
        ConfigError: both are given, or the cron expression is invalid or matches no time from
            now on (``0 0 31 2 *``); also a ``ValueError``.
        ValueError: the interval is not positive.
        TypeError: a value has the wrong type.

    """
    if interval is not None and cron is not None:
        raise ConfigError("give either interval= or cron=, not both")
    if cron is not None:
        if not isinstance(cron, str) or not croniter.is_valid(cron):
            raise ConfigError(
                f"cron={cron!r} is not a valid cron expression; expected five fields such as '*/5 * * * *'"
            )
        _cron_after(cron, datetime.now(timezone.utc))
        return Schedule(cron=cron)
    every = seconds(interval, name="interval", allow_zero=False)
    return None if every is None else Schedule(interval=timedelta(seconds=every))


def next_run(schedule: Schedule, *, previous: datetime, now: datetime) -> datetime:
    """Return the next run of a periodic task after the run that was due at ``previous``.

    Runs missed while nothing was running collapse into one: the result is never earlier
    than ``now``'s next slot, so a late run is followed by the regular grid, not a backlog.

    Args:
        schedule: the task's schedule.
        previous: when the run that just finished was due.
        now: the current time.

    Raises:
        ConfigError: the cron expression matches no time after ``now``.

    """
    if schedule.cron is not None:
        return _cron_after(schedule.cron, max(previous, now))
    assert schedule.interval is not None
    step = schedule.interval.total_seconds()
    behind = (now - previous).total_seconds()
    periods = max(1, math.floor(behind / step) + 1)
    return previous + timedelta(seconds=periods * step)


def _cron_after(cron: str, moment: datetime) -> datetime:
    """Return the first time after ``moment`` that ``cron`` matches, in UTC."""
    try:
        following: datetime = croniter(cron, moment).get_next(datetime)
    except CroniterBadDateError:
        raise ConfigError(
            f"cron={cron!r} matches no time after {moment:%Y-%m-%d} (a date that does not exist, such as "
            "February 31st, or a year gone by); expected an expression such as '*/5 * * * *'"
        ) from None
    return following.astimezone(timezone.utc)


def backoff(attempt: int, *, base: float, cap: float = _BACKOFF_CAP, rng: random.Random | None = None) -> float:
    """Return seconds to wait before retrying after failed attempt number ``attempt``.

    Exponential (``base * 2**(attempt-1)``), capped at ``cap``, with "equal jitter": a
    random value between half and all of that, so retries of many tasks spread out.

    Args:
        attempt: the attempt that failed, from 1.
        base: the first delay in seconds.
        cap: the largest delay.
        rng: a random source (for tests).

    """
    full = min(cap, base * 2.0 ** max(0, attempt - 1))
    return full / 2 + (rng or random).uniform(0, full / 2)
