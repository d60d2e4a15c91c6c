"""The ``omniq-nb`` command line (``list``, ``show``, ``purge``, ``workers``, errors, ``python -m omniq_nb``).

Tasks are made by a real pool in this process on a SQLite file; each command runs as a real
subprocess on that file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import worker_tasks as wt

from omniq_nb import OmniQ, TaskFailed, WorkerInfo, WorkerPool
from omniq_nb.cli import format_workers, main

TESTS = wt.FOLDER  # worker_tasks' folder: workers import it through PYTHONPATH
OMNIQ_NB = str(Path(sys.executable).parent / "omniq-nb")
RUN_WAIT = 60.0


class Made:
    """The tasks made for the CLI to look at."""

    def __init__(self, url: str, succeeded: str, failed: str, pending: str) -> None:
        self.url, self.succeeded, self.failed, self.pending = url, succeeded, failed, pending


def run(*args: str, env: dict[str, str] | None = None, module: bool = False) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "omniq_nb"] if module else [OMNIQ_NB]
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), full_env.get("PYTHONPATH", "")) if p)
    full_env.update(env or {})
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=RUN_WAIT, env=full_env, stdin=subprocess.DEVNULL
    )


@pytest.fixture
def made(tmp_path: Path) -> Iterator[Made]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with OmniQ(db_url=url, poll_interval=0.05) as q:
        with WorkerPool(q, concurrency=2, kind="thread", lease=5):
            ok = q.enqueue(wt.add, 2, 3)
            bad = q.enqueue(wt.raise_value_error, "boom from the task")
            assert ok.result(timeout=RUN_WAIT) == 5
            with pytest.raises(TaskFailed):
                bad.result(timeout=RUN_WAIT)
        waiting = q.enqueue_call(wt.add, args=(1, 1), queue="nobody")
        yield Made(url, ok.id, bad.id, waiting.id)


def line_of(output: str, task_id: str) -> str:
    [line] = [line for line in output.splitlines() if line.startswith(task_id)]
    return line


def test_list_shows_every_task_with_its_status(made: Made) -> None:
    done = run("list", "--db-url", made.url)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:3] == ["ID", "STATUS", "ATTEMPT"]
    assert len(rows) == 3
    assert line_of(done.stdout, made.succeeded).split()[1:3] == ["succeeded", "1/1"]
    assert line_of(done.stdout, made.failed).split()[1:3] == ["failed", "1/1"]
    assert line_of(done.stdout, made.pending).split()[1:4] == ["pending", "0/1", "nobody"]
    assert rows[0].startswith(made.pending), "newest first"
    assert "worker_tasks.add" in line_of(done.stdout, made.succeeded)


def test_list_filters_by_status_and_queue(made: Made) -> None:
    failed = run("list", "--db-url", made.url, "--status", "failed")
    assert failed.returncode == 0, failed.stderr
    assert [line.split()[0] for line in failed.stdout.splitlines()[1:]] == [made.failed]
    queue = run("list", "--db-url", made.url, "--queue", "nobody")
    assert [line.split()[0] for line in queue.stdout.splitlines()[1:]] == [made.pending]


def test_db_url_from_the_environment_or_before_the_command(made: Made) -> None:
    from_env = run("list", env={"OMNIQ_DB_URL": made.url})
    assert from_env.returncode == 0, from_env.stderr
    assert made.succeeded in from_env.stdout
    first = run("--db-url", made.url, "list")
    assert first.returncode == 0, first.stderr
    assert made.succeeded in first.stdout


def test_show_prints_a_result(made: Made) -> None:
    done = run("show", "--db-url", made.url, made.succeeded)
    assert done.returncode == 0, done.stderr
    fields = dict(line.split(None, 1) for line in done.stdout.splitlines() if " " in line.strip())
    assert fields["id"] == made.succeeded
    assert fields["status"] == "succeeded"
    assert fields["attempt"] == "1 of 1"
    assert fields["result"] == "5"
    assert fields["name"] == "worker_tasks.add"


def test_show_prints_the_expected_duration_of_a_pending_task(made: Made) -> None:
    """Issue 19: one run of worker_tasks.add succeeded, so its next one is expected to take as long."""
    done = run("show", "--db-url", made.url, made.pending)
    assert done.returncode == 0, done.stderr
    fields = dict(line.split(None, 1) for line in done.stdout.splitlines() if " " in line.strip())
    assert fields["status"] == "pending"
    expected = re.fullmatch(r"expected ~(\d+\.\d) s", fields["estimate"])  # the one run's duration
    assert expected is not None and float(expected.group(1)) < 1.0, fields["estimate"]
    finished = run("show", "--db-url", made.url, made.succeeded)
    assert "estimate" not in finished.stdout


def test_show_prints_the_error_and_remote_traceback(made: Made) -> None:
    done = run("show", "--db-url", made.url, made.failed)
    assert done.returncode == 0, done.stderr
    assert "status    failed" in done.stdout
    assert "error     ValueError: boom from the task" in done.stdout
    assert "Traceback (most recent call last)" in done.stdout
    assert "raise_value_error" in done.stdout
    assert not any(line.startswith("result") for line in done.stdout.splitlines())


def test_purge_older_than_zero_removes_finished_tasks_only(made: Made) -> None:
    done = run("purge", "--db-url", made.url, "--older-than", "0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "purged 2 finished tasks"
    listed = run("list", "--db-url", made.url)
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == [made.pending]
    again = run("purge", "--db-url", made.url, "--older-than", "0")
    assert again.stdout.strip().startswith("purged 0 finished tasks: no task has finished yet")


def test_purge_older_than_takes_the_durations_the_magics_take(made: Made) -> None:
    kept = run("purge", "--db-url", made.url, "--older-than", "1d")
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.strip().startswith("purged 0 finished tasks: 2 finished tasks kept")  # both just finished
    bad = run("purge", "--db-url", made.url, "--older-than", "soon")
    assert bad.returncode == 2
    assert "--older-than: invalid duration value: 'soon'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_show_of_an_unknown_id_is_a_one_line_error(made: Made) -> None:
    done = run("show", "--db-url", made.url, "no-such-task")
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "no-such-task" in lines[0]
    assert "Traceback" not in done.stderr


def test_a_bad_store_url_is_a_one_line_error(tmp_path: Path) -> None:
    done = run("list", "--db-url", "nosuchscheme://x")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    (tmp_path / "a-file").write_text("not a folder")
    missing = run("list", "--db-url", f"sqlite:///{tmp_path / 'a-file' / 'x.db'}")
    assert missing.stderr.startswith("no store at ")  # and none can be made there
    assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    assert "Traceback" not in missing.stderr


def test_python_m_omniq_nb_help() -> None:
    done = run("--help", module=True)
    assert done.returncode == 0, done.stderr
    for command in ("worker", "workers", "list", "show", "purge"):
        assert command in done.stdout
    worker = run("worker", "--help", module=True)
    assert worker.returncode == 0, worker.stderr
    for flag in ("--db-url", "--concurrency", "--kind", "--queue", "--lease", "--log-level", "--only-unowned"):
        assert flag in worker.stdout


def test_a_missing_command_is_a_usage_error() -> None:
    done = run()
    assert done.returncode == 2
    assert "usage:" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_nul_byte_in_db_url_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db-url", "sqlite:///a\x00b.db", "list"]) == 2  # argv cannot carry NUL: call main
    err = capsys.readouterr().err
    assert err.startswith("omniq-nb: ") and "NUL byte" in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lease", "0.001"], "omniq-nb: lease=0.001 is not valid: expected seconds >= 1"),
        (["--concurrency", "0"], "omniq-nb: concurrency=0 must be a whole number >= 1"),
        (["--queue", ""], "omniq-nb: queues=[''] must be one or more non-empty queue names"),
    ],
)
def test_a_bad_worker_flag_is_a_one_line_error(tmp_path: Path, flags: list[str], message: str) -> None:
    done = run("worker", "--db-url", f"sqlite:///{tmp_path / 'w.db'}", *flags)
    assert done.returncode == 2
    assert done.stderr.startswith(message), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


AGE_BY_8_DAYS = """UPDATE tasks SET finished_at = finished_at - 8 * 86400, purge_at = purge_at - 8 * 86400
WHERE finished_at IS NOT NULL"""


def age_finished_tasks(path: Path) -> None:
    """Make every finished task of the SQLite file at ``path`` look finished 8 days ago."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(AGE_BY_8_DAYS)


