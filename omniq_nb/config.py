"""Settings and every user-tunable default, read from code, env ``OMNIQ_*`` and YAML.

Precedence, lowest first: the defaults below < a YAML file (``OMNIQ_CONFIG``, else
``./omniq.yaml`` when present) < environment variables ``OMNIQ_<KEY>`` < keyword
arguments given in code. This is the only module that reads ``OMNIQ_*`` or YAML.

| key | default | meaning |
|---|---|---|
| ``DB_URL`` | ``sqlite:///.omniq/omniq.db`` | where tasks are stored |
| ``RESULT_URL`` | none (the ``DB_URL`` store) | a store of its own for results |
| ``EVENTS_URL`` | none (the ``DB_URL`` store) | a store of its own for events |
| ``STORAGE_OPTIONS`` | ``{}`` | fsspec options (JSON in the environment) for results and events on fsspec URLs |
| ``DEFAULT_QUEUE`` | ``default`` | queue for tasks that name none |
| ``DEFAULT_WORKER`` | ``thread`` | executor kind for sync task functions: async, thread, process, gevent (CLI only) |
| ``MAX_WORKERS`` | ``4`` | tasks one pool runs at once |
| ``TASK_TTL`` | none | seconds a pending task may wait before it expires |
| ``RESULT_TTL`` | ``604800`` (7d) | seconds a finished task is kept before a pool or ``purge`` deletes it |
| ``DEFAULT_RETRIES`` | ``0`` | retries after a failed first attempt |
| ``RETRY_BACKOFF`` | ``1`` | seconds before the first retry; doubles per attempt, capped, jittered |
| ``LEASE_SECONDS`` | ``30`` | how long a claim holds a task between renewals; at least 1 |
| ``POLL_INTERVAL`` | ``0.5`` | seconds between store polls of an idle worker; at least 0.01 |
| ``SECRET`` | none | HMAC key (not empty): sign payloads at enqueue, verify before unpickling |
| ``AUTOSTART`` | ``true`` | start a worker pool when the notebook extension loads |
| ``EVENTS`` | ``true`` | record a ``TaskEvent`` per transition |
| ``LOG_LEVEL`` | ``WARNING`` | level of the ``omniq_nb`` logger |
| ``SQLITE_SYNCHRONOUS`` | ``NORMAL`` | ``FULL`` also survives power loss, at some speed |
| ``INTERRUPT`` | ``wait`` | a kernel interrupt stops the cell (``wait``), or also cancels its tasks (``cancel``) |
| ``KEEPALIVE`` | ``60`` | seconds between activity signals while the kernel's pool works (``0``, ``none``: off) |
| ``OUTPUT_LIMIT`` | ``1MB`` | output kept per task, newest first: bytes, ``512KB``, ``2MB`` (1024-based); ``0``: none |
| ``OUTPUT_LINES`` | ``10000`` | lines of output kept per task, newest first; ``0``: none |
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import msgspec
import yaml

from omniq_nb.errors import ConfigError
from omniq_nb.urls import redact_url

_ENV_PREFIX = "OMNIQ_"
_CONFIG_ENV = "OMNIQ_CONFIG"
_DEFAULT_CONFIG_FILE = "omniq.yaml"
WORKER_KINDS = ("async", "thread", "process", "gevent")
"""The executor kinds a worker pool offers."""
MIN_LEASE_SECONDS = 1.0
"""The shortest lease a pool may take: renewals run every third of it, and a store write can take longer."""
MIN_POLL_INTERVAL = 0.01
"""The shortest poll interval: below it an idle worker spends its time asking the store."""
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SYNCHRONOUS = ("NORMAL", "FULL")
INTERRUPT_MODES = ("wait", "cancel")
"""What a kernel interrupt does to the tasks the interrupted cell launched: leave them, or cancel them."""
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting of omniq_nb; frozen, built by ``Settings.from_env()`` or directly.

    Example:
        >>> Settings(db_url="memory://").lease_seconds
        30.0

    """

    db_url: str = "sqlite:///.omniq/omniq.db"
    result_url: str | None = None
    events_url: str | None = None
    storage_options: dict[str, Any] = msgspec.field(default_factory=dict)
    default_queue: str = "default"
    default_worker: str = "thread"
    max_workers: int = 4
    task_ttl: float | None = None
    result_ttl: float | None = 7 * 86400.0
    default_retries: int = 0
    retry_backoff: float = 1.0
    lease_seconds: float = 30.0
    poll_interval: float = 0.5
    secret: str | None = None
    autostart: bool = True
    events: bool = True
    log_level: str = "WARNING"
    sqlite_synchronous: str = "NORMAL"
    interrupt: str = "wait"
    keepalive: float | None = 60.0
    output_limit: int = 1 << 20
    output_lines: int = 10_000

    def __repr__(self) -> str:
        """Return a repr that never shows the secret or a URL's password."""
        shown = {name: getattr(self, name) for name in self.__struct_fields__}
        for name in _URL_SETTINGS:
            if shown[name] is not None:
                shown[name] = redact_url(shown[name])
        if self.secret is not None:
            shown["secret"] = "***"
        if self.storage_options:
            shown["storage_options"] = dict.fromkeys(self.storage_options, "***")  # credentials, often
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, config_file: str | Path | None = None, **overrides: Any
    ) -> Settings:
        """Build settings from defaults < YAML < environment < ``overrides``.

        Args:
            env: the environment to read (default ``os.environ``).
            config_file: a YAML file to read instead of ``OMNIQ_CONFIG`` / ``./omniq.yaml``.
            **overrides: settings given in code, by lower-case name (``db_url=...``);
                ``None`` means "not given here".

        Returns:
            The validated settings.

        Raises:
            ConfigError: a value is invalid; the message names its source and the accepted values.
            TypeError: an override names no setting.

        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for source, name, raw in _yaml_values(env, config_file):
            values[name] = parse_setting(name, raw, source)
        for name in cls.__struct_fields__:
            key = _ENV_PREFIX + name.upper()
            if key in env:
                values[name] = parse_setting(name, env[key], key)
        for name, raw in overrides.items():
            if name not in cls.__struct_fields__:
                raise TypeError(f"unknown setting {name!r}; known settings: {', '.join(cls.__struct_fields__)}")
            if raw is not None:
                values[name] = parse_setting(name, raw, f"{name}=")
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        """Return a copy with some settings replaced (validated like ``from_env`` overrides).

        Args:
            **overrides: settings by lower-case name; ``None`` keeps the current value.

        Returns:
            The new settings.

        Raises:
            ConfigError: a value is invalid.
            TypeError: a name is not a setting.

        """
        changes: dict[str, Any] = {}
        for name, raw in overrides.items():
            if name not in self.__struct_fields__:
                raise TypeError(f"unknown setting {name!r}; known settings: {', '.join(self.__struct_fields__)}")
            if raw is not None:
                changes[name] = parse_setting(name, raw, f"{name}=")
        return msgspec.structs.replace(self, **changes)


def configure_logging(settings: Settings) -> None:
    """Set the level of the library's ``omniq_nb`` logger from ``LOG_LEVEL`` (adds no handler).

    Args:
        settings: the settings whose ``log_level`` applies.

    """
    logging.getLogger("omniq_nb").setLevel(settings.log_level)


def _yaml_values(env: Mapping[str, str], config_file: str | Path | None) -> list[tuple[str, str, Any]]:
    named = config_file if config_file is not None else env.get(_CONFIG_ENV)
    path = Path(named) if named else Path(_DEFAULT_CONFIG_FILE)
    if not path.is_file():
        if named:
            raise ConfigError(f"{_CONFIG_ENV}={str(named)!r}: no such file; point it at a YAML file or unset it.")
        return []
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError, yaml.YAMLError) as exc:  # ValueError: not UTF-8, a bad date
        raise ConfigError(f"cannot read settings from {path}: {' '.join(str(exc).split())}") from exc
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings such as 'db_url: sqlite:///jobs.db'.")
    found: list[tuple[str, str, Any]] = []
    for key, raw in data.items():
        name = str(key).lower().removeprefix(_ENV_PREFIX.lower())
        if name not in Settings.__struct_fields__:
            known = ", ".join(Settings.__struct_fields__)
            raise ConfigError(f"{path}: unknown setting {key!r}; known settings: {known}")
        found.append((f"{path}: {key}", name, raw))
    return found


def parse_setting(name: str, raw: Any, source: str) -> Any:
    """Validate one setting's value as ``Settings.from_env`` does (pools use it for ``lease=``).

    Args:
        name: the setting's lower-case name, such as ``"lease_seconds"``.
        raw: the value given (a string from env or YAML, or any value from code).
        source: where it came from, for the message (``"OMNIQ_LEASE_SECONDS"``, ``"lease="``).

    Returns:
        The parsed value.

    Raises:
        ConfigError: the value is invalid; the message names ``source`` and the accepted values.

    """
    try:
        return _PARSERS[name](raw)
    except (TypeError, ValueError) as exc:
        if name == "secret":
            shown = "***"
        else:
            shown = repr(redact_url(raw) if name in _URL_SETTINGS and isinstance(raw, str) else raw)
        raise ConfigError(
            f"{source.rstrip('=')}={shown} is not valid: {exc}. Set {_ENV_PREFIX}{name.upper()} "
            f"or pass {name}= with such a value."
        ) from exc


def _text(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("expected a non-empty string")
    return raw.strip()


def _choice(options: tuple[str, ...], *, upper: bool = False) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = _text(raw)
        value = value.upper() if upper else value.lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return value

    return parse


def _count(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("expected a whole number such as 4")
    try:
        value = int(raw)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite float
        raise ValueError("expected a whole number such as 4") from None
    if isinstance(raw, float) and raw != value:
        raise ValueError("expected a whole number such as 4")
    if value < 0:
        raise ValueError("expected a number >= 0")
    return value


def _positive_count(raw: Any) -> int:
    value = _count(raw)
    if value < 1:
        raise ValueError("expected a whole number >= 1")
    return value


def _seconds_at_least(minimum: float, example: str, why: str = "") -> Callable[[Any], float]:
    """Return a parser of seconds (a number or ``timedelta``) > 0 and >= ``minimum``."""
    expected = f"expected seconds {f'>= {minimum:g}' if minimum else '> 0'} such as {example}{why}"

    def parse(raw: Any) -> float:
        if isinstance(raw, timedelta):
            value = raw.total_seconds()
        elif isinstance(raw, bool):
            raise ValueError(expected)
        else:
            try:
                value = float(raw)
            except (TypeError, ValueError, OverflowError):  # OverflowError: an int too large for a float
                raise ValueError(expected) from None
        if not math.isfinite(value) or value <= 0 or value < minimum:
            raise ValueError(expected)
        return value

    return parse


_seconds = _seconds_at_least(0, "30")


def _optional_seconds(raw: Any) -> float | None:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none", "off")):
        return None
    return _seconds(raw)


_keepalive_seconds = _seconds_at_least(0, "60", ", or 0 or none for no activity signals")


def _keepalive(raw: Any) -> float | None:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("none", "off")):
        return None
    with contextlib.suppress(TypeError, ValueError, OverflowError):  # _keepalive_seconds says what is wrong
        if not isinstance(raw, bool) and float(raw) == 0:
            return None
    return _keepalive_seconds(raw)


_SIZE_UNITS = {"": 1, "B": 1, "KB": 1 << 10, "KIB": 1 << 10, "MB": 1 << 20, "MIB": 1 << 20, "GB": 1 << 30}


def _size(raw: Any) -> int:
    """Parse a size in bytes: a whole number, or one with a unit (``512KB``, ``1MB``, ``1GB``; 1024-based)."""
    if not isinstance(raw, str):
        return _count(raw)
    text = raw.strip().upper().replace(" ", "")
    number = text.rstrip("KMGIB")
    if text[len(number) :] not in _SIZE_UNITS or not number.isdigit():
        raise ValueError("expected a size in bytes such as 1048576, 512KB or 1MB, or 0 to keep no output")
    return int(number) * _SIZE_UNITS[text[len(number) :]]


def _flag(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected one of {', '.join(_TRUE + _FALSE)}")


def _secret(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValueError("expected a string")
    if not raw.strip():
        raise ValueError("an empty key turns signing off; give a non-empty key, or unset it to run unsigned")
    return raw


def _db_url(raw: Any) -> str:
    value = _text(raw)
    if "\x00" in unquote(value):
        raise ValueError("a store URL cannot contain a NUL byte (\\x00 or %00)")
    if "://" not in value:
        raise ValueError("expected a URL such as sqlite:///jobs.db, memory://, postgresql://host/db")
    return value


def _optional_url(raw: Any) -> str | None:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none")):
        return None
    return _db_url(raw)


def _options(raw: Any) -> dict[str, Any]:
    value = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ValueError("expected a mapping of option names to values (JSON in the environment)")
    return dict(value)


_URL_SETTINGS = ("db_url", "result_url", "events_url")
_PARSERS: dict[str, Callable[[Any], Any]] = {
    "db_url": _db_url,
    "result_url": _optional_url,
    "events_url": _optional_url,
    "storage_options": _options,
    "default_queue": _text,
    "default_worker": _choice(WORKER_KINDS),
    "max_workers": _positive_count,
    "task_ttl": _optional_seconds,
    "result_ttl": _optional_seconds,
    "default_retries": _count,
    "retry_backoff": _seconds,
    "lease_seconds": _seconds_at_least(
        MIN_LEASE_SECONDS, "30", " (a shorter lease can run out between renewals, and the task then runs twice)"
    ),
    "poll_interval": _seconds_at_least(
        MIN_POLL_INTERVAL, "0.5", " (polling more often keeps an idle worker busy for nothing)"
    ),
    "secret": _secret,
    "autostart": _flag,
    "events": _flag,
    "log_level": _choice(_LOG_LEVELS, upper=True),
    "sqlite_synchronous": _choice(_SYNCHRONOUS, upper=True),
    "interrupt": _choice(INTERRUPT_MODES),
    "keepalive": _keepalive,
    "output_limit": _size,
    "output_lines": _count,
}
