from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from omniq_nb.models import Schedule
from omniq_nb.options import DEFAULT, OPTION_NAMES, TaskOptions, exception_names, make_options, merge_options

UTC = timezone.utc


class AppError(Exception):
    pass


def test_defaults() -> None:
    assert make_options() == TaskOptions()
    assert (TaskOptions().ttl, TaskOptions().result_ttl) == (DEFAULT, DEFAULT)


def test_none_means_no_limit_and_default_means_the_setting_through_every_path() -> None:
    unlimited = make_options(ttl=None, result_ttl=None)
    assert (unlimited.ttl, unlimited.result_ttl) == (None, None)
    assert make_options(ttl=DEFAULT, result_ttl=DEFAULT) == TaskOptions()
    merged = merge_options(make_options(ttl=60, result_ttl=60), ttl=None)
    assert (merged.ttl, merged.result_ttl) == (None, 60.0)
    assert merge_options(unlimited, ttl=DEFAULT).ttl is DEFAULT
    assert merge_options(unlimited, retries=2).ttl is None  # other overrides keep the opt-out
    assert repr(DEFAULT) == "DEFAULT"


def test_all_options_are_validated_and_converted() -> None:
    eta = datetime(2030, 1, 1, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    options = make_options(
        retries=3,
        retry_on=[ValueError],
        timeout=timedelta(minutes=1),
        eta=eta,
        interval=30,
        priority=-2,
        queue=" gpu ",
        ttl=60,
        result_ttl=0,
        at_most_once=True,
        kind="process",
        name="job",
    )
    assert options.retries == 3
    assert options.retry_on == ("ValueError",)
    assert options.timeout == 60.0
    assert options.eta == datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
    assert options.schedule == Schedule(interval=timedelta(seconds=30))
    assert options.priority == -2
    assert options.queue == "gpu"
    assert (options.ttl, options.result_ttl) == (60.0, 0.0)
    assert options.at_most_once is True
    assert options.kind == "process"
    assert options.name == "job"


def test_unknown_option_raises_type_error_listing_known_ones() -> None:
    with pytest.raises(TypeError, match="retrys") as info:
        make_options(retrys=3)
    for name in OPTION_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("retries", "3"),
        ("retries", 2.0),
        ("retries", True),
        ("priority", 1.5),
        ("priority", "high"),
        ("at_most_once", "yes"),
        ("at_most_once", 1),
        ("shared", "yes"),
        ("timeout", "10"),
        ("queue", 3),
        ("queue", ""),
        ("eta", "2030-01-01"),
    ],
)
def test_bad_types_raise_type_error_naming_the_option(option: str, value: object) -> None:
    with pytest.raises(TypeError, match=option):
        make_options(**{option: value})


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("kind", "gpu"),
        ("retries", -1),
        ("timeout", 0),
        ("ttl", 0),
        ("delay", -5),
        ("interval", 0),
        ("cron", "every day"),
        ("result_ttl", -1),
    ],
)
def test_bad_values_raise_value_error_naming_the_option(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=option):
        make_options(**{option: value})


def test_bad_kind_lists_the_kinds() -> None:
    with pytest.raises(ValueError, match="async, thread, process"):
        make_options(kind="gpu")


def test_eta_and_delay_together_raise() -> None:
    with pytest.raises(ValueError, match="eta"):
        make_options(eta=datetime.now(UTC), delay=3)


def test_interval_and_cron_together_raise() -> None:
    with pytest.raises(ValueError, match="interval"):
        make_options(interval=3, cron="* * * * *")


def test_merge_options_replaces_eta_with_delay_and_back() -> None:
    eta = datetime(2030, 1, 1, tzinfo=UTC)
    with_eta = make_options(eta=eta, retries=2)
    with_delay = merge_options(with_eta, delay=5)
    assert (with_delay.eta, with_delay.delay, with_delay.retries) == (None, 5.0, 2)
    back = merge_options(with_delay, eta=eta)
    assert (back.eta, back.delay) == (eta, None)


def test_merge_options_replaces_interval_with_cron_and_back() -> None:
    periodic = make_options(interval=60, queue="q")
    cron = merge_options(periodic, cron="0 * * * *")
    assert cron.schedule == Schedule(cron="0 * * * *")
    assert cron.queue == "q"
    interval = merge_options(cron, interval=timedelta(seconds=5))
    assert interval.schedule == Schedule(interval=timedelta(seconds=5))


def test_merge_options_keeps_the_rest_and_validates() -> None:
    base = make_options(retries=1, retry_on=KeyError, priority=4, at_most_once=True)
    merged = merge_options(base, retries=5)
    assert merged == TaskOptions(retries=5, retry_on=("KeyError",), priority=4, at_most_once=True)
    with pytest.raises(TypeError, match="priority"):
        merge_options(base, priority="4")
    with pytest.raises(TypeError, match="nope"):
        merge_options(base, nope=1)


def test_retry_on_accepts_classes_and_names() -> None:
    assert exception_names(None) == ()
    assert exception_names(ValueError) == exception_names("ValueError") == ("ValueError",)
    assert exception_names([AppError, "KeyError", "pkg.mod.Error"]) == (
        f"{__name__}.AppError",
        "KeyError",
        "pkg.mod.Error",
    )
    assert exception_names(AppError) == exception_names(f"{__name__}.AppError")
    assert make_options(retry_on=(TimeoutError, "OSError")).retry_on == ("TimeoutError", "OSError")


@pytest.mark.parametrize("bad", [int, 3, "", [ValueError, None]])
def test_retry_on_rejects_non_exceptions(bad: object) -> None:
    with pytest.raises(TypeError, match="retry_on"):
        exception_names(bad)


def test_shared_is_a_flag_that_survives_a_merge() -> None:
    assert make_options().shared is False
    shared = make_options(shared=True)
    assert shared.shared is True
    assert merge_options(shared, retries=2).shared is True
    assert merge_options(shared, shared=False).shared is False
