"""``KEEPALIVE``: activity signals while the kernel's pool works; a real jupyter_server therefore does not cull.

In a kernel (ipykernel 7 and 6), the signals are ``comm_msg`` for the ``omniq-keepalive`` comm,
with no parent and no ``status`` message beside them, sent only while a task runs. Then a real
jupyter_server (ipykernel 7 only: the server's kernel runs this Python) culls kernels idle for
``CULL_TIMEOUT`` s (checked every ``CULL_INTERVAL`` s). A kernel made through its REST API loads
the extension with ``KEEPALIVE=2`` and submits a task that runs well past the timeout, through a
client of its own on the kernel's connection file (the server does not count it as a
connection, so the culler may cull). The kernel must live until the task ends, its
``last_activity`` moving on meanwhile, and be culled within a bounded time once its pool is idle;
meanwhile the same kernel with ``KEEPALIVE=0`` (the control) is culled while its task runs.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from kernel_driver import LOAD, STARTUP_TIMEOUT, KernelFactory, Message
from polling import wait_until_sync
from processes import Child, Processes

CULL_TIMEOUT = 8
CULL_INTERVAL = 1
KEEPALIVE = 2
TASK_SECONDS = CULL_TIMEOUT * 2  # the culler would have culled the kernel twice over without the signals
TOKEN = "omniq-test-token"
SPEC = "omniq-keepalive"  # KEEPALIVE=2
SILENT_SPEC = "omniq-silent"  # KEEPALIVE=0: the control

LONG_TASK = f"""\
@omniq.task
def long_task():
    import pathlib, time
    time.sleep({TASK_SECONDS})
    pathlib.Path("done").write_text(str(time.time()))

h = long_task.submit()
"""


WAIT_FOR_GO = """\
@omniq.task
def wait_for_go():
    import os, time
    deadline = time.time() + 60
    while not os.path.exists("go") and time.time() < deadline:
        time.sleep(0.02)
