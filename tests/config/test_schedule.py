from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from omniq_nb.errors import ConfigError
from omniq_nb.models import Schedule
from omniq_nb.schedule import as_utc, backoff, duration, first_run, make_schedule, next_run, seconds

UTC = timezone.utc
NOW = datetime(2024, 5, 17, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def kolkata_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with local time UTC+05:30, so a naive time read as UTC would be visibly wrong."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_first_run_defaults_to_now() -> None:
    assert first_run(NOW) == NOW


def test_first_run_with_eta() -> None:
    eta = datetime(2030, 1, 1, 8, 0, tzinfo=timezone(timedelta(hours=2)))
    result = first_run(NOW, eta=eta)
    assert result == eta
    assert result.utcoffset() == timedelta(0)
    assert result.hour == 6


@pytest.mark.parametrize("delay", [5, 5.0, timedelta(seconds=5)])
def test_first_run_with_delay(delay: float | timedelta) -> None:
    assert first_run(NOW, delay=delay) == NOW + timedelta(seconds=5)


def test_first_run_with_zero_delay_is_now() -> None:
    assert first_run(NOW, delay=0) == NOW


def test_eta_and_delay_together_raise() -> None:
    with pytest.raises(ValueError, match="eta"):
        first_run(NOW, eta=NOW, delay=5)


@pytest.mark.parametrize("delay", [-1, timedelta(seconds=-1), float("nan"), float("inf")])
def test_bad_delay_raises_value_error(delay: float | timedelta) -> None:
    with pytest.raises(ValueError, match="delay"):
        first_run(NOW, delay=delay)


@pytest.mark.parametrize("delay", ["5", True])
def test_delay_of_wrong_type_raises_type_error(delay: object) -> None:
    with pytest.raises(TypeError, match="delay"):
        first_run(NOW, delay=delay)  # type: ignore[arg-type]


@pytest.mark.usefixtures("kolkata_time")
def test_naive_eta_is_local_time() -> None:
    naive = datetime(2030, 1, 1, 12, 0)
    assert first_run(NOW, eta=naive) == datetime(2030, 1, 1, 6, 30, tzinfo=UTC)
    assert as_utc(naive).tzinfo == UTC


def test_eta_of_wrong_type_raises() -> None:
    with pytest.raises(TypeError, match="eta"):
        as_utc("2030-01-01")  # type: ignore[arg-type]


def test_seconds_converts_durations() -> None:
    assert seconds(None, name="x") is None
    assert seconds(timedelta(minutes=2), name="x") == 120.0
    assert seconds(3, name="x") == 3.0
    with pytest.raises(ValueError, match="x=0"):
        seconds(0, name="x", allow_zero=False)


@pytest.mark.parametrize("cron", ["not a cron", "61 * * * *", "* * *", ""])
def test_bad_cron_raises_clear_value_error(cron: str) -> None:
    with pytest.raises(ValueError, match="cron") as info:
        make_schedule(cron=cron)
    message = str(info.value)
    assert repr(cron) in message
    assert "*/5 * * * *" in message  # shows an example of a valid one


@pytest.mark.parametrize("cron", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 1 1 * 0 2020"])
def test_a_cron_that_never_matches_is_a_config_error_naming_it(cron: str) -> None:
    with pytest.raises(ConfigError, match="cron") as info:
        make_schedule(cron=cron)
    assert repr(cron) in str(info.value)
    assert "matches no time" in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_next_run_of_a_stored_cron_that_never_matches_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"cron='0 0 31 2 \*' matches no time"):
        next_run(Schedule(cron="0 0 31 2 *"), previous=NOW, now=NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("12h", 43200.0), ("7d", 604800.0), (" 1.5 h ", 5400.0), ("0", 0.0)],
)
def test_duration_parses_the_command_line_forms(text: str, expected: float) -> None:
    assert duration(text) == expected


@pytest.mark.parametrize("text", ["soon", "", "-5", "1w", "1e3", "nan", "inf", "9" * 400, "15 m s"])
def test_a_bad_duration_is_a_config_error_showing_the_forms(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a duration; use seconds, or 90s, 15m, 12h, 7d"):
        duration(text)


def test_make_schedule() -> None:
    assert make_schedule() is None
    assert make_schedule(cron="*/5 * * * *") == Schedule(cron="*/5 * * * *")
    assert make_schedule(interval=90) == Schedule(interval=timedelta(seconds=90))
    assert make_schedule(interval=timedelta(hours=1)) == Schedule(interval=timedelta(hours=1))
    with pytest.raises(ValueError, match="interval"):
        make_schedule(interval=10, cron="* * * * *")


@pytest.mark.parametrize("interval", [0, -5, timedelta(0), timedelta(seconds=-1)])
def test_interval_must_be_positive(interval: float | timedelta) -> None:
    with pytest.raises(ValueError, match="interval"):
        make_schedule(interval=interval)


def test_next_run_interval_on_time() -> None:
    schedule = Schedule(interval=timedelta(minutes=10))
    assert next_run(schedule, previous=NOW, now=NOW) == NOW + timedelta(minutes=10)
    assert next_run(schedule, previous=NOW, now=NOW + timedelta(minutes=3)) == NOW + timedelta(minutes=10)


@pytest.mark.parametrize("behind_minutes", [10, 35, 60, 123.5])
def test_next_run_interval_after_missed_runs_collapses_to_one(behind_minutes: float) -> None:
    step = timedelta(minutes=10)
    now = NOW + timedelta(minutes=behind_minutes)
    result = next_run(Schedule(interval=step), previous=NOW, now=now)
    assert now < result <= now + step  # one run, soon after now: no backlog
    assert (result - NOW) % step == timedelta(0)  # on the original grid


def test_next_run_cron() -> None:
    schedule = Schedule(cron="*/5 * * * *")
    assert next_run(schedule, previous=NOW, now=NOW + timedelta(seconds=30)) == NOW + timedelta(minutes=5)
    result = next_run(schedule, previous=NOW, now=NOW + timedelta(minutes=17, seconds=30))
    assert result == NOW + timedelta(minutes=20)
    assert result.tzinfo is not None
    assert result.utcoffset() == timedelta(0)


def test_next_run_cron_daily() -> None:
    schedule = Schedule(cron="0 3 * * *")
    assert next_run(schedule, previous=NOW, now=NOW) == datetime(2024, 5, 18, 3, 0, tzinfo=UTC)


def test_backoff_grows_exponentially_within_equal_jitter_bounds() -> None:
    rng = random.Random(1234)
    for attempt in range(1, 8):
        full = 2.0 * 2 ** (attempt - 1)
        samples = [backoff(attempt, base=2.0, cap=10_000, rng=rng) for _ in range(200)]
        assert all(full / 2 <= s <= full for s in samples), attempt
        assert max(samples) - min(samples) > full / 4  # jittered, not constant
    # each attempt waits at least as long as the previous one could have
    assert backoff(5, base=1.0, cap=10_000, rng=random.Random(0)) >= 8.0


def test_backoff_stays_under_the_cap() -> None:
    rng = random.Random(7)
    for attempt in (10, 20, 64, 1000):
        value = backoff(attempt, base=1.0, cap=60.0, rng=rng)
        assert 30.0 <= value <= 60.0
    assert backoff(50, base=1.0) <= 600.0  # default cap


def test_backoff_without_rng_is_in_bounds() -> None:
    assert 0.5 <= backoff(1, base=1.0) <= 1.0
