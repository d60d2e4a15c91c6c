"""Task functions for the worker tests, importable by name from worker processes.

Worker subprocesses (``omniq-nb worker``) and child processes of process pools import this
module by name: the tests put its folder on ``PYTHONPATH`` (children of process pools get the
parent's ``sys.path``). Every wait here is bounded and sleeps between checks: no busy loops.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import omniq_nb as omniq

FOLDER = Path(__file__).resolve().parent  # what the tests put on a worker process's PYTHONPATH
LIMIT = 60.0  # no task here ever waits longer than this
STEP = 0.01


def _wait_for(predicate: Any, limit: float = LIMIT) -> bool:
    """Sleep-poll until ``predicate()`` holds; return whether it did within ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(STEP)
    return True


def _cancelled() -> bool:
    context = omniq.current()
    return context is not None and context.cancelled


def _touch(path: Path, text: str = "") -> None:
    """Write ``path`` whole at once (rename): a test that sees the file also sees its text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def add(a: int, b: int) -> int:
    return a + b


async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def pid() -> int:
    return os.getpid()


def where(marker: str | None = None) -> dict[str, Any]:
    """Return the process and the task context the call ran in."""
    context = omniq.current()
    info: dict[str, Any] = {"pid": os.getpid(), "context": None}
    if context is not None:
        info["context"] = {
            "id": context.id,
            "task_id": context.task_id,
            "attempt": context.attempt,
            "queue": context.queue,
            "run_id": context.run_id,
        }
    if marker is not None:
        _touch(Path(marker), str(os.getpid()))
    return info


async def async_where() -> dict[str, Any]:
    await asyncio.sleep(0)
    return where()


def gated(folder: str, name: str, gate: str) -> str:
    """Record start and end times (monotonic, system-wide) around a wait for ``gate`` to exist."""
    out = Path(folder)
    _touch(out / f"{name}.start", repr(time.monotonic()))
    opened = _wait_for(lambda: Path(gate).exists() or _cancelled())
    _touch(out / f"{name}.end", repr(time.monotonic()))
    if not opened:
        raise TimeoutError(f"gate {gate} never opened")
    return name


def log_run_then_wait(log: str, gate: str) -> str:
    """Append ``attempt run_id`` of this run to ``log``, wait for ``gate``, return the run id."""
    context = omniq.current()
    assert context is not None
    append = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(append, f"{context.attempt} {context.run_id}\n".encode())
    finally:
        os.close(append)
    if not _wait_for(lambda: Path(gate).exists() or _cancelled()):
        raise TimeoutError(f"gate {gate} never opened")
    return context.run_id


async def _async_wait_for(path: str, limit: float = LIMIT) -> bool:
    """Sleep on the loop until ``path`` exists; return whether it did within ``limit`` seconds."""
    deadline = time.monotonic() + limit
    for _ in iter(int, 1):  # until the path appears or the deadline passes
        if _exists(path):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(STEP)
    return False


def _exists(path: str) -> bool:
    return Path(path).exists()


async def async_gated(folder: str, name: str, gate: str) -> str:
    out = Path(folder)
    _touch(out / f"{name}.start", repr(time.monotonic()))
    opened = await _async_wait_for(gate)
    _touch(out / f"{name}.end", repr(time.monotonic()))
    if not opened:
        raise TimeoutError(f"gate {gate} never opened")
    return name


def flaky(counter: str, failures: int, error: str = "ValueError") -> int:
    """Fail the first ``failures`` calls (counted in a file) with ``error``, then return the call count."""
    path = Path(counter)
    calls = len(path.read_text()) + 1 if path.exists() else 1
    path.write_text("x" * calls)
    if calls <= failures:
        raise {"ValueError": ValueError, "KeyError": KeyError, "OSError": OSError}[error](f"failure {calls}")
    return calls


def raise_value_error(message: str) -> None:
    raise ValueError(message)


def exit_softly(code: int) -> None:
    """Call ``sys.exit`` (SystemExit), as a script turned into a task might."""
    sys.exit(code)


def wait_until_cancelled(marker: str, gate: str | None = None) -> str:
    """Write ``marker`` with the pid, then wait until the task is flagged (or ``gate`` appears)."""
    _touch(Path(marker), str(os.getpid()))
    _wait_for(lambda: _cancelled() or (gate is not None and Path(gate).exists()))
    _touch(Path(marker + ".flagged"), "cancelled" if _cancelled() else "gate")
    return "ended"


def wait_for_gate_only(gate: str) -> str:
    """Wait for ``gate`` to exist and ignore the task's cancel flag, as code that never checks it."""
    if not _wait_for(lambda: Path(gate).exists()):
        raise TimeoutError(f"gate {gate} never opened")
    return "gate"


