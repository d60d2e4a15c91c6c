"""The kernel stays responsive while the in-kernel pool runs, and while a cell waits on a result."""

from __future__ import annotations

from kernel_driver import LOAD, Kernel

NAP = """\
@omniq.task
def nap(i):
    import time
    time.sleep(2)
    return time.time()
"""


def test_a_trivial_cell_completes_while_the_pool_runs_tasks(kernel: Kernel) -> None:
    kernel.run(LOAD)
    kernel.run("%omniq workers start -n 4 --kind thread")
    kernel.run(NAP)
    kernel.run("hs = nap.map(range(4))")
    kernel.wait_for(
        lambda: kernel.value("sum(x.status.value == 'running' for x in hs.handles)") == 4,
        30,
        "the 4 tasks to be running",
    )

    trivial = kernel.run("import time as _t\n_trivial_at = _t.time()\n1+1")
    assert trivial.result == "2"
    assert kernel.value("[min(hs.result(timeout=60)) > _trivial_at, [x.status.value for x in hs.handles]]") == [
        True,
        ["succeeded"] * 4,
    ]
    # the store agrees: every task finished after the trivial cell ran
    assert kernel.value("all(x.task.finished_at.timestamp() > _trivial_at for x in hs.handles)") is True


WIDGET = """\
import ipywidgets as widgets
slider = widgets.IntSlider(value=1)
seen = []
slider.observe(lambda change: seen.append([change["new"], h.done()]), "value")
print(slider.comm.comm_id)
"""

THREE_SECONDS = """\
@omniq.task
def three_seconds():
    import time
    time.sleep(3)
    return "slept"

h = three_seconds.submit()
"""


def test_a_blocking_result_keeps_serving_comm_messages_and_loses_no_cell(kernel: Kernel) -> None:
    kernel.run(LOAD)
    kernel.run(THREE_SECONDS)
    comm_id = kernel.run(WIDGET).stdout.strip()
    assert comm_id

    waiting = kernel.send("print('waiting', flush=True)\nh.result(timeout=60)")
    kernel.wait_for(lambda: "waiting" in waiting.stdout, 30, "the cell to start waiting")
    update = {"method": "update", "state": {"value": 42}, "buffer_paths": []}
    kernel.send_shell("comm_msg", {"comm_id": comm_id, "data": update})
    plain = kernel.send("ran_after_wait = h.done()\n'plain'")

    waiting.wait()
    assert waiting.status == "ok", waiting.describe()
    assert waiting.result == "'slept'"
    plain.wait()
    assert plain.status == "ok", plain.describe()
    assert plain.result == "'plain'"
    assert plain.reply is not None
    assert waiting.reply is not None
    assert plain.reply["execution_count"] == waiting.reply["execution_count"] + 1
    assert kernel.value("ran_after_wait") is True

    # the update reached the widget once, DURING the wait: the task had not finished yet
    assert kernel.value("slider.value") == 42
    assert kernel.value("seen") == [[42, False]]
