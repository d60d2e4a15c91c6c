"""The bounded blocking poll every sync helper of the tests uses (the ``wait_until_sync`` fixture too)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

POLL = 0.01  # seconds between two checks unless told


def wait_until_sync(
    predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition", poll: float = POLL
) -> Any:
    """Poll ``predicate`` until it returns something truthy and return that; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = predicate()
        if outcome:
            return outcome
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still false after {timeout} s")
        time.sleep(poll)