"""


def signals(messages: list[Message]) -> list[Message]:
    return [m for m in messages if m.msg_type == "comm_msg" and m.content.get("comm_id") == "omniq-keepalive"]


def test_the_kernel_signals_activity_while_its_pool_works_and_only_then(start_kernel: KernelFactory) -> None:
    kernel = start_kernel(OMNIQ_KEEPALIVE="0.1", OMNIQ_INTERRUPT="cancel")  # both settings from the environment
    kernel.run(LOAD)
    assert kernel.run("%omniq config").stdout == (
        "interrupt=cancel\nkeepalive=0.1\noutput_limit=1048576\noutput_lines=10000\n"
    )
    kernel.run(WAIT_FOR_GO + "from omniq_nb.notebook.runner import KernelRunner")
    working = kernel.mark()
    kernel.run("h = wait_for_go.submit()")
    kernel.wait_for(lambda: len(signals(kernel.messages[working:])) >= 3, 30, "three activity signals")
    sent = signals(kernel.messages[working:])
    assert all(m.parent_id == "" and m.content["data"] == {} for m in sent)
    # the busy indicator is left alone: every status message belongs to a request
    assert all(m.parent_id for m in kernel.messages[working:] if m.msg_type == "status")

    (kernel.cwd / "go").touch()
    kernel.run("h.result(timeout=30)")
    kernel.wait_for(lambda: kernel.value("KernelRunner.current.pool.busy") == 0, 30, "the pool to be idle")
    idle = kernel.mark()
    kernel.run("import time\ntime.sleep(1)")  # ten intervals, even with the loop blocked
    assert signals(kernel.messages[idle:]) == []
    kernel.run("%omniq config keepalive=none")
    kernel.run("omniq.task(time.sleep).submit(1).result(timeout=30)")  # a task of ten intervals, now silent
    assert signals(kernel.messages[idle:]) == []


class Server:
    """A jupyter_server child with token auth, and its REST API."""

    def __init__(self, child: Child, port: int, root: Path) -> None:
        self.child, self.port, self.root = child, port, root
        self.runtime = root / "runtime"

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the REST API; return the decoded JSON (``None`` on 404 or an empty reply)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                text = reply.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return json.loads(text) if text else None

    def up(self) -> bool:
        """Return whether the server answers (failing at once if it died)."""
        try:
            return self.api("GET", "/api/status") is not None
        except OSError:
            if not self.child.alive():
                raise AssertionError(f"jupyter_server exited:\n{self.child.text()[-4000:]}") from None
            return False

    def kernel(self, kernel_id: str) -> dict[str, Any] | None:
        """Return the kernel's model (``last_activity``, ``execution_state``), or ``None`` once it is gone."""
        found: dict[str, Any] | None = self.api("GET", f"/api/kernels/{kernel_id}")
        return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A jupyter_server culling idle kernels after ``CULL_TIMEOUT`` s, its dirs and kernelspec in ``tmp_path``."""
    for name, keepalive in ((SPEC, KEEPALIVE), (SILENT_SPEC, 0)):
        spec_dir = tmp_path / "data" / "kernels" / name
        spec_dir.mkdir(parents=True)
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"omniq keepalive={keepalive}",
            "language": "python",
            "env": {"OMNIQ_KEEPALIVE": str(keepalive)},
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
    processes = Processes(tmp_path, wait_until_sync)
    env = processes.env(
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        JUPYTER_PATH=str(tmp_path / "data"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_PLATFORM_DIRS="1",
    )
    port = free_port()
    args = [
        "-m",
        "jupyter_server",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={TOKEN}",
        "--ServerApp.open_browser=False",
        "--allow-root",
        f"--ServerApp.root_dir={tmp_path}",
        f"--MappingKernelManager.cull_idle_timeout={CULL_TIMEOUT}",
        f"--MappingKernelManager.cull_interval={CULL_INTERVAL}",
    ]
    child = processes.start(args, name="jupyter-server", env=env, program=(sys.executable,))
    running = Server(child, port, tmp_path)
    try:
        wait_until_sync(running.up, STARTUP_TIMEOUT, "jupyter_server to answer", poll=0.1)
        yield running
    finally:
        if child.alive():
            for model in running.api("GET", "/api/kernels") or []:
                running.api("DELETE", f"/api/kernels/{model['id']}")
            child.terminate()
        processes.close()


def activity(model: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(model["last_activity"].replace("Z", "+00:00"))


def launch(server: Server, spec: str) -> str:
    """Start a kernel of ``spec`` in folder ``spec`` and submit the long task there; return the kernel's id."""
    (server.root / spec).mkdir()
    kernel_id: str = server.api("POST", "/api/kernels", {"name": spec, "path": spec})["id"]
    client = BlockingKernelClient()
    client.load_connection_file(str(server.runtime / f"kernel-{kernel_id}.json"))
    client.start_channels()
    try:
        client.wait_for_ready(timeout=STARTUP_TIMEOUT)
        reply = client.execute_interactive(f"{LOAD}\n{LONG_TASK}", timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        client.stop_channels()  # from now on nothing but the pool's keepalive talks to the server
    return kernel_id


def test_a_working_kernel_is_not_culled_and_an_idle_one_is(server: Server) -> None:
    silent = launch(server, SILENT_SPEC)  # first, so it is culled well before the other's task ends
    kept = launch(server, SPEC)
    submitted = time.monotonic()
    first = server.kernel(kept)
    assert first is not None
    seen: list[datetime] = []
    silent_culled_working: list[bool] = []

    def task_done() -> bool:
        model = server.kernel(kept)
        assert model is not None, f"the kernel was culled while its task ran:\n{server.child.text()[-3000:]}"
        seen.append(activity(model))
        if not silent_culled_working and server.kernel(silent) is None:
            silent_culled_working.append(not (server.root / SILENT_SPEC / "done").exists())
        return (server.root / SPEC / "done").exists()

    wait_until_sync(task_done, TASK_SECONDS + 30, "the task to end", poll=0.2)
    assert time.monotonic() - submitted > CULL_TIMEOUT + CULL_INTERVAL  # the culler had its chances
    assert max(seen) > activity(first)  # the signals moved last_activity on
    assert silent_culled_working == [True]  # without them, the same kernel was culled while its task ran

    ended = time.monotonic()
    wait_until_sync(lambda: server.kernel(kept) is None, CULL_TIMEOUT + KEEPALIVE + 15, "the idle kernel culled")
    assert time.monotonic() - ended >= CULL_TIMEOUT - KEEPALIVE - CULL_INTERVAL  # culled for idleness, not at once
    assert server.child.text().count("seconds of inactivity") == 2
