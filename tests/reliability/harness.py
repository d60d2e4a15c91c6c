"""Shared helpers of the reliability suite: child processes, task functions, reads of the file.

Everything the scenarios share lives here, once:

- ``Processes`` starts real child processes (``python -m omniq_nb worker`` and the scripts of
  this module's ``main``), logs each to a file, and kills what is left at teardown (the
  ``Child`` / ``Processes`` of ``tests/processes.py``, plus ``script``).
- Task functions (``run_once``, ``gated``, ``noop``) that worker processes import by name:
  ``child_env`` puts this folder on ``PYTHONPATH`` (and the worktree and ``tests/`` first, so
  children run the code under test). ``run_once`` appends one line ``task_id attempt pid`` per run to a
  log opened with ``O_APPEND`` (one ``write``: lines of concurrent processes never mix).
- Reads of the store through a fresh ``sqlite3`` connection per call, closed at once, as
  another process (``omniq-nb list``) sees the file; ``integrity`` runs ``PRAGMA
  integrity_check``, and ``healthy`` also ``omniq-nb check``.
- ``python -m harness enqueue|produce|notebook ...``: the enqueuing scripts of the scenarios.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import processes as processes_module
from processes import Child

import omniq_nb as omniq

HERE = Path(__file__).resolve().parent
START_WAIT = 90.0  # seconds for a child to start serving (imports on a loaded 2-core machine)
DRAIN_WAIT = 180.0  # seconds for the tasks of a scenario to finish
LIMIT = 120.0  # no task function waits longer than this


# --- task functions (imported by name in worker processes) -----------------------------------


class Run(NamedTuple):
    """One line of a run log: a task function started in process ``pid`` (parent ``ppid``) for ``attempt``."""

    task_id: str
    attempt: int
    pid: int
    ppid: int

    def ran_in(self, pids: set[int]) -> bool:
        """Return whether the run was in one of ``pids`` or in a child process of one (``--kind process``)."""
        return self.pid in pids or self.ppid in pids


def _line(context: Any) -> str:
    return f"{context.task_id} {context.attempt} {os.getpid()} {os.getppid()}\n"


def _append(log: str, text: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, text.encode())  # one write with O_APPEND: lines never interleave
    finally:
        os.close(fd)


def run_once(log: str, seconds: float = 0.0) -> list[int]:
    """Append ``task_id attempt pid ppid`` to ``log``, sleep ``seconds``; return ``[attempt, pid]``."""
    context = omniq.current()
    assert context is not None
    _append(log, _line(context))
    if seconds:
        time.sleep(seconds)
    return [context.attempt, os.getpid()]


def gated(log: str, gate: str) -> list[int]:
    """Log the run, wait for the file ``gate`` (ignoring cancel flags), log the end; return ``[attempt, pid]``."""
    context = omniq.current()
    assert context is not None
    _append(log, _line(context))
    deadline = time.monotonic() + LIMIT
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    _append(log + ".end", _line(context))
    return [context.attempt, os.getpid()]


def until_gate_or_cancel(log: str, gate: str) -> list[int]:
    """Log the run, wait for the file ``gate`` or a cancel flag (as a well-behaved long task does)."""
    context = omniq.current()
    assert context is not None
    _append(log, _line(context))
    deadline = time.monotonic() + LIMIT
    while not (os.path.exists(gate) or context.cancelled) and time.monotonic() < deadline:
        time.sleep(0.01)
    if not os.path.exists(gate):
        raise RuntimeError("interrupted before the gate opened")
    return [context.attempt, os.getpid()]


def crash(log: str) -> None:
    """Log the run, then end the whole process at once (as a segfault in a native library would)."""
    context = omniq.current()
    assert context is not None
    _append(log, _line(context))
    os._exit(1)


def noop() -> None:
    """Do nothing (scale scenarios measure the queue, not the task)."""


def echo(item: Any) -> Any:
    """Return ``item`` (a task for ``.map``)."""
    return item


def runs(log: Path) -> list[Run]:
    """Return the lines of a run log."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        task_id, attempt, pid, ppid = line.split()
        out.append(Run(task_id, int(attempt), int(pid), int(ppid)))
    return out


def runs_by_task(log: Path) -> dict[str, list[Run]]:
    grouped: dict[str, list[Run]] = defaultdict(list)
    for run in runs(log):
        grouped[run.task_id].append(run)
    return grouped


