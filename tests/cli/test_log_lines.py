"""The CLI's batched log lines: every line is written, in order, soon, and a warning at once."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import time

from omniq_nb.log_lines import BatchedLines, LineFormat


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.makeLogRecord({"name": "omniq_nb.worker.runs", "msg": message, "levelno": level})


def test_lines_are_written_in_order_within_the_delay_without_a_warning() -> None:
    out = io.StringIO()
    handler = BatchedLines(out, delay=0.01)
    for n in range(2500):  # more than one batch's worth
        handler.handle(record(f"task {n} started"))
    deadline = time.monotonic() + 10
    while out.getvalue().count("\n") < 2500 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert out.getvalue().splitlines() == [f"task {n} started" for n in range(2500)]


def test_the_time_reads_as_the_standard_formatters() -> None:
    line = record("hello")
    assert LineFormat().format(line) == logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s").format(
        line
    )


def test_a_worker_process_that_exits_writes_every_line_it_logged() -> None:
    script = (
        "import logging, sys; from omniq_nb import log_lines; "
        "log = logging.getLogger('omniq_nb.t'); log_lines.install(log, sys.stderr, 'INFO'); "
        "[log.info('line %d', n) for n in range(3000)]"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    lines = done.stderr.splitlines()
    assert [line.rsplit(": ", 1)[1] for line in lines] == [f"line {n}" for n in range(3000)]
    assert all(" INFO omniq_nb.t: " in line for line in lines)