async def async_wait_forever(marker: str) -> str:
    """Write ``marker``, then sleep; write ``marker.cancelled`` when cancelled."""
    _touch(Path(marker), str(os.getpid()))
    try:
        await asyncio.sleep(LIMIT)
    except asyncio.CancelledError:
        _touch(Path(marker + ".cancelled"), "yes")
        raise
    return "slept"


def sleep_in_process(marker: str, seconds: float = LIMIT) -> str:
    """Write ``marker`` with the pid, then sleep (in a child process this gets terminated)."""
    _touch(Path(marker), str(os.getpid()))
    time.sleep(seconds)
    _touch(Path(marker + ".finished"), "yes")
    return "slept"


def exit_hard(marker: str | None = None) -> None:
    if marker is not None:
        _touch(Path(marker), str(os.getpid()))
    os._exit(1)


def pause(seconds: float) -> int:
    """Sleep ``seconds`` and return this process's id."""
    time.sleep(seconds)
    return os.getpid()


def large_after_gate(gate: str, size: int) -> bytes:
    """Wait for ``gate`` to exist, then return ``size`` bytes (a result larger than a socket's buffer)."""
    if not _wait_for(lambda: Path(gate).exists()):
        raise TimeoutError(f"gate {gate} never opened")
    return b"r" * size


def size_of(data: bytes) -> int:
    return len(data)


def exit_at_gate(gate: str) -> None:
    """Wait for ``gate`` to exist, then end the process at once (no outcome is sent)."""
    _wait_for(lambda: Path(gate).exists())
    os._exit(1)


def exit_on_first_attempt() -> int:
    context = omniq.current()
    assert context is not None
    if context.attempt == 1:
        os._exit(1)
    return context.attempt


def progress_then_wait(gate: str, steps: int = 4) -> str:
    """Report progress with ``track`` then ``progress``, and wait (so the pool writes it) for ``gate``."""
    for _ in omniq.track(range(steps)):
        pass
    omniq.progress(steps, steps, "all done")
    _wait_for(lambda: Path(gate).exists() or _cancelled())
    return "reported"


def progress_in_steps(folder: str, steps: int) -> int:
    """Report step ``n`` of ``steps``, then wait for the file ``go<n>`` before the next step."""
    for n in range(1, steps + 1):
        omniq.progress(n, steps, f"step {n}")
        if not _wait_for(lambda n=n: (Path(folder) / f"go{n}").exists() or _cancelled()):
            raise TimeoutError(f"go{n} never appeared")
    return steps


async def async_progress_then_wait(gate: str, steps: int = 4) -> str:
    for _ in omniq.track(range(steps)):
        await asyncio.sleep(0)
    omniq.progress(steps, steps, "all done")
    await _async_wait_for(gate)
    return "reported"


def touch(path: str) -> str:
    _touch(Path(path), str(os.getpid()))
    return path


def append_line(path: str) -> int:
    """Append one line to ``path``; return how many lines it has now."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(f"{os.getpid()}\n")
    return len(Path(path).read_text().splitlines())


def create_once(folder: str, n: int) -> int:
    """Create ``folder/n`` exclusively: a second run of the same task raises FileExistsError."""
    fd = os.open(os.path.join(folder, str(n)), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    return n


def long_on_first_attempt(folder: str, seconds: float = LIMIT) -> int:
    """Record ``start-<attempt>`` with the pid; the first attempt then sleeps; return the pid."""
    context = omniq.current()
    assert context is not None
    _touch(Path(folder) / f"start-{context.attempt}", str(os.getpid()))
    if context.attempt == 1:
        time.sleep(seconds)
        _touch(Path(folder) / f"end-{context.attempt}", str(os.getpid()))
    return os.getpid()


async def async_block_loop(folder: str, seconds: float) -> int:
    """Block the worker's event loop with time.sleep; count runs in ``folder/runs``."""
    append_line(os.path.join(folder, "runs"))
    _block(seconds)  # the point is to block the loop
    return os.getpid()


def _block(seconds: float) -> None:
    time.sleep(seconds)


def chatter(lines: int, gate: str | None = None, every: float = 0.0) -> int:
    """Print ``lines`` numbered lines (one in ten also to stderr), ``every`` seconds apart.

    With a ``gate``, touch ``gate + ".printed"`` then wait for the gate.
    """
    for i in range(lines):
        print(f"line {i}")
        if i % 10 == 0:
            print(f"err {i}", file=sys.stderr)
        if every:
            time.sleep(every)
    if gate is not None:
        _touch(Path(gate + ".printed"))
        _wait_for(lambda: os.path.exists(gate))
    return lines


async def async_chatter(lines: int) -> int:
    """Print ``lines`` numbered lines from a coroutine, yielding to the loop between them."""
    for i in range(lines):
        print(f"line {i}")
        await asyncio.sleep(0)
    return lines


def show_something(text: str) -> str:
    """Print a line, display ``text`` through IPython's display, and print another line."""
    from IPython.display import display

    print("before")
    display({"text/plain": text}, raw=True)
    print("after")
    return text
