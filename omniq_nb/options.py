"""Task options: one validated shape shared by ``enqueue_call``, ``@omniq.task`` and the cell magic.

Bad options fail here, at enqueue, with a message naming the option and its value.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec

from omniq_nb.config import WORKER_KINDS
from omniq_nb.errors import type_name
from omniq_nb.inputs import ids_of
from omniq_nb.models import RUN_ON, Schedule
from omniq_nb.schedule import as_utc, make_schedule, seconds

OPTION_NAMES = (
    "retries",
    "retry_on",
    "timeout",
    "delay",
    "eta",
    "interval",
    "cron",
    "priority",
    "queue",
    "ttl",
    "result_ttl",
    "at_most_once",
    "shared",
    "kind",
    "name",
    "after",
    "run_on",
    "cache",
    "cache_key",
    "cache_ttl",
)
"""Every task option, by name."""


class Default(enum.Enum):
    """The type of ``DEFAULT``, the value of a task option left to its setting."""

    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        """Return ``DEFAULT``."""
        return "DEFAULT"


DEFAULT: Final = Default.DEFAULT
"""Leave ``ttl`` or ``result_ttl`` to its setting (``TASK_TTL``, ``RESULT_TTL``).

It is what leaving the option out means, so it is rarely written: ``ttl=None`` means
"never expires" and ``result_ttl=None`` "kept until purged by age", whatever the settings
say; ``f.options(ttl=DEFAULT)`` takes a task back to the setting.
"""


class TaskOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Validated task options.

    ``ttl`` and ``result_ttl`` are ``DEFAULT`` when left to their settings and ``None`` for
    "no limit"; for ``retries``, ``queue`` and ``kind`` ``None`` means "take it from
    Settings"; for ``timeout``, ``delay``, ``eta`` and ``schedule`` it means "none".
    ``cache`` is on when ``cache=True``, ``cache_key`` or ``cache_ttl`` was given; a
    ``cache_ttl`` of ``None`` reuses a result of any age.
    """

    retries: int | None = None
    retry_on: tuple[str, ...] = ()
    timeout: float | None = None
    delay: float | None = None
    eta: datetime | None = None
    schedule: Schedule | None = None
    priority: int = 0
    queue: str | None = None
    ttl: float | Default | None = DEFAULT
    result_ttl: float | Default | None = DEFAULT
    at_most_once: bool = False
    shared: bool = False
    kind: str | None = None
    name: str | None = None
    after: tuple[str, ...] = ()
    run_on: str = "success"
    cache: bool = False
    cache_key: Callable[..., Any] | None = None
    cache_ttl: float | None = None


def make_options(**options: Any) -> TaskOptions:
    """Validate task options and return them as ``TaskOptions``.

    Args:
        **options: any of ``OPTION_NAMES``.

    Returns:
        The validated options.

    Raises:
        TypeError: an unknown option, or a value of the wrong type.
        ValueError: a value out of range (negative delay, bad cron, both eta and delay, ...).

    """
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(f"unknown task option(s) {', '.join(unknown)}; known options: {', '.join(OPTION_NAMES)}")
    if options.get("eta") is not None and options.get("delay") is not None:
        raise ValueError("give either eta= or delay=, not both")
    return TaskOptions(
        retries=_optional_count(options.get("retries"), "retries"),
        retry_on=exception_names(options.get("retry_on")),
        timeout=seconds(options.get("timeout"), name="timeout", allow_zero=False),
        delay=seconds(options.get("delay"), name="delay"),
        eta=None if options.get("eta") is None else as_utc(options["eta"]),
        schedule=make_schedule(interval=options.get("interval"), cron=options.get("cron")),
        priority=_priority(options.get("priority", 0)),
        queue=_optional_name(options.get("queue"), "queue"),
        ttl=_limit(options.get("ttl", DEFAULT), "ttl", allow_zero=False),
        result_ttl=_limit(options.get("result_ttl", DEFAULT), "result_ttl", allow_zero=True),
        at_most_once=_flag(options.get("at_most_once", False), "at_most_once"),
        shared=_flag(options.get("shared", False), "shared"),
        kind=_kind(options.get("kind")),
        name=_optional_name(options.get("name"), "name"),
        after=_after(options.get("after")),
        run_on=_run_on(options.get("run_on", "success")),
        **_cache(options),
    )


def merge_options(base: TaskOptions, **overrides: Any) -> TaskOptions:
    """Return ``base`` with some options replaced (validated like ``make_options``).

    Args:
        base: options already validated.
        **overrides: options to replace.

    """
    current = as_keywords(base)
    if "eta" in overrides:
        current["delay"] = None
    if "delay" in overrides:
        current["eta"] = None
    if "interval" in overrides:
        current["cron"] = None
    if "cron" in overrides:
        current["interval"] = None
    if overrides.get("cache") is False:
        current["cache_key"] = current["cache_ttl"] = None
    current.update(overrides)
    return make_options(**current)