# --- reading the file as another process does ------------------------------------------------


def query(db: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run ``sql`` on a fresh connection (opened and closed here), as ``omniq-nb list`` does."""
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as conn:
        return list(conn.execute(sql, params))


def statuses(db: Path) -> dict[str, str]:
    """Return ``{task id: status}`` of every task in the file."""
    return dict(query(db, "SELECT id, status FROM tasks"))  # type: ignore[arg-type]


def counts(db: Path) -> dict[str, int]:
    """Return the number of tasks per status."""
    return dict(query(db, "SELECT status, count(*) FROM tasks GROUP BY status"))  # type: ignore[arg-type]


def integrity(db: Path) -> str:
    """Return the result of ``PRAGMA integrity_check`` (``"ok"`` when the file is sound)."""
    return "\n".join(row[0] for row in query(db, "PRAGMA integrity_check"))


def healthy(db: Path) -> str:
    """Return ``"ok"`` when both SQLite's integrity check and ``omniq-nb check`` say the store is sound.

    Otherwise return what they said: ``omniq-nb check`` runs as a user would run it, in a
    process of its own, and exits 0 only on a healthy store.
    """
    sound = integrity(db)
    checked = subprocess.run(
        [sys.executable, "-m", "omniq_nb", "check", "--db-url", f"sqlite:///{db}"],
        capture_output=True,
        text=True,
        timeout=START_WAIT,
        env=child_env(),
    )
    if sound == "ok" and checked.returncode == 0:
        return "ok"
    return f"integrity_check: {sound}; omniq-nb check exited {checked.returncode}: {checked.stdout}{checked.stderr}"


_WAL_WRITE_LOCK = 120  # the byte of the -shm file that SQLite's writer locks (unix VFS, WAL mode)


def holds_write_lock(pid: int, db: Path) -> bool:
    """Return whether process ``pid`` holds the store's write lock now (read from ``/proc/locks``).

    In WAL mode SQLite's writer takes an exclusive fcntl lock on byte 120 of ``<db>-shm``: a
    process holding it is inside a write statement (claim, renew, settle, insert...).
    """
    try:
        shm = os.stat(f"{db}-shm")
    except FileNotFoundError:
        return False
    inode = f"{os.major(shm.st_dev):02x}:{os.minor(shm.st_dev):02x}:{shm.st_ino}"
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        kind, mode, owner, where, start, end = fields[1], fields[3], fields[4], fields[5], fields[6], fields[7]
        last = _WAL_WRITE_LOCK if end == "EOF" else int(end)
        if (kind, mode, int(owner), where) == ("POSIX", "WRITE", pid, inode) and int(start) <= _WAL_WRITE_LOCK <= last:
            return True
    return False


def stopped(pid: int) -> bool:
    """Return whether process ``pid`` is stopped (state ``T`` after SIGSTOP)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")


def children_of(pid: int) -> list[int]:
    """Return the ids of the live child processes of ``pid`` (from ``/proc``)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                kids.append(int(stat.parent.name))
    return kids


def gone(pid: int) -> bool:
    """Return whether process ``pid`` has ended (no longer exists, or is a zombie)."""
    return not processes_module.pid_alive(pid)


def vm_hwm_kib(pid: int) -> int:
    """Return the peak resident set size (VmHWM) of a live process, in KiB."""
    match = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    assert match, f"no VmHWM for {pid}"
    return int(match.group(1))


class Monitor:
    """A thread that polls the file with a fresh connection per poll and records what it saw.

    ``check(counts)`` is called with each poll's counts per status and returns a problem
    (a string) or ``None``; problems and errors are kept in ``problems``.
    """

    def __init__(self, db: Path, check: Callable[[dict[str, int]], str | None]) -> None:
        self.db, self.check = db, check
        self.polls = 0
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="reliability-monitor", daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=LIMIT)

    def _main(self) -> None:
        while not self._stop.wait(0.02):
            try:
                seen = counts(self.db)
            except sqlite3.Error as exc:
                self.problems.append(f"poll {self.polls}: {exc!r}")
                continue
            self.polls += 1
            problem = self.check(seen)
            if problem:
                self.problems.append(f"poll {self.polls}: {problem}")


class OverlappingReaders:
    """Short read transactions (fresh connection, 50 ms each) that overlap: one is always open.

    One thread hands over from reader to reader: the next read begins before the previous one
    ends, so the overlap does not depend on scheduling. Each read alone is short, like a slow
    ``omniq-nb list`` or a notebook's poll; together there is no moment without a reader, which
    keeps a WAL from ever restarting unless the store checkpoints in a mode that waits for the
    readers of the moment.
    """

    HOLD = 0.05

    def __init__(self, db: Path) -> None:
        self.db = db
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="overlapping-readers", daemon=True)

    def __enter__(self) -> OverlappingReaders:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=LIMIT)

    def _begin(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db, timeout=60, isolation_level=None)
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM tasks WHERE status = 'pending'").fetchone()  # the snapshot starts here
        return conn

    def _main(self) -> None:
        current = self._begin()
        while not self._stop.wait(self.HOLD):  # holds the read open: not a wait for a condition
            following = self._begin()
            current.execute("COMMIT")
            current.close()
            current, self.reads = following, self.reads + 1
        current.execute("COMMIT")
        current.close()


class Lister:
    """A thread that runs ``python -m omniq_nb list`` again and again; failures go to ``problems``.

    Each run opens the store through omniq_nb (its own open path, migrations check included)
    and closes it: the pattern that once made another process delete the live WAL.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.runs = 0
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="reliability-lister", daemon=True)

    def __enter__(self) -> Lister:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=LIMIT)

    def _main(self) -> None:
        command = [sys.executable, "-m", "omniq_nb", "--db-url", self.url, "list", "--limit", "3"]
        while not self._stop.is_set():
            done = subprocess.run(command, capture_output=True, text=True, timeout=LIMIT, env=child_env())
            self.runs += 1
            if done.returncode != 0:
                self.problems.append(f"list run {self.runs} exited {done.returncode}: {done.stderr[-2000:]}")


