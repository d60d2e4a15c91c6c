"""Child processes of the tests: ``omniq-nb worker`` processes (and any other command), each logging to a file.

One wrapper for "a CLI worker process", used by the CLI worker tests, the widget tests and
the reliability suite:

- ``child_env`` is a child's environment: no ``OMNIQ_*`` of this process, the worktree and
  this folder first on ``PYTHONPATH`` (so children run the code under test and import
  ``worker_tasks`` by name), plus any other folders asked for, short poll and backoff.
- ``Child`` is one process whose stdout and stderr go to a log file: its ``text``, whether
  it ``says`` something (failing at once if it died without saying it), signals, ``reap``.
- ``Processes`` starts children in a folder and reaps every one at ``close``;
  ``Processes.worker`` starts ``omniq-nb worker`` and waits (bounded) until it serves.
- ``pid_exists`` / ``pid_alive``: whether a process is there at all / there and not a zombie.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent  # the worktree: children import the omniq_nb under test
LIMIT = 120.0  # seconds a child is given to exit once told to
WORKER_STARTED = r"worker \S+ started:"


def pid_exists(pid: int) -> bool:
    """Return True while process ``pid`` exists, an unreaped (zombie) one included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_alive(pid: int) -> bool:
    """Return True while process ``pid`` exists and is not a zombie (an unreaped corpse is gone)."""
    if not pid_exists(pid):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return os.path.exists(f"/proc/{pid}") or not os.path.isdir("/proc")
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def child_env(*folders: Path | str, **extra: str) -> dict[str, str]:
    """Return a child's environment: the worktree, this folder and ``folders`` first on ``PYTHONPATH``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    paths = [str(ROOT), str(TESTS), *map(str, folders), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["OMNIQ_POLL_INTERVAL"] = "0.05"
    env["OMNIQ_RETRY_BACKOFF"] = "0.05"
    env.update(extra)
    return env


class Child:
    """One child process whose stdout and stderr go to a log file."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process, self.log = process, log

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def says(self, pattern: str) -> bool:
        """Return whether the log matches ``pattern``; fail at once if the child died without it."""
        if re.search(pattern, self.text(), re.MULTILINE):
            return True
        if not self.alive():
            raise AssertionError(f"child {self.pid} exited with {self.process.returncode}:\n{self.text()[-4000:]}")
        return False

    def started(self) -> bool:
        """Return whether the worker said it serves (failing at once if it died first)."""
        return self.says(WORKER_STARTED)

    def send(self, line: str = "") -> None:
        """Write a line to the child's stdin (started with ``stdin=True``)."""
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill9(self) -> None:
        """``kill -9`` and reap."""
        self.signal(signal.SIGKILL)
        self.process.wait(timeout=LIMIT)

    def terminate(self) -> int:
        """SIGTERM (a graceful stop) and wait for the exit status."""
        self.signal(signal.SIGTERM)
        return self.process.wait(timeout=LIMIT)

    def reap(self) -> None:
        """Make sure the process is gone (resumed first, in case it was stopped)."""
        if self.alive():
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=LIMIT)


class Processes:
    """Start children in ``folder`` (``child_env(*paths)`` unless told); ``close()`` kills every one still alive.

    ``wait`` is a bounded blocking poll, ``wait(predicate, timeout=...)`` (the ``wait_until_sync``
    fixture).
    """

    def __init__(self, folder: Path, wait: Callable[..., Any], paths: Sequence[Path | str] = ()) -> None:
        self.folder, self.wait, self.paths = folder, wait, tuple(paths)
        self.children: list[Child] = []

    def env(self, **extra: str) -> dict[str, str]:
        """Return the environment of this group's children, with ``extra`` on top."""
        return child_env(*self.paths, **extra)

    def start(
        self,
        args: Sequence[str],
        *,
        name: str,
        env: dict[str, str] | None = None,
        stdin: bool = False,
        cwd: Path | None = None,
        program: Sequence[str] = (sys.executable,),
    ) -> Child:
        """Start ``program + args`` in ``cwd`` (the folder by default), logging to ``folder/NAME-N.log``."""
        log = self.folder / f"{name}-{len(self.children)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*program, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                env=env or self.env(),
                cwd=cwd or self.folder,
            )
        child = Child(process, log)
        self.children.append(child)
        return child

    def worker(
        self,
        url: str,
        *,
        concurrency: int = 4,
        lease: float = 5.0,
        kind: str = "thread",
        program: Sequence[str] = (sys.executable, "-m", "omniq_nb"),
        start_wait: float = 90.0,
        **env: str,
    ) -> Child:
        """Start ``omniq-nb worker`` on ``url`` (``program``: how it is invoked) and wait until it serves."""
        args = ["worker", "--db-url", url, "--concurrency", str(concurrency)]
        args += ["--kind", kind, "--lease", str(lease), "--log-level", "INFO"]
        child = self.start(args, name="worker", env=self.env(**env), program=program)
        self.wait(child.started, timeout=start_wait)
        return child

    def close(self) -> None:
        for child in self.children:
            child.reap()
