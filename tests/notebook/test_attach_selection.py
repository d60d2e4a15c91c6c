"""What ``%omniq attach`` takes from a store's tasks, and when it says a function's source changed (no kernel)."""

from __future__ import annotations

import linecache
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from omniq_nb.models import Task, TaskStatus, new_task_id
from omniq_nb.notebook.attach import earlier_tasks, newest_by_name, source_notes
from omniq_nb.notebook.origin import Origin
from omniq_nb.serialization import BlobSerializer

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
HERE = Origin("k3", "", "/work", "a.ipynb")


def task(
    origin: str | None,
    *,
    age: float = 60,
    name: str = "cell",
    series: str | None = None,
    status: TaskStatus = TaskStatus.SUCCEEDED,
) -> Task:
    return Task(
        id=new_task_id(),
        name=name,
        eta=NOW,
        created_at=NOW - timedelta(seconds=age),
        origin=origin,
        series=series,
        status=status,
    )


def launched(
    kernel: str, *, notebook: str | None = "a.ipynb", directory: str = "/work", name: str | None = None
) -> str:
    return Origin(kernel, "m1", directory, notebook, name).text()


def test_this_notebooks_tasks_of_other_kernels_unfinished_or_in_the_window_newest_run_of_a_series() -> None:
    newest_first = [
        mine := task(launched("k3")),  # this kernel's own
        b := task(launched("k2", notebook="b.ipynb")),  # another notebook, same folder
        elsewhere := task(launched("k2", directory="/other")),
        old_format := task("k1:m1"),
        job := task(launched("k2", name="job"), age=120),
        run_2 := task(launched("k1"), age=200, series="s"),
        run_1 := task(launched("k1"), age=300, series="s"),
        first_job := task(launched("k1", name="job"), age=400),
        still_running := task(launched("k1"), age=90_000, status=TaskStatus.RUNNING),
        too_old := task(launched("k1"), age=90_000),
    ]
    found = earlier_tasks(newest_first, HERE, since=NOW - timedelta(days=1))
    assert found == [still_running, first_job, run_2, job]
    assert too_old in earlier_tasks(newest_first, HERE, since=None)
    assert not {mine.id, b.id, elsewhere.id, old_format.id, run_1.id} & {t.id for t in found}
    assert newest_by_name(found) == {"job": job}


def define(source: str, filename: str) -> Any:
    """Define a function as a notebook cell does: its source in ``linecache``, its module ``__main__``."""
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, filename, "exec"), namespace)
    return namespace["double"]


def test_a_function_redefined_since_it_was_submitted_is_noted_and_an_unreadable_payload_never_fails() -> None:
    submitted = define("def double(x):\n    return 2 * x\n", "<attach-test cell 1>")
    same = define("def double(x):\n    return 2 * x\n", "<attach-test cell 2>")
    changed = define("def double(x):\n    return x + x\n", "<attach-test cell 3>")
    serializer = BlobSerializer()
    tasks = [
        task(None, name="double"),  # older: only the newest of a name is read
        msgspec.structs.replace(task(None, name="double"), payload=serializer.dump_call(submitted, (1,), {})),
        task(None, name="cell job"),  # no function of that name here: not read
    ]
    assert source_notes(tasks, {"double": same}, serializer) == []
    assert source_notes(tasks, {"double": changed}, serializer) == ["double: source changed since submitted"]
    signed = BlobSerializer("a secret")
    assert source_notes(tasks, {"double": changed}, signed) == [
        "double: source not compared (its payload cannot be read here: SignatureError)"
    ]


def test_a_function_a_batch_kept_in_the_store_is_compared_too() -> None:
    """A ``.map()`` row names its function by digest: the store's kept bytes are what is compared."""
    submitted = define("def double(x):\n    return 2 * x\n", "<attach-test cell 4>")
    changed = define("def double(x):\n    return x + x\n", "<attach-test cell 5>")
    serializer = BlobSerializer()
    shared = serializer.share_callable(submitted)
    [payload] = serializer.dump_calls(submitted, [((1,), {})], shared)
    tasks = [msgspec.structs.replace(task(None, name="double"), payload=payload)]
    kept = {shared.digest: shared.body}
    assert source_notes(tasks, {"double": changed}, serializer, kept) == ["double: source changed since submitted"]
    assert source_notes(tasks, {"double": changed}, serializer, {}) == [
        "double: source not compared (its payload cannot be read here: CallableMissing)"
    ]