# --- child processes -------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """Return the environment of a child: the worktree, ``tests/`` and this folder first on ``PYTHONPATH``."""
    return processes_module.child_env(HERE, **extra)


class Processes(processes_module.Processes):
    """Start children in ``folder`` (this folder on their ``PYTHONPATH``); ``close()`` kills every one still alive."""

    def __init__(self, folder: Path, wait: Callable[..., Any]) -> None:
        super().__init__(folder, wait, paths=[HERE])

    def worker(
        self,
        url: str,
        *,
        concurrency: int = 4,
        lease: float = 5.0,
        kind: str = "thread",
        prefix: Sequence[str] = (),
        **env: str,
    ) -> Child:
        """Start ``python -m omniq_nb worker`` (after ``prefix``: ``ip netns exec NS``...) and wait until it serves."""
        program = (*prefix, sys.executable, "-m", "omniq_nb")
        return super().worker(
            url, concurrency=concurrency, lease=lease, kind=kind, program=program, start_wait=START_WAIT, **env
        )

    def script(self, command: str, *args: str, name: str | None = None, stdin: bool = False, **env: str) -> Child:
        """Start ``python -m harness COMMAND ARGS`` (see ``main``); ``stdin``: a pipe for ``send``."""
        return self.start(["-m", "harness", command, *args], name=name or command, stdin=stdin, env=child_env(**env))


# --- scripts run as children: python -m harness COMMAND ... ---------------------------------


def _enqueue(args: argparse.Namespace) -> None:
    """Open the store, say "ready", wait for a line on stdin when asked, enqueue in batches."""
    with omniq.OmniQ(db_url=args.url) as q:
        mapped = omniq.task(echo)
        if args.map:
            mapped.map([])  # opens the default queue (OMNIQ_DB_URL is the same file) before "ready"
        print("ready", omniq.__file__, flush=True)
        if args.wait:
            sys.stdin.readline()
        print("enqueuing", flush=True)
        for start in range(0, args.n, args.batch):
            count = min(args.batch, args.n - start)
            if args.map:
                mapped.map(range(count))
            else:
                q.enqueue_many(noop, [() for _ in range(count)])
        print(f"enqueued {args.n}", flush=True)
        print(f"VmHWM {vm_hwm_kib(os.getpid())}", flush=True)
        if args.hold:
            sys.stdin.readline()


