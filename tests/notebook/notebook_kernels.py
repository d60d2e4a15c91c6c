"""Driving real Jupyter kernels in the notebook tests (ipykernel 7 and 6), with bounded waits.

Each kernel is launched from an explicit kernelspec (``argv`` names the Python to use), so
the test process's environment is never changed. A kernel runs in a fresh ``tmp_path``, so
its default store ``.omniq/omniq.db`` belongs to one test; a second kernel started in the
same folder shares that store (a "kernel restart" as the user sees it).

``OMNIQ_TEST_IPYKERNEL6_PYTHON`` names the Python of the ipykernel-6 environment (the
Makefile sets it). When it is missing the ipykernel-6 tests fail: CI must test both majors.

``Kernel.execute`` sends code and waits (bounded) for its reply and its ``idle`` status.
Every iopub message is kept, keyed by the ``msg_id`` of its parent cell, whichever cell is
being waited for, so tests can check which cell an output was sent to.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

IPYKERNEL6_VARIABLE = "OMNIQ_TEST_IPYKERNEL6_PYTHON"
STARTUP_TIMEOUT = 90.0
CELL_TIMEOUT = 90.0
KERNEL_ENV = {"OMNIQ_POLL_INTERVAL": "0.05", "OMNIQ_RETRY_BACKOFF": "0.05"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    """Return ``text`` without terminal colour codes (tracebacks are coloured)."""
    return _ANSI.sub("", text)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = predicate()
        if outcome:
            return outcome
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still not true after {timeout} s")
        time.sleep(poll)


def pid_alive(pid: int) -> bool:
    """Return True while process ``pid`` exists and is not a zombie (an unreaped corpse is gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return os.path.exists(f"/proc/{pid}") or not os.path.isdir("/proc")
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


@dataclass
class Cell:
    """One executed cell: its reply and every iopub message sent with it as parent."""

    msg_id: str
    kernel: Kernel
    reply: dict[str, Any] | None = None
    replied_at: float | None = None
    sent_at: float = field(default_factory=time.monotonic)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Return the iopub messages whose parent is this cell (so far)."""
        return self.kernel.by_parent[self.msg_id]

    @property
    def idle(self) -> bool:
        """Return True once the kernel said it is idle after this cell."""
        return any(
            m["msg_type"] == "status" and m["content"]["execution_state"] == "idle" for m in self.messages
        )

    @property
    def done(self) -> bool:
        """Return True once the cell's reply and its idle status arrived."""
        return self.reply is not None and self.idle

    def stream(self, name: str = "stdout") -> str:
        """Return all text this cell's output got on one stream."""
        return "".join(
            m["content"]["text"]
            for m in self.messages
            if m["msg_type"] == "stream" and m["content"]["name"] == name
        )

    @property
    def stdout(self) -> str:
        """Return this cell's stdout text."""
        return self.stream("stdout")

    @property
    def stderr(self) -> str:
        """Return this cell's stderr text."""
        return self.stream("stderr")

    @property
    def result(self) -> str | None:
        """Return the text/plain of this cell's execute_result, if any."""
        for m in self.messages:
            if m["msg_type"] == "execute_result":
                text: str = m["content"]["data"]["text/plain"]
                return text
        return None

    @property
    def view_model_id(self) -> str | None:
        """Return the model id of the widget this cell shows (as its value or a display), if any."""
        for m in self.messages:
            if m["msg_type"] in ("execute_result", "display_data"):
                view = m["content"]["data"].get("application/vnd.jupyter.widget-view+json")
                if view:
                    model_id: str = view["model_id"]
                    return model_id
        return None

    @property
    def displays(self) -> list[dict[str, Any]]:
        """Return the data of this cell's display_data messages."""
        return [m["content"]["data"] for m in self.messages if m["msg_type"] == "display_data"]

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Return the content of this cell's error messages."""
        return [m["content"] for m in self.messages if m["msg_type"] == "error"]

    @property
    def status(self) -> str:
        """Return the reply's status: ok, error or aborted."""
        assert self.reply is not None, "the cell has not replied yet"
        status: str = self.reply["status"]
        return status

    def wait(self, timeout: float = CELL_TIMEOUT) -> Cell:
        """Wait until the cell is done (reply and idle), bounded."""
        self.kernel.pump_until(lambda: self.done, timeout, f"cell {self.msg_id} to finish")
        return self

    def ok(self) -> Cell:
        """Assert the cell ran without an error; return it."""
        assert self.status == "ok", self.describe()
        assert not self.errors, self.describe()
        return self

    def describe(self) -> str:
        """Return a readable account of the cell's outputs (for assertion messages)."""
        parts = [f"reply={self.reply and self.reply.get('status')}", f"stdout={self.stdout!r}"]
        parts.append(f"stderr={self.stderr!r}")
        parts.append(f"result={self.result!r}")
        for error in self.errors:
            parts.append(strip_ansi("\n".join(error["traceback"]))[-3000:])
        return "\n".join(parts)


class Kernel:
    """A running kernel and a blocking client, with every iopub message recorded per parent cell."""

    def __init__(self, km: KernelManager, kc: BlockingKernelClient, cwd: Path, env: dict[str, str]) -> None:
        self.km, self.kc, self.cwd, self.env = km, kc, cwd, env
        self.by_parent: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self.iopub: list[dict[str, Any]] = []
        self.cells: dict[str, Cell] = {}
        self.replies: dict[str, dict[str, Any]] = {}

    @property
    def pid(self) -> int:
        """Return the kernel process's id."""
        provisioner: Any = self.km.provisioner
        pid: int = provisioner.process.pid
        return pid

    def pump(self, timeout: float = 0.05) -> None:
        """Read what the kernel sent on iopub and shell (waiting at most ``timeout`` for iopub)."""
        try:
            msg = self.kc.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            pass
        else:
            self._on_iopub(msg)
            while self.kc.iopub_channel.msg_ready():
                self._on_iopub(self.kc.get_iopub_msg(timeout=0))
        while self.kc.shell_channel.msg_ready():
            reply = self.kc.get_shell_msg(timeout=0)
            parent = reply["parent_header"].get("msg_id", "")
            self.replies[parent] = reply
            cell = self.cells.get(parent)
            if cell is not None:
                cell.reply = reply["content"]
                cell.replied_at = time.monotonic()

    def _on_iopub(self, msg: dict[str, Any]) -> None:
        msg["received_at"] = time.monotonic()
        self.iopub.append(msg)
        self.by_parent[msg["parent_header"].get("msg_id", "")].append(msg)

    def widget_states(self) -> dict[str, dict[str, Any]]:
        """Return the state of every widget model the kernel opened, with its updates applied in order."""
        states: dict[str, dict[str, Any]] = {}
        for msg in self.iopub:
            content = msg["content"]
            if msg["msg_type"] == "comm_open" and content.get("target_name") == "jupyter.widget":
                states[content["comm_id"]] = dict(content["data"].get("state", {}))
            elif msg["msg_type"] == "comm_msg" and content["comm_id"] in states:
                data = content["data"]
                if data.get("method") == "update":
                    states[content["comm_id"]].update(data.get("state", {}))
        return states

    def widget_outputs(self, model_id: str) -> list[dict[str, Any]]:
        """Return the outputs held by the Output widgets inside widget ``model_id`` (a view and its children)."""
        states = self.widget_states()
        outputs: list[dict[str, Any]] = []
        seen: set[str] = set()
        pending = [model_id]
        while pending:
            current = pending.pop()
            if current in seen or current not in states:
                continue
            seen.add(current)
            state = states[current]
            if state.get("_model_name") == "OutputModel":
                outputs.extend(state.get("outputs", []))
            for value in state.values():
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, str) and item.startswith("IPY_MODEL_"):
                        pending.append(item.removeprefix("IPY_MODEL_"))
        return outputs

    def widget_text(self, model_id: str, name: str = "stdout") -> str:
        """Return the stream text the Output widgets inside widget ``model_id`` hold."""
        return "".join(
            o.get("text", "")
            for o in self.widget_outputs(model_id)
            if o.get("output_type") == "stream" and o.get("name") == name
        )

    def pump_until(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Read messages until ``predicate()`` is truthy; fail the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            outcome = predicate()
            if outcome:
                return outcome
            if time.monotonic() > deadline:
                pytest.fail(f"waiting for {what}: still not there after {timeout} s")
            self.pump()

    def send(self, code: str) -> Cell:
        """Send ``code`` for execution and return its cell at once (not waiting for it)."""
        msg_id = self.kc.execute(code, allow_stdin=False, stop_on_error=False)
        cell = Cell(msg_id, self)
        self.cells[msg_id] = cell
        return cell

    def execute(self, code: str, timeout: float = CELL_TIMEOUT) -> Cell:
        """Run ``code`` and wait for it to finish (bounded); return its cell."""
        return self.send(code).wait(timeout)

    def run(self, code: str, timeout: float = CELL_TIMEOUT) -> Cell:
        """Run ``code``, assert it raised nothing, return its cell."""
        return self.execute(code, timeout).ok()

    def value(self, expression: str, timeout: float = CELL_TIMEOUT) -> Any:
        """Return the value of ``expression`` in the kernel (it must be JSON-serializable)."""
        cell = self.run(f"import json as _omniq_json\nprint(_omniq_json.dumps({expression}))", timeout)
        return json.loads(cell.stdout.strip().splitlines()[-1])

    def texts_with(self, needle: str) -> dict[str, str]:
        """Return, per parent msg_id, the stream text of every parent whose output contains ``needle``."""
        found: dict[str, str] = {}
        for parent, messages in list(self.by_parent.items()):
            text = "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")
            if needle in text:
                found[parent] = text
        return found

    def send_shell(self, msg_type: str, content: dict[str, Any]) -> str:
        """Send an arbitrary message on the shell channel (e.g. comm_msg); return its msg_id."""
        msg = self.kc.session.msg(msg_type, content)
        self.kc.shell_channel.send(msg)
        msg_id: str = msg["header"]["msg_id"]
        return msg_id

    def interrupt(self) -> None:
        """Interrupt the kernel as a frontend does (SIGINT to the kernel's process group)."""
        self.km.interrupt_kernel()

    def sigkill(self) -> None:
        """Kill the kernel process alone (not its process group), as when it crashes."""
        os.kill(self.pid, signal.SIGKILL)
        wait_until(lambda: not self.km.is_alive(), 30, "the killed kernel to be reported dead")

    def restart(self) -> None:
        """Restart the kernel as a frontend does (graceful shutdown, same cwd and env)."""
        self.km.restart_kernel(now=False)
        self.kc.wait_for_ready(timeout=STARTUP_TIMEOUT)

    def close(self) -> None:
        """Stop the channels and shut the kernel down (killed if it does not stop)."""
        try:
            self.kc.stop_channels()
        finally:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=not self.km.is_alive())


KernelFactory = Callable[..., Kernel]
"""``start_kernel(cwd=None, **env)``: start another kernel (the ``start_kernel`` fixture)."""

LOAD = "%load_ext omniq_nb\nimport omniq_nb as omniq"