def as_keywords(options: TaskOptions) -> dict[str, Any]:
    """Return validated options as the keyword arguments that would make them again.

    Args:
        options: validated options.
    """
    schedule = options.schedule
    return {
        "retries": options.retries,
        "retry_on": options.retry_on or None,
        "timeout": options.timeout,
        "delay": options.delay,
        "eta": options.eta,
        "interval": schedule.interval if schedule else None,
        "cron": schedule.cron if schedule else None,
        "priority": options.priority,
        "queue": options.queue,
        "ttl": options.ttl,
        "result_ttl": options.result_ttl,
        "at_most_once": options.at_most_once,
        "shared": options.shared,
        "kind": options.kind,
        "name": options.name,
        "after": options.after,
        "run_on": options.run_on,
        "cache": options.cache or None,  # None: not given, so cache_key= or cache_ttl= alone turn it on
        "cache_key": options.cache_key,
        "cache_ttl": options.cache_ttl,
    }


def exception_names(value: Any) -> tuple[str, ...]:
    """Normalize ``retry_on`` (exception classes or names) to stored error type names.

    Builtins keep their bare name (``ValueError``), others are qualified (``pkg.mod.Error``),
    as in ``TaskError.type``.

    Args:
        value: ``None``, one exception class or name, or an iterable of them.

    Raises:
        TypeError: an item is neither an exception class nor a string.

    """
    if value is None:
        return ()
    if isinstance(value, (str, type)):
        value = (value,)
    if not isinstance(value, Iterable):
        raise TypeError(
            f"retry_on={value!r}: expected exception classes or their names, such as (ValueError, 'KeyError')"
        )
    names = []
    for item in value:
        if isinstance(item, type) and issubclass(item, BaseException):
            names.append(type_name(item))
        elif isinstance(item, str) and item.strip():
            names.append(item.strip().removeprefix("builtins."))
        else:
            raise TypeError(f"retry_on={value!r}: expected exception classes or their names, got {item!r}")
    return tuple(names)


def _optional_count(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}={value!r} must be a whole number >= 0")
    if value < 0:
        raise ValueError(f"{name}={value!r} must be >= 0")
    return value


def _limit(value: Any, name: str, *, allow_zero: bool) -> float | Default | None:
    """Validate ``ttl`` or ``result_ttl``: ``DEFAULT`` (the setting), ``None`` (no limit) or seconds."""
    if value is DEFAULT:
        return Default.DEFAULT
    if value is not None and not allow_zero and seconds(value, name=name) == 0:
        raise ValueError(f"{name}={value!r} must be > 0 seconds; {name}=None means no limit")
    return seconds(value, name=name)


def _priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"priority={value!r} must be a whole number (higher runs first)")
    if not -(2**62) <= value <= 2**62:
        raise ValueError(f"priority={value!r} is out of range")
    return value


def _optional_name(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"{name}={value!r} must be a non-empty string")
    return value.strip()


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}={value!r} must be True or False")
    return value


def _after(value: Any) -> tuple[str, ...]:
    """Validate ``after``: task handles, group handles or task ids (one, or an iterable of them)."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) or not isinstance(value, Iterable) else list(value)
    return tuple(dict.fromkeys(task_id for item in items for task_id in ids_of(item)))


def _run_on(value: Any) -> str:
    if value not in RUN_ON:
        raise ValueError(f"run_on={value!r} must be one of {', '.join(map(repr, RUN_ON))}")
    return str(value)


def _cache(options: dict[str, Any]) -> dict[str, Any]:
    """Validate ``cache``, ``cache_key`` and ``cache_ttl`` together (either of the last two turns caching on)."""
    key, ttl = options.get("cache_key"), options.get("cache_ttl")
    if key is not None and not callable(key):
        raise TypeError(f"cache_key={key!r} must be a callable taking the task's arguments (or None)")
    ttl = seconds(ttl, name="cache_ttl", allow_zero=False)
    given = options.get("cache")
    cache = _flag(given, "cache") if given is not None else key is not None or ttl is not None
    if given is False and (key is not None or ttl is not None):
        raise ValueError("cache_key= and cache_ttl= need the cache: leave cache= out or pass cache=True")
    if cache and (options.get("interval") is not None or options.get("cron") is not None):
        raise ValueError("cache=True does not combine with interval= or cron=: a periodic task runs on its schedule")
    return {"cache": cache, "cache_key": key, "cache_ttl": ttl}


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if value not in WORKER_KINDS:
        raise ValueError(f"kind={value!r} must be one of {', '.join(WORKER_KINDS)}")
    return str(value)


def deadline(created: datetime, ttl: float | None) -> datetime | None:
    """Return when a task created at ``created`` with ``ttl`` seconds to live expires."""
    if ttl is None or not math.isfinite(ttl):
        return None
    return created + timedelta(seconds=ttl)
