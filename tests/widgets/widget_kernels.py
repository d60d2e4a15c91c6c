"""Driving a real kernel for the widget tests: every iopub message is kept, with its arrival time.

A background thread drains iopub into one list, so a test can count the comm messages a
view sent over any stretch of time, and rebuild each widget's state as a frontend would
(``comm_open`` state, then each ``update`` merged in). Every wait is bounded polling on a
condition; nothing sleeps to synchronize.
"""

from __future__ import annotations

import ast
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

STARTUP_TIMEOUT = 90.0
CELL_TIMEOUT = 90.0
KERNEL_ENV = {"OMNIQ_POLL_INTERVAL": "0.05"}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_SPEC = "omniq-widgets-test"


def write_kernel_spec(root: Path) -> KernelSpecManager:
    """Write a kernelspec running this Python's ipykernel under ``root``; return a manager for it."""
    spec_dir = root / _SPEC
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "omniq widget tests",
        "language": "python",
        "interrupt_mode": "signal",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(root)], ensure_native_kernel=False)


@dataclass(frozen=True)
class Message:
    """One iopub message and when the test process received it (``time.monotonic()``)."""

    index: int
    at: float
    msg: dict[str, Any]

    @property
    def msg_type(self) -> str:
        return str(self.msg["msg_type"])

    @property
    def content(self) -> dict[str, Any]:
        return dict(self.msg["content"])

    @property
    def parent_id(self) -> str | None:
        return self.msg.get("parent_header", {}).get("msg_id")

    @property
    def comm_method(self) -> str | None:
        """Return ``"update"``, ``"custom"``, ... for a ``comm_msg``, else ``None``."""
        if self.msg_type != "comm_msg":
            return None
        return self.content.get("data", {}).get("method")


@dataclass
class Cell:
    """What one executed cell produced."""

    msg_id: str
    started: int  # index of the first iopub message that may belong to it
    reply: dict[str, Any]
    outputs: list[Message]

    def results(self) -> list[dict[str, Any]]:
        """Return the data bundles of ``execute_result`` and ``display_data`` outputs."""
        return [m.content["data"] for m in self.outputs if m.msg_type in ("execute_result", "display_data")]

    def widget_roots(self) -> list[str]:
        """Return the model ids of the widgets the cell displayed."""
        return [data[WIDGET_VIEW]["model_id"] for data in self.results() if WIDGET_VIEW in data]

    def stdout(self) -> str:
        return "".join(m.content["text"] for m in self.outputs if m.msg_type == "stream")


