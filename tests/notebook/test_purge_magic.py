"""``%omniq purge`` in a real kernel: no flags purge past result_ttl, and say why when nothing goes (issue 13)."""

from __future__ import annotations

from kernel_driver import LOAD, Kernel

TASKS = """\
@omniq.task
def add(a, b=1):
    return a + b

assert add.map(range(5)).result(timeout=60) == [1, 2, 3, 4, 5]
forever = add.options(result_ttl=None).submit(1, 1)
assert forever.result(timeout=60) == 2
"""

AGE = """\
import contextlib, sqlite3
with contextlib.closing(sqlite3.connect(".omniq/omniq.db")) as db, db:
    db.execute("UPDATE tasks SET finished_at = finished_at - 8 * 86400, purge_at = purge_at - 8 * 86400")
"""


def test_purge_without_flags_removes_finished_tasks_past_their_result_ttl(kernel: Kernel) -> None:
    kernel.run(LOAD)
    kernel.run(TASKS)
    kernel.run("%omniq workers stop")  # a pool purges too, once a minute: leave it to the magic
    kernel.run("waiting = add.options(queue='nobody').submit(1, 1)")
    kernel.run(AGE)

    assert kernel.run("%omniq purge").stdout == "purged 5 finished tasks\n"
    said = kernel.run("%omniq purge").stdout
    assert said.startswith("purged 0 finished tasks: 1 finished task kept, none past its result_ttl"), said
    assert "%omniq purge --older-than 7d" in said and "%omniq purge --all" in said
    narrowed = kernel.run("%omniq purge --older-than 7d --status failed").stdout
    assert narrowed.startswith("purged 0 finished tasks: no task has finished yet"), narrowed
    assert kernel.run("%omniq purge --older-than 7d").stdout == "purged 1 finished task\n"
    assert kernel.run("%omniq purge --all").stdout == "purged 1 task\n"
    assert kernel.value("[t.id for t in omniq.default_queue().list()]") == []
