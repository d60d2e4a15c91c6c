"""The CLI's log handler: lines written a batch at a time, so a busy worker's log costs little.

``omniq-nb worker`` logs one line per task start and end: at thousands of tasks a second,
building, formatting and writing each line on its own took a fifth of a PostgreSQL
worker's time. ``BatchedLines`` keeps records and writes them, formatted, in one write a
batch: within ``delay`` seconds of the first, at once for a warning or worse (and all that
came before it), and at ``logging.shutdown``. ``install`` also turns off what a record
would otherwise look up that the CLI's format never shows (thread, process, the caller's
frame), as the logging HOWTO's "Optimization" section suggests.

Example:
    >>> import io
    >>> out = io.StringIO()
    >>> handler = BatchedLines(out, delay=60)
    >>> handler.handle(logging.makeLogRecord({"msg": "started", "levelno": logging.INFO}))
    True
    >>> out.getvalue()
    ''
    >>> handler.handle(logging.makeLogRecord({"msg": "lost", "levelno": logging.WARNING}))
    True
    >>> out.getvalue().splitlines()
    ['started', 'lost']

"""

from __future__ import annotations

import logging
import threading
import time
from typing import TextIO

__all__ = ["DELAY", "MOST", "BatchedLines", "LineFormat", "install"]

DELAY = 0.05
"""Seconds a line may wait for others to be written with it."""
MOST = 1000
"""Lines written at once, whatever their wait."""
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_DATE = "%Y-%m-%d %H:%M:%S"  # logging.Formatter.default_time_format, then ",mmm" as its default_msec_format


class BatchedLines(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes its lines a batch at a time (see the module's docstring).

    Args:
        stream: where the lines go.
        delay: seconds a line may wait for others.
    """

    def __init__(self, stream: TextIO, delay: float = DELAY) -> None:
        super().__init__(stream)
        self._records: list[logging.LogRecord] = []
        self._due = threading.Event()
        self._delay = delay
        threading.Thread(target=self._write_when_due, name="omniq-log-lines", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        """Keep ``record``; write the batch now if it is a warning or worse, or the batch is full."""
        self._records.append(record)  # ``handle`` holds this handler's lock
        if record.levelno >= logging.WARNING or len(self._records) >= MOST:
            self.flush()
        elif len(self._records) == 1:
            self._due.set()

    def flush(self) -> None:
        """Write the kept records, formatted, in one write."""
        assert self.lock is not None  # made by Handler.__init__
        with self.lock:
            records, self._records = self._records, []
            lines = []
            for record in records:
                try:
                    lines.append(self.format(record) + self.terminator)
                except Exception:
                    self.handleError(record)
            if lines:
                try:
                    self.stream.write("".join(lines))
                    self.stream.flush()
                except Exception:
                    self.handleError(records[-1])

    def _write_when_due(self) -> None:
        while True:
            self._due.wait()
            time.sleep(self._delay)
            self._due.clear()
            self.flush()


class LineFormat(logging.Formatter):
    """The CLI's line: time to the millisecond, level, logger, message; the date is made once a second."""

    def __init__(self) -> None:
        super().__init__(_FORMAT)
        self._second, self._stamp = -1, ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """Return ``record``'s time as ``logging.Formatter`` does by default, reusing the second's text."""
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime(_DATE, self.converter(second))
        return f"{self._stamp},{int(record.msecs):03d}"


def install(logger: logging.Logger, stream: TextIO, level: str) -> None:
    """Send ``logger``'s records at ``level`` and above to ``stream`` through a ``BatchedLines``.

    Only for a process the CLI owns: it also stops every record of the process from looking
    up its thread, process and caller, which the CLI's lines never show.
    """
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = BatchedLines(stream)
    handler.setFormatter(LineFormat())
    logger.addHandler(handler)
    logger.setLevel(level)