class Kernel:
    """A started kernel with a client and an iopub recorder."""

    def __init__(self, km: KernelManager, kc: BlockingKernelClient) -> None:
        self.km, self.kc = km, kc
        self._messages: list[Message] = []
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="iopub-recorder", daemon=True)
        self._thread.start()

    # -- recording -------------------------------------------------------------------------
    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.kc.get_iopub_msg(timeout=0.05)
            except queue.Empty:
                continue
            except Exception:  # the client is closing
                if self._stop.is_set():
                    return
                raise
            with self._lock:
                self._messages.append(Message(len(self._messages), time.monotonic(), msg))
                self._lock.notify_all()

    @property
    def messages(self) -> list[Message]:
        with self._lock:
            return list(self._messages)

    def mark(self) -> int:
        """Return the index the next recorded message will get."""
        with self._lock:
            return len(self._messages)

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on each new message, and at least every 0.1 s)."""
        deadline = time.monotonic() + timeout
        while True:
            outcome = predicate()
            if outcome:
                return outcome
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"{what}: still not true after {timeout} s", pytrace=False)
            with self._lock:
                self._lock.wait(min(left, 0.1))

    # -- executing -------------------------------------------------------------------------
    def execute(self, code: str, *, timeout: float = CELL_TIMEOUT, allow_error: bool = False, **kwargs: Any) -> Cell:
        """Run ``code``; wait (bounded) for its reply and its ``idle`` status; fail on an error unless allowed."""
        started = self.mark()
        msg_id = self.kc.execute(code, **kwargs)
        reply = self._reply(msg_id, timeout)

        def idle() -> bool:
            return any(
                m.parent_id == msg_id and m.msg_type == "status" and m.content["execution_state"] == "idle"
                for m in self.messages[started:]
            )

        self.wait_for(idle, timeout, f"the cell {code[:60]!r} to finish")
        outputs = [m for m in self.messages[started:] if m.parent_id == msg_id]
        errors = [m.content for m in outputs if m.msg_type == "error"]
        if not allow_error and (errors or reply["status"] != "ok"):
            shown = "\n".join("\n".join(e["traceback"]) for e in errors) or str(reply)
            pytest.fail(f"the cell {code[:60]!r} failed:\n{shown}", pytrace=False)
        return Cell(msg_id, started, reply, outputs)

    def _reply(self, msg_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no execute_reply within {timeout} s", pytrace=False)
            try:
                msg = self.kc.get_shell_msg(timeout=left)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return dict(msg["content"])

    def value(self, expression: str) -> Any:
        """Evaluate ``expression`` in the kernel (a user expression: nothing is displayed) and return it."""
        cell = self.execute("", user_expressions={"v": expression})
        found = cell.reply["user_expressions"]["v"]
        if found["status"] != "ok":
            pytest.fail(f"{expression!r} raised {found.get('ename')}: {found.get('evalue')}", pytrace=False)
        return ast.literal_eval(found["data"]["text/plain"])

    def send_comm_msg(self, comm_id: str, data: dict[str, Any]) -> None:
        """Send a ``comm_msg`` from the "frontend" (as a browser does when a button is clicked)."""
        msg = self.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        self.kc.shell_channel.send(msg)

    # -- widgets as a frontend sees them ---------------------------------------------------
    def widget_states(self, until: int | None = None) -> dict[str, dict[str, Any]]:
        """Return each widget's state after the messages before index ``until`` (all by default)."""
        states: dict[str, dict[str, Any]] = {}
        for message in self.messages[:until]:
            content = message.content
            if message.msg_type == "comm_open" and content.get("target_name") == "jupyter.widget":
                states[content["comm_id"]] = dict(content["data"]["state"])
            elif message.comm_method == "update" and content["comm_id"] in states:
                states[content["comm_id"]].update(content["data"]["state"])
        return states

    def tree(self, root: str, states: dict[str, dict[str, Any]] | None = None) -> list[str]:
        """Return ``root`` and every widget it refers to (children, layouts, styles), depth first."""
        states = self.widget_states() if states is None else states
        found: list[str] = []
        todo = [root]
        while todo:
            model = todo.pop()
            if model in found or model not in states:
                continue
            found.append(model)
            todo.extend(reversed(list(_references(states[model].values()))))
        return found

    def html_of(self, root: str) -> list[str]:
        """Return the values of the HTML widgets under ``root``, in display order."""
        states = self.widget_states()
        return [states[m]["value"] for m in self.tree(root, states) if states[m].get("_model_name") == "HTMLModel"]

    def children(self, root: str) -> list[str]:
        """Return the model ids of a box's children."""
        return [c.removeprefix("IPY_MODEL_") for c in self.widget_states()[root]["children"]]

    def updates(self, comm_ids: Iterable[str] | None = None, start: int = 0, stop: int | None = None) -> list[Message]:
        """Return the ``update`` comm messages between two marks, for some widgets or all."""
        wanted = None if comm_ids is None else set(comm_ids)
        return [
            m
            for m in self.messages[start:stop]
            if m.comm_method == "update" and (wanted is None or m.content["comm_id"] in wanted)
        ]

    def opened(self, start: int = 0, stop: int | None = None) -> list[Message]:
        """Return the widget ``comm_open`` messages between two marks."""
        return [
            m
            for m in self.messages[start:stop]
            if m.msg_type == "comm_open" and m.content.get("target_name") == "jupyter.widget"
        ]

    def close(self) -> None:
        """Shut the kernel down (gracefully, then for good) and stop the recorder."""
        try:
            self.km.shutdown_kernel(now=False)
        finally:
            self._stop.set()
            self._thread.join(timeout=5)
            self.kc.stop_channels()


def _references(values: Iterable[Any]) -> Iterable[str]:
    for value in values:
        if isinstance(value, str) and value.startswith("IPY_MODEL_"):
            yield value.removeprefix("IPY_MODEL_")
        elif isinstance(value, list):
            yield from _references(value)


def start_kernel(spec_manager: KernelSpecManager, cwd: Path, **env: str) -> Kernel:
    """Start a kernel in ``cwd`` with ``KERNEL_ENV`` and ``env`` on top of this process's environment."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    environment.update(KERNEL_ENV)
    environment.update(env)
    environment.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    km = KernelManager(kernel_name=_SPEC, kernel_spec_manager=spec_manager)
    km.shutdown_wait_time = 15.0
    km.start_kernel(cwd=str(cwd), env=environment)
    kc: BlockingKernelClient = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=STARTUP_TIMEOUT)
    except BaseException:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        raise
    return Kernel(km, kc)
