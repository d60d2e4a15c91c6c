"""Checking a pool's own arguments (``concurrency``, ``queues``), with messages that name them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omniq_nb.errors import ConfigError


def positive_int(value: Any, name: str) -> int:
    """Return ``value`` if it is a whole number >= 1 (not a ``bool``).

    Raises:
        ConfigError: it is not; the message names ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r} must be a whole number >= 1")
    return value


def queue_names(queues: Sequence[str]) -> list[str]:
    """Return the queue names of ``queues`` (one name alone counts as a list of one).

    Raises:
        ConfigError: none given, or one that is not a non-empty string.
    """
    if isinstance(queues, str):
        queues = [queues]
    names = [q for q in queues if isinstance(q, str) and q.strip()]
    if not names or len(names) != len(queues):
        raise ConfigError(f"queues={queues!r} must be one or more non-empty queue names")
    return names