def test_purge_with_no_arguments_removes_finished_tasks_past_the_default_result_ttl(tmp_path: Path) -> None:
    """Issue 13: ``omniq-nb purge`` removed nothing (``purged 0``) however old the finished tasks."""
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    with OmniQ(db_url=url, poll_interval=0.05) as q:
        with WorkerPool(q, concurrency=4, kind="thread"):
            assert q.enqueue_many(wt.add, [(i, 1) for i in range(40)]).result(timeout=RUN_WAIT) == list(range(1, 41))
            kept = q.enqueue_call(wt.add, args=(1, 1), result_ttl=None)  # opted out of RESULT_TTL
            assert kept.result(timeout=RUN_WAIT) == 2
        waiting = q.enqueue_call(wt.add, args=(1, 1), queue="nobody")
    age_finished_tasks(path)

    done = run("purge", "--db-url", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "purged 40 finished tasks"

    nothing = run("purge", "--db-url", url)
    assert nothing.returncode == 0, nothing.stderr
    said = nothing.stdout.strip()
    assert said.startswith("purged 0 finished tasks: 1 finished task kept, none past its result_ttl (RESULT_TTL: 7d")
    assert "omniq-nb purge --older-than 7d" in said
    assert "omniq-nb purge --all" in said

    aged = run("purge", "--db-url", url, "--older-than", "7d")
    assert aged.stdout.strip() == "purged 1 finished task"
    left = run("list", "--db-url", url)
    assert [line.split()[0] for line in left.stdout.splitlines()[1:]] == [waiting.id]
    empty = run("purge", "--db-url", url)
    assert empty.stdout.strip().startswith("purged 0 finished tasks: no task has finished yet")
    assert "--all" in empty.stdout
    everything = run("purge", "--db-url", url, "--all")
    assert everything.stdout.strip() == "purged 1 task"


def start_worker(url: str, *flags: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p)
    return subprocess.Popen(
        [OMNIQ_NB, "worker", "--db-url", url, "--lease", "1", *flags],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def listed_workers(url: str) -> list[dict[str, Any]]:
    done = run("workers", "--db-url", url, "--json")
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


def test_workers_lists_a_worker_process_and_stop_makes_it_exit_0(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    empty = run("workers", "--db-url", url)
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.startswith("no live worker pools in this store")
    worker = start_worker(url, "--concurrency", "3", "--queue", "default", "--queue", "io", "--only-unowned")
    try:
        deadline = time.monotonic() + RUN_WAIT
        while not (pools := [p for p in listed_workers(url) if p["pid"] == worker.pid]):
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "the worker never registered"
        [pool] = pools
        assert (pool["concurrency"], pool["queues"], pool["kernel"], pool["stop_requested"]) == (
            3,
            ["default", "io"],
            None,
            False,
        )
        table = run("workers", "--db-url", url).stdout.splitlines()
        assert table[0].split()[:3] == ["ID", "KIND", "BUSY"]
        [row] = table[1:]
        assert row.split()[:3] == [pool["id"], pool["kind"], "0/3"] and row.endswith("all tasks")
        with OmniQ(db_url=url) as q:
            assert q.stop_worker(pool["id"]) is True
        _, err = worker.communicate(timeout=RUN_WAIT)
        assert worker.returncode == 0, err
        assert "asked to through the registry" in err
        assert listed_workers(url) == []
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()


def test_format_workers_marks_this_kernels_pool_and_a_stopping_one() -> None:
    now = datetime.now(timezone.utc)
    common: dict[str, Any] = {"host": "h", "kind": "thread", "concurrency": 4, "started_at": now, "heartbeat": now}
    pools = [
        WorkerInfo(id="aaaaaaaa", name="a", pid=1, queues=("default",), kernel="0123456789ab", running=2, **common),
        WorkerInfo(id="bbbbbbbb", name="b", pid=2, queues=("q1", "q2"), kernel="k", notebook="work/b.ipynb", **common),
        WorkerInfo(id="cccccccc", name="c", pid=3, queues=("default",), stop_requested=True, **common),
    ]
    header, mine, notebook, stopping = format_workers(pools, mine="aaaaaaaa").splitlines()
    assert header.split() == ["ID", "KIND", "BUSY", "QUEUES", "HOST:PID", "STARTED", "SEEN", "SERVES"]
    assert mine.split()[:5] == ["aaaaaaaa", "thread", "2/4", "default", "h:1"]
    assert mine.endswith("kernel 01234567 *")
    assert notebook.split()[3] == "q1,q2" and notebook.endswith("work/b.ipynb")
    assert stopping.endswith("all tasks (stopping)")
    assert format_workers([]).startswith("no live worker pools in this store")


def test_purge_cache_forgets_cached_results_and_deletes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    with OmniQ(db_url=url) as q, WorkerPool(q, concurrency=1):
        cached = q.enqueue_call(wt.add, args=(1, 2), cache=True)
        assert cached.result(timeout=30) == 3
    done = run("purge", "--db-url", url, "--cache")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "forgot 1 cache entry (the tasks and their results stay)"
    with OmniQ(db_url=url) as q:
        assert q.get(cached.id).result(timeout=0) == 3
        assert q.enqueue_call(wt.add, args=(1, 2), cache=True).id != cached.id


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/jbos.db", "sqlite:///{tmp}/nope/dir/x.db", "file://{tmp}/nostore"])
def test_inspecting_a_store_that_does_not_exist_creates_nothing_and_says_so(tmp_path: Path, url: str) -> None:
    """A mistyped --db-url made an empty store there, and the commands answered as if the tasks were gone."""
    url = url.format(tmp=tmp_path)
    listing = run("list", "--db-url", url)
    assert (listing.returncode, listing.stdout.split()[:2]) == (0, ["ID", "STATUS"])
    assert listing.stderr.strip() == f"no store at {url} (nothing was created; a queue or a worker creates it)"
    workers = run("workers", "--db-url", url)
    assert workers.returncode == 0 and "no store at" in workers.stderr
    purge = run("purge", "--all", "--db-url", url)
    assert (purge.returncode, purge.stdout.startswith("nothing purged: no store at")) == (0, True)
    show = run("show", "0123", "--db-url", url)
    assert (show.returncode, show.stderr.count("\n")) == (2, 1)
    assert show.stderr.startswith("omniq-nb: no task with id '0123': no store at")
    assert list(tmp_path.iterdir()) == []


def test_a_bad_list_limit_is_a_one_line_error(made: Made) -> None:
    done = run("list", "--limit", "0", "--db-url", made.url)
    assert (done.returncode, done.stderr) == (2, "omniq-nb: --limit 0: list at least 1 task\n")


def test_output_into_a_closed_pipe_ends_quietly(made: Made) -> None:
    """``omniq-nb show ID --output | head`` printed a BrokenPipeError traceback."""
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before the command writes
    try:
        command = [OMNIQ_NB, "list", "--db-url", made.url]
        done = subprocess.run(command, stdout=writer, stderr=subprocess.PIPE, text=True, timeout=RUN_WAIT)
    finally:
        os.close(writer)
    assert (done.returncode, done.stderr) == (141, "")
