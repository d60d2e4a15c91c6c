"""Quick statements on the event loop's own thread, through a second connection that never waits.

A statement sent to aiosqlite's thread costs two thread wake-ups (about 0.1 to 0.3 ms each
on an idle machine) where the statement itself takes tens of microseconds: most of the time
of an enqueue, a claim or a settle of one task. So a file store first tries each lone
statement here, on a connection of its own run inline, that may neither wait nor run long:

- its busy timeout is 0: a write lock held by another connection fails it at once;
- a progress handler interrupts it after ``_BUDGET`` steps of SQLite's virtual machine
  (well under a millisecond), and the same statement is not tried inline again for its next
  ``_LONG_SKIPS`` runs; statements with many parameters (batches) are not tried;
- it runs only the first ``_BURST`` statements after the store was quiet for ``_QUIET``
  seconds: a lone enqueue, claim and settle, where a person waits for the answer. A busy
  store keeps using aiosqlite's thread, where the statements run beside the loop's own work
  (on two cores that is faster than running both on the loop's thread);
- statements with a large value (an argument or result of more than ``_MAX_BYTES``) go to
  the thread: writing it is long whatever the steps say;
- it never checkpoints the write-ahead log (that copies and syncs pages): every
  ``_THREAD_EVERY``-th write goes to the thread's connection, whose commits run SQLite's
  automatic checkpoints as before (and shrink the log to ``journal_size_limit``, which this
  connection keeps too).

A statement that fails here for any reason but a constraint was rolled back as a whole (it
is one statement in autocommit mode): the caller runs it on aiosqlite's thread, which waits
for the lock and reports errors as before. So the loop is never held for long, and every
outcome is the one the thread would have given.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from omniq_nb.storage.sqlite_schema import BUSY_TIMEOUT_MS, JOURNAL_SIZE_LIMIT

_STEPS = 1_000  # virtual-machine steps between calls of the progress handler
_BUDGET = 20  # calls of the progress handler before a statement is interrupted (about 20,000 steps)
_MAX_PARAMS = 64  # statements with more parameters are batches: straight to the thread
_MAX_BYTES = 64 * 1024  # statements with a longer bytes or str value: straight to the thread
_THREAD_EVERY = 64  # one write in this many goes to the thread, whose commits checkpoint the log
_LONG_SKIPS = 64  # runs of an interrupted statement that go straight to the thread
_LONG_KEPT = 256  # interrupted statements remembered at most (then forgotten all at once)
_QUIET = 0.005  # seconds without a statement after which the next ones run inline
_BURST = 8  # statements run inline after a quiet spell (an enqueue, its claim and its settle fit)
_QUICK = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")  # not PRAGMA: checkpoints and checks stay on the thread


class InlineConnection:
    """A second connection to a store file for short statements run on the calling thread.

    Args:
        path: the store's file (opened after the thread's connection made and migrated it).
        synchronous: the store's ``synchronous`` setting (``NORMAL``; ``FULL`` stores run
            nothing inline, as each commit waits for the disk).
        triggers: this connection's own event triggers (they are ``TEMP``; ``event_triggers``),
            or ``None`` to record no events.
        quiet: seconds without a statement after which a burst runs inline (``_QUIET``).
        burst: statements a burst runs inline (``_BURST``).

    """

    def __init__(
        self, path: str, *, synchronous: str, triggers: str | None, quiet: float = _QUIET, burst: int = _BURST
    ) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            self._conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
            self._conn.execute(f"PRAGMA synchronous = {synchronous}")
            if triggers is not None:
                self._conn.executescript(triggers)
            self._conn.execute("PRAGMA busy_timeout = 0")  # from now on: set up, it may wait like the store
        except BaseException:
            self._conn.close()
            raise
        self._conn.set_progress_handler(self._step, _STEPS)
        self._steps = 0
        self._writes = 0
        self._quiet, self._burst_size = quiet, burst
        self._last = -math.inf  # when the previous statement was asked for (monotonic)
        self._burst = 0  # statements still to run inline in this burst
        self._long: dict[str, int] = {}  # statements interrupted here: runs left before the next try

    def fetch(self, sql: str, params: Sequence[Any]) -> list[Any] | None:
        """Run one statement here and return its rows, or ``None``: run it on the thread instead.

        ``None`` when the store is busy (no quiet spell before this burst), when the statement
        is a batch, holds a large value or is not a plain query, when it is this write's turn
        for the thread, or when it failed here (busy, too long, or any other error).

        Raises:
            sqlite3.IntegrityError: a constraint refused the statement (a duplicate id), as
                the thread's connection would have said.

        """
        if not self._eligible(sql, params):
            return None
        self._steps = 0
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error:
            if self._steps > _BUDGET:  # interrupted: it is long, at least with such parameters
                if len(self._long) >= _LONG_KEPT:
                    self._long.clear()
                self._long[sql] = _LONG_SKIPS
            return None

    def _eligible(self, sql: str, params: Sequence[Any]) -> bool:
        """Return whether to try this statement here (counting it in the burst, the writes, the skips)."""
        now = time.monotonic()
        if now - self._last > self._quiet:
            self._burst = self._burst_size
        self._last, self._burst = now, self._burst - 1
        verb = sql.lstrip()[:6].upper()
        if self._burst < 0 or len(params) > _MAX_PARAMS or not verb.startswith(_QUICK):
            return False
        if any(isinstance(value, (bytes, str)) and len(value) > _MAX_BYTES for value in params):
            return False
        if verb != "SELECT":
            self._writes += 1
            if self._writes % _THREAD_EVERY == 0:
                return False
        if skips := self._long.get(sql):
            self._long[sql] = skips - 1
            return False
        return True

    def close(self) -> None:
        """Close the connection."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()

    def _step(self) -> int:
        self._steps += 1
        return self._steps > _BUDGET
