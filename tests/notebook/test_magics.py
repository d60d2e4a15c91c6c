"""The ``%omniq`` line magics in a real kernel: workers, list, show, cancel, retry, purge, attach errors, help."""

from __future__ import annotations

from kernel_driver import LOAD, Kernel, KernelFactory, strip_ansi

TASKS = """\
import os

@omniq.task
def add(a, b):
    return a + b

@omniq.task(retries=0)
def fails_until_go():
    if not os.path.exists("go"):
        raise RuntimeError("no go yet")
    return "went"

ok = add.submit(2, 3)
ok.result(timeout=60)
bad = fails_until_go.submit()
try:
    bad.result(timeout=60)
except omniq.TaskFailed:
    pass
later = add.options(delay=3600).submit(1, 1)
"""

BAD_LINES = [
    "%omniq list --bogus",
    "%omniq workers start --kind nope",
    "%omniq workers start -n zero",
    "%omniq show nope",
    "%omniq cancel nope",
    "%omniq retry nope",
    "%omniq show",
    "%omniq frobnicate",
    "%omniq purge --older-than soon",
    "%omniq dashboard now",
    "%omniq attach --since soon",
    "%omniq attach --since 2h --all",
    "%omniq attach now",
    "%omniq",
]


def assert_one_line_usage_error(kernel: Kernel, line: str) -> None:
    cell = kernel.execute(line)
    assert cell.errors == [], f"{line}: a traceback was shown\n{cell.describe()}"
    text = strip_ansi(cell.stderr)
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"{line}: {text!r}"
    assert lines[0].startswith("UsageError: "), f"{line}: {text!r}"
    assert "Traceback" not in text
    assert "omniq_nb/" not in text
    assert cell.stdout == ""


def test_line_magics(kernel: Kernel) -> None:
    kernel.run(LOAD)
    kernel.run("from omniq_nb.notebook.runner import KernelRunner\nold = KernelRunner.current.pool")
    started = kernel.run("%omniq workers start -n 2 --kind thread")
    assert started.stdout.startswith("started 2 thread workers (")
    assert kernel.value(
        "[old is not None, old.running, KernelRunner.current.pool is old, "
        "KernelRunner.current.pool.concurrency, KernelRunner.current.pool.kind]"
    ) == [True, False, False, 2, "thread"]
    assert kernel.run("%omniq workers status").stdout.splitlines()[0] == "2 thread workers, 0 busy, queues default"

    kernel.run(TASKS)
    ok_id, bad_id, later_id = kernel.value("[ok.id, bad.id, later.id]")
    assert kernel.value("[ok.status.value, bad.status.value, later.status.value]") == [
        "succeeded",
        "failed",
        "pending",
    ]

    listed = kernel.run("%omniq list --status succeeded").stdout.strip().splitlines()
    assert listed[0].split() == ["ID", "STATUS", "ATTEMPT", "QUEUE", "CREATED", "NAME"]
    assert [row.split()[:3] for row in listed[1:]] == [[ok_id, "succeeded", "1/1"]]

    shown = kernel.run(f"%omniq show {ok_id}").stdout.splitlines()
    assert shown[0].split() == ["id", ok_id]
    assert ["status", "succeeded"] in [line.split() for line in shown]
    assert ["result", "5"] in [line.split() for line in shown]

    failed = kernel.run(f"%omniq show {bad_id}").stdout
    assert "error     RuntimeError: no go yet" in failed

    assert kernel.run(f"%omniq cancel {later_id}").stdout == f"cancelled {later_id}\n"
    assert kernel.value(f"omniq.get({later_id!r}).status.value") == "cancelled"

    (kernel.cwd / "go").touch()
    retried = kernel.run(f"again = %omniq retry {bad_id}")
    assert retried.stderr == ""
    assert kernel.run("again.result(timeout=60)").result == "'went'"
    assert kernel.value(f"[again.id == {bad_id!r}, omniq.get({bad_id!r}).status.value]") == [True, "succeeded"]

    # ok, bad (now succeeded) and later (cancelled) have finished
    assert kernel.run("%omniq purge --older-than 0s").stdout == "purged 3 finished tasks\n"
    assert kernel.run("%omniq list").stdout.strip().splitlines()[1:] == []

    for line in BAD_LINES:
        assert_one_line_usage_error(kernel, line)

    helped = kernel.run("%omniq?")
    assert helped.reply is not None
    pages = [p["data"]["text/plain"] for p in helped.reply.get("payload", []) if p.get("source") == "page"]
    assert len(pages) == 1, helped.reply
    doc = strip_ansi(pages[0])
    commands = ["enqueue", "workers", "start", "stop", "status", "list", "show", "cancel", "retry", "purge"]
    for command in [*commands, "dashboard", "attach"]:
        assert command in doc, command
    for flag in ("--as", "--retries", "--kind", "--older-than", "--status", "--since"):
        assert flag in doc, flag

    dashboard = kernel.run("%omniq dashboard")
    assert dashboard.view_model_id is not None, dashboard.describe()

    # loading the extension again changes nothing (IPython's own guard, and omniq_nb's behind it)
    kernel.run("pool = KernelRunner.current.pool\nrunner = KernelRunner.current")
    again = kernel.run("%load_ext omniq_nb")
    assert again.stderr == ""
    kernel.run("omniq.load_ipython_extension(get_ipython())")
    assert kernel.value("[KernelRunner.current is runner, KernelRunner.current.pool is pool, pool.running]") == [
        True,
        True,
        True,
    ]
    assert kernel.run("add.submit(1, 2).result(timeout=60)").result == "3"
    # and a reload gives a working runner and pool
    kernel.run("%reload_ext omniq_nb")
    assert kernel.value("[KernelRunner.current is runner, pool.running, KernelRunner.current.pool.running]") == [
        False,
        False,
        True,
    ]
    assert kernel.run("add.submit(2, 2).result(timeout=60)").result == "4"


def test_no_pool_until_started_when_autostart_is_off(start_kernel: KernelFactory) -> None:
    kernel = start_kernel(OMNIQ_AUTOSTART="0")
    kernel.run(LOAD)
    status = kernel.run("%omniq workers status").stdout
    assert status.splitlines()[0] == "no workers running in this kernel (start them with %omniq workers start)"
    kernel.run("@omniq.task\ndef add(a, b):\n    return a + b\nh = add.submit(1, 2)")
    waited = kernel.execute("h.result(timeout=1)")
    assert [error["ename"] for error in waited.errors] == ["TimeoutError"]
    assert kernel.value("h.status.value") == "pending"

    assert kernel.run("%omniq workers start -n 1").stdout.startswith("started 1 thread workers (")
    assert kernel.run("h.result(timeout=60)").result == "3"
    assert kernel.run("%omniq workers status").stdout.splitlines()[0] == "1 thread workers, 0 busy, queues default"
