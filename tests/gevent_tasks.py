"""Task functions for the gevent worker tests and benchmark, importable by name from ``omniq-nb worker`` processes.

Each waits the way I/O-bound code does: ``time.sleep`` or a socket that never receives, both
patched by gevent in a gevent worker (so greenlets overlap), both blocking elsewhere.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import omniq_nb as omniq

LIMIT = 60.0  # no task here ever waits longer than this


def _socket_wait(seconds: float) -> None:
    """Wait ``seconds`` on a socket that never receives."""
    quiet, other = socket.socketpair()
    with quiet, other:
        quiet.settimeout(seconds)
        try:
            quiet.recv(1)
        except TimeoutError:
            return


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def nap_and_log(folder: str, n: int, seconds: float) -> str:
    """Wait ``seconds`` (odd ``n`` on a socket, even ones in ``time.sleep``); log ``start end`` to ``folder/n``."""
    start = time.time()
    if n % 2:
        _socket_wait(seconds)
    else:
        time.sleep(seconds)
    _write(Path(folder) / str(n), f"{start} {time.time()}\n")
    return threading.current_thread().name


def wait_io(seconds: float) -> int:
    """Wait ``seconds`` on a socket (the benchmark's I/O); return the pid."""
    _socket_wait(seconds)
    return os.getpid()


def sleep_until_stopped(marker: str) -> str:
    """Write ``marker``, then sleep in short steps up to ``LIMIT``; whatever stops it is written to ``marker.ended``."""
    Path(marker).write_text(str(os.getpid()))
    ending = "returned"
    try:
        deadline = time.monotonic() + LIMIT
        while time.monotonic() < deadline:
            time.sleep(0.02)
        return "slept"
    except BaseException as exc:  # GreenletExit or gevent.Timeout: recorded, then raised on
        ending = type(exc).__name__
        raise
    finally:
        _write(Path(marker + ".ended"), ending)


def report_progress(gate: str, steps: int) -> int:
    """Report ``steps`` of ``steps`` with a message, then wait for ``gate``."""
    omniq.progress(steps, steps, "greenlet progress")
    deadline = time.monotonic() + LIMIT
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return steps


def where() -> dict[str, object]:
    """Return the process, the thread and the task id (from ``omniq.current()``) the call ran in."""
    context = omniq.current()
    return {
        "pid": os.getpid(),
        "thread": threading.current_thread().name,
        "task_id": None if context is None else context.task_id,
    }


async def async_where() -> dict[str, object]:
    return where()


def compute(seconds: float) -> int:
    """Compute for ``seconds`` without ever waiting (a greenlet that never yields); return the loops made."""
    deadline, loops = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        loops += 1
    return loops


def sleep_swallowing_errors(seconds: float) -> str:
    """Sleep ``seconds`` inside ``except Exception``, as careless code does (a time-out must still stop it)."""
    try:
        time.sleep(seconds)
    except Exception:
        return "swallowed"
    return "slept"
