"""Whether a pool reaches its store: one log line when it loses it, one when it is back, backoff meanwhile.

A store server that goes away (a restart, a failover, dropped connections) makes every
loop of the pool fail at once: the claims, the outcome writes, the lease renewals and
heartbeats (on their own thread), the upkeep. They all report to one ``StoreLink``, which
logs the change of state once ("lost", then "back") and the repeated failures in between
only at debug level. Running tasks go on meanwhile; their outcomes wait in the writer, and
their leases (held until the outcome is stored) are renewed again once the store answers.
The pool's own upkeep never rescues a lease the pool renews, and rescues nothing else for
one lease after the store came back, so that workers cut off by the same outage renew first.
A lease rescued elsewhere all the same (that worker was cut off longer) refuses the late
outcome by its fence.

A failure counts only if its call began after the last change of state, and so does a
success: a call that was already waiting when the store came back (or went away) says
nothing about now, so a slow call cannot flip the state back and forth.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

from omniq_nb.errors import StorageError, StoreLost

logger = logging.getLogger(__name__)

_FIRST_BACKOFF = 0.1  # seconds before the first retry of a loop after the store was lost
_MAX_BACKOFF = 5.0  # seconds: the longest pause between retries


class StoreLink:
    """The pool's view of its store's reachability, shared by its loops and its lease thread.

    Args:
        name: the pool's name, for the log lines.
        url: the store's (redacted) URL, for the log lines.
        long_outage: seconds an outage must last to count for ``steady_for`` (a short one
            lets no lease run out).
    """

    def __init__(self, name: str, url: str, long_outage: float = 0.0) -> None:
        self._name, self._url, self._long_outage = name, url, long_outage
        self._lock = threading.Lock()
        self._lost_at: float | None = None
        self._changed_at = time.monotonic()
        self._back_at: float | None = None
        self._failures = 0

    @property
    def lost(self) -> bool:
        """Return whether the store is unreachable (since the last failure, with no success after it)."""
        return self._lost_at is not None

    def steady_for(self) -> float:
        """Return the seconds since the store answered after its last long outage (infinite if none; 0 while lost)."""
        with self._lock:
            if self._lost_at is not None:
                return 0.0
            return float("inf") if self._back_at is None else time.monotonic() - self._back_at

    def backoff(self) -> float:
        """Return how long a loop should pause before trying again (grows while the store stays lost)."""
        with self._lock:
            failures = self._failures
        return min(_FIRST_BACKOFF * 2.0 ** max(failures - 1, 0), _MAX_BACKOFF)

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        """Report the store calls made in the block: a ``StorageError`` as a failure, none as a success.

        The error still propagates. ``StoreLost`` (the store's file is gone for good) is not a
        connection problem and is left to the caller.
        """
        started = time.monotonic()
        try:
            yield
        except StoreLost:
            raise
        except StorageError as exc:
            self.failed(exc, started)
            raise
        self.succeeded(started)

    def failed(self, exc: BaseException, started: float) -> None:
        """Record a store call begun at ``started`` (monotonic) that failed with ``exc``."""
        now = time.monotonic()
        with self._lock:
            if started < self._changed_at and self._lost_at is None:
                return  # it began before the store was back: stale news
            self._failures += 1
            if self._lost_at is not None:
                logger.debug("worker %s: the store is still unreachable: %s", self._name, exc)
                return
            self._lost_at, self._changed_at, self._failures = now, now, 1
        logger.warning("worker %s lost its store (%s); running tasks go on, retrying with backoff", self._name, exc)

    def succeeded(self, started: float) -> None:
        """Record a store call begun at ``started`` (monotonic) that succeeded."""
        now = time.monotonic()
        with self._lock:
            if self._lost_at is None or started < self._changed_at:
                return
            down, self._lost_at, self._changed_at, self._failures = now - self._lost_at, None, now, 0
            if down >= self._long_outage:
                self._back_at = now
        logger.warning("worker %s reached its store %s again after %.1f s; resuming", self._name, self._url, down)