def _produce(args: argparse.Namespace) -> None:
    """Enqueue ``n`` ``run_once`` tasks (singly and in groups), then check all ids are visible.

    Waits for the result of each through its own handle (updated from other processes' events)
    and writes ``id attempt pid`` lines to ``OUT/ids-NAME``; once ``OUT/check`` exists, reads
    every ``ids-*`` file and writes the ids it does not see succeeded to ``OUT/missing-NAME``.
    """
    out = Path(args.out)
    handles: list[Any] = []
    with omniq.OmniQ(db_url=args.url) as q:
        rng = random.Random(args.name)
        while len(handles) < args.n:
            if rng.random() < 0.5:
                handles.append(q.enqueue(run_once, args.log))
            else:
                size = min(rng.randint(2, 20), args.n - len(handles))
                handles += q.enqueue_many(run_once, [(args.log,) for _ in range(size)]).handles
        seen = [(h.id, *h.result(timeout=LIMIT)) for h in handles]
        partial = out / f".ids-{args.name}"
        partial.write_text("".join(f"{task_id} {attempt} {pid}\n" for task_id, attempt, pid in seen))
        os.replace(partial, out / f"ids-{args.name}")
        deadline = time.monotonic() + LIMIT
        while not (out / "check").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        wanted = {line.split()[0] for f in out.glob("ids-*") for line in f.read_text().splitlines()}
        missing = [i for i in sorted(wanted) if q.get(i).task.status is not omniq.TaskStatus.SUCCEEDED]
        partial = out / f".missing-{args.name}"
        partial.write_text(f"{len(wanted)}\n" + "\n".join(missing))
        os.replace(partial, out / f"missing-{args.name}")


def _notebook(args: argparse.Namespace) -> None:
    """A notebook-like process: one queue and an in-process pool; tasks enqueued while it runs.

    Enqueues groups of 5 ``run_once`` tasks, a pause between them, until ``OUT/stop`` exists,
    appending the ids of each group to ``OUT/acked`` once ``enqueue_many`` returned; writes all
    ids to ``OUT/ids``, waits until every one succeeded, then stops its pool gracefully and
    prints "all succeeded".
    """
    out = Path(args.out)
    with omniq.OmniQ(db_url=args.url) as q, omniq.WorkerPool(q, concurrency=2, lease=args.lease):
        print("serving", flush=True)
        handles: list[Any] = []
        deadline = time.monotonic() + LIMIT
        while not (out / "stop").exists() and time.monotonic() < deadline:
            group = q.enqueue_many(run_once, [(args.log, 0.01)] * 5, retries=2)  # a kill -9 uses an attempt
            _append(str(out / "acked"), "".join(f"{task_id}\n" for task_id in group.ids))
            handles += group.handles
            time.sleep(0.05)  # paces the stream of tasks: it is not a wait for a condition
        partial = out / ".ids"
        partial.write_text("\n".join(h.id for h in handles))
        os.replace(partial, out / "ids")
        for handle in handles:
            handle.result(timeout=LIMIT)
    print("all succeeded", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="harness")
    commands = parser.add_subparsers(dest="command", required=True)
    enqueue = commands.add_parser("enqueue")
    enqueue.add_argument("url")
    enqueue.add_argument("n", type=int)
    enqueue.add_argument("--batch", type=int, default=1000)
    enqueue.add_argument("--wait", action="store_true", help="wait for a line on stdin before enqueuing")
    enqueue.add_argument("--hold", action="store_true", help="wait for a line on stdin before exiting")
    enqueue.add_argument("--map", action="store_true", help="use @task .map on the default queue (OMNIQ_DB_URL)")
    enqueue.set_defaults(run=_enqueue)
    produce = commands.add_parser("produce")
    for name in ("url", "log", "out", "name"):
        produce.add_argument(name)
    produce.add_argument("n", type=int)
    produce.set_defaults(run=_produce)
    notebook = commands.add_parser("notebook")
    notebook.add_argument("url")
    notebook.add_argument("log")
    notebook.add_argument("out")
    notebook.add_argument("--lease", type=float, default=5.0)
    notebook.set_defaults(run=_notebook)
    args = parser.parse_args(argv)
    args.run(args)


@contextlib.contextmanager
def processes(folder: Path, wait: Callable[..., Any]) -> Iterator[Processes]:
    """Yield a ``Processes``; every child still alive at the end is killed."""
    group = Processes(folder, wait)
    try:
        yield group
    finally:
        group.close()


if __name__ == "__main__":  # run as ``python -m harness``: use the importable module, so tasks pickle by name
    import harness

    harness.main()
