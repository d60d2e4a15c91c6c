"""One driver for real Jupyter kernels: the notebook tests, the widget tests and ``benchmarks/bench_notebook.py``.

A kernel is launched from an explicit kernelspec whose ``argv`` names the Python to use
(``write_kernel_spec``), so the test process's environment is never changed. ipykernel 7 is
this Python's; ipykernel 6 is the Python named by ``OMNIQ_TEST_IPYKERNEL6_PYTHON``
(``ipykernel_python``; the Makefile sets it, and a missing one fails the ipykernel-6 tests: CI
must test both majors). ``Kernels.start`` checks that a started kernel runs the major asked.

A ``Kernel`` keeps every iopub message, in arrival order and per parent cell: a background
thread drains iopub (so each ``Message`` carries the time it arrived, whatever the test
thread was doing), while shell replies are read by the thread that waits
(``Kernel.wait_for``). From these a test can ask what one ``Cell`` printed, displayed or
raised, and rebuild every widget's state as a frontend would (``comm_open`` state, then each
``update`` merged in). Every wait is bounded polling on a condition; nothing sleeps to
synchronize.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import queue
import re
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from polling import wait_until_sync

IPYKERNEL6_VARIABLE = "OMNIQ_TEST_IPYKERNEL6_PYTHON"
STARTUP_TIMEOUT = 90.0
CELL_TIMEOUT = 90.0
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
LOAD = "%load_ext omniq_nb\nimport omniq_nb as omniq"
_POLL = 0.01  # seconds a wait blocks on the shell channel before checking its condition again
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# read at import: the autouse ``isolated_env`` fixture clears every OMNIQ_* variable before tests run
_IPYKERNEL6_PYTHON = os.environ.get(IPYKERNEL6_VARIABLE)


# --- helpers ---------------------------------------------------------------------------------------


def strip_ansi(text: str) -> str:
    """Return ``text`` without terminal colour codes (tracebacks are coloured)."""
    return _ANSI.sub("", text)


wait_until = functools.partial(wait_until_sync, poll=0.05)
"""``wait_until(predicate, timeout, what)``: the bounded blocking poll, every 50 ms (checks here run cells)."""


# --- launching -------------------------------------------------------------------------------------


def ipykernel_python(major: int) -> str:
    """Return the Python whose ipykernel has ``major``: this one for 7, ``OMNIQ_TEST_IPYKERNEL6_PYTHON`` for 6."""
    if major == 7:
        return sys.executable
    python = _IPYKERNEL6_PYTHON
    if not python:
        pytest.fail(
            f"{IPYKERNEL6_VARIABLE} is not set: point it at the python of an environment with "
            "ipykernel 6 and omniq_nb installed (the Makefile does); both ipykernel majors must be tested",
            pytrace=False,
        )
    if not os.access(python, os.X_OK):
        pytest.fail(f"{IPYKERNEL6_VARIABLE}={python!r} is not an executable python", pytrace=False)
    return python


# What ``python -m ipykernel_launcher`` does, after asking faulthandler to write every thread's
# stack to ``<connection file>.stacks`` on SIGUSR2: a cell that hangs shows where (``stacks``).
_LAUNCHER = """\
import faulthandler, signal, sys
if sys.path and sys.path[0] == "":
    del sys.path[0]
_stacks = open(sys.argv[sys.argv.index("-f") + 1] + ".stacks", "w")
faulthandler.register(signal.SIGUSR2, file=_stacks, all_threads=True)
from ipykernel import kernelapp
kernelapp.launch_new_instance()
"""


def write_kernel_spec(root: Path, name: str, python: str = sys.executable) -> KernelSpecManager:
    """Write kernelspec ``name`` (ipykernel on ``python``, stacks on SIGUSR2) under ``root``; return its manager."""
    spec_dir = root / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [python, "-c", _LAUNCHER, "-f", "{connection_file}"],
        "display_name": f"omniq test kernel {name}",
        "language": "python",
        "interrupt_mode": "signal",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(root)], ensure_native_kernel=False)


def kernel_environment(env: dict[str, str]) -> dict[str, str]:
    """Return this process's environment without OMNIQ_* variables, with ``env`` on top."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    environment.update(env)
    environment.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return environment


def start_kernel(specs: KernelSpecManager, name: str, cwd: Path, env: dict[str, str]) -> Kernel:
    """Start kernelspec ``name`` in ``cwd`` with ``kernel_environment(env)``; wait (bounded) until it is ready."""
    environment = kernel_environment(env)
    km = KernelManager(kernel_name=name, kernel_spec_manager=specs)
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
    return Kernel(km, kc, cwd, environment)


class Kernels:
    """The kernels one test starts from one kernelspec (running ipykernel ``major``); ``close`` shuts all down."""

    def __init__(self, specs: KernelSpecManager, name: str, major: int, cwd: Path, env: dict[str, str]) -> None:
        self.specs, self.name, self.major, self.cwd, self.env = specs, name, major, cwd, env
        self.started: list[Kernel] = []

    def start(self, cwd: Path | None = None, **env: str) -> Kernel:
        """Start a kernel (in the default folder unless ``cwd``; ``env`` on top of the default env)."""
        kernel = start_kernel(self.specs, self.name, cwd or self.cwd, {**self.env, **env})
        self.started.append(kernel)
        found = kernel.evaluate("__import__('ipykernel').version_info[0]")
        assert found == self.major, f"the kernel runs ipykernel {found}, not {self.major}"
        return kernel

    def close(self) -> None:
        """Shut every kernel down, newest first, then raise the first error any of them raised."""
        errors = []
        for kernel in reversed(self.started):
            try:
                kernel.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


KernelFactory = Callable[..., "Kernel"]
"""``start_kernel(cwd=None, **env)``: start another kernel (``Kernels.start``, as the fixtures give it)."""


# --- what a kernel sent ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One iopub message, its place in the kernel's record and when it arrived (``time.monotonic()``)."""

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
    def parent_id(self) -> str:
        return str(self.msg.get("parent_header", {}).get("msg_id", ""))

    @property
    def comm_method(self) -> str | None:
        """Return ``"update"``, ``"custom"``, ... for a ``comm_msg``, else ``None``."""
        if self.msg_type != "comm_msg":
            return None
        return self.content.get("data", {}).get("method")


@dataclass
class Cell:
    """One executed cell: its reply and every iopub message sent with it as parent (so far)."""

    msg_id: str
    kernel: Kernel
    sent_at: float
    reply: dict[str, Any] | None = None
    replied_at: float | None = None
    code: str = field(default="", repr=False)

    @property
    def messages(self) -> list[Message]:
        """Return the iopub messages whose parent is this cell (so far)."""
        return self.kernel.messages_of(self.msg_id)

    @property
    def idle(self) -> bool:
        """Return True once the kernel said it is idle after this cell."""
        return any(m.msg_type == "status" and m.content["execution_state"] == "idle" for m in self.messages)

    @property
    def done(self) -> bool:
        """Return True once the cell's reply and its idle status arrived."""
        return self.reply is not None and self.idle

    def stream(self, name: str = "stdout") -> str:
        """Return all text this cell's output got on one stream."""
        return "".join(m.content["text"] for m in self.messages if m.msg_type == "stream" and m.content["name"] == name)

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
            if m.msg_type == "execute_result":
                text: str = m.content["data"]["text/plain"]
                return text
        return None

    def results(self) -> list[dict[str, Any]]:
        """Return the data bundles of ``execute_result`` and ``display_data`` outputs."""
        return [m.content["data"] for m in self.messages if m.msg_type in ("execute_result", "display_data")]

    def widget_roots(self) -> list[str]:
        """Return the model ids of the widgets the cell showed (as its value or displays), in order."""
        return [data[WIDGET_VIEW]["model_id"] for data in self.results() if WIDGET_VIEW in data]

    @property
    def view_model_id(self) -> str | None:
        """Return the model id of the first widget this cell shows, if any."""
        roots = self.widget_roots()
        return roots[0] if roots else None

    @property
    def displays(self) -> list[dict[str, Any]]:
        """Return the data of this cell's display_data messages."""
        return [m.content["data"] for m in self.messages if m.msg_type == "display_data"]

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Return the content of this cell's error messages."""
        return [m.content for m in self.messages if m.msg_type == "error"]

    @property
    def status(self) -> str:
        """Return the reply's status: ok, error or aborted."""
        assert self.reply is not None, "the cell has not replied yet"
        status: str = self.reply["status"]
        return status

    def wait(self, timeout: float = CELL_TIMEOUT) -> Cell:
        """Wait until the cell is done (reply and idle), bounded; a failure says which of the two is missing."""
        try:
            self.kernel.wait_for(lambda: self.done, timeout, f"the cell {self.code[:60]!r} ({self.msg_id}) to finish")
        except pytest.fail.Exception as exc:
            seen = f"its reply {'came' if self.reply is not None else 'did not come'}, its idle status "
            seen += "came" if self.idle else "did not come"
            pytest.fail(f"{exc.msg}\n{seen}; {self.describe()}", pytrace=False)
        return self

    def ok(self) -> Cell:
        """Assert the cell ran without an error; return it."""
        assert self.status == "ok", self.describe()
        assert not self.errors, self.describe()
        return self

    def describe(self) -> str:
        """Return a readable account of the cell's outputs (for assertion messages)."""
        parts = [f"code={self.code[:200]!r}", f"reply={self.reply and self.reply.get('status')}"]
        parts += [f"stdout={self.stdout!r}", f"stderr={self.stderr!r}", f"result={self.result!r}"]
        if self.reply and self.reply.get("status") == "error" and not self.errors:
            parts.append(f"{self.reply.get('ename')}: {self.reply.get('evalue')}")
        for error in self.errors:
            parts.append(strip_ansi("\n".join(error["traceback"]))[-3000:])
        return "\n".join(parts)


# --- a running kernel ------------------------------------------------------------------------------


class Kernel:
    """A running kernel and a blocking client; every iopub message is recorded, in order and per parent cell."""

    def __init__(self, km: KernelManager, kc: BlockingKernelClient, cwd: Path, env: dict[str, str]) -> None:
        self.km, self.kc, self.cwd, self.env = km, kc, cwd, env
        self.cells: dict[str, Cell] = {}
        self.replies: dict[str, dict[str, Any]] = {}
        self._messages: list[Message] = []
        self._by_parent: defaultdict[str, list[Message]] = defaultdict(list)
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_recording()

    @property
    def pid(self) -> int:
        """Return the kernel process's id."""
        provisioner: Any = self.km.provisioner
        pid: int = provisioner.process.pid
        return pid

    def stacks(self) -> str:
        """Return every thread's stack in the kernel now (faulthandler's dump on SIGUSR2), for a failure message."""
        dump = Path(self.km.connection_file + ".stacks")
        try:
            os.kill(self.pid, signal.SIGUSR2)
            wait_until_sync(lambda: dump.stat().st_size > 0, 5.0, "the kernel's stacks", poll=0.05)
        except (OSError, AssertionError, pytest.fail.Exception) as exc:
            return f"(no stacks from the kernel: {exc})"
        return "the kernel's threads at that moment:\n" + dump.read_text()

    # -- recording ---------------------------------------------------------------------------------
    def _start_recording(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._drain, name="iopub-recorder", daemon=True)
        self._thread.start()

    def _stop_recording(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.kc.get_iopub_msg(timeout=0.05)
            except queue.Empty:
                continue
            except Exception:  # the client is closing (or a test stopped its channels itself)
                socket = self.kc.iopub_channel.socket
                if self._stop.is_set() or socket is None or socket.closed:
                    return
                raise
            with self._lock:
                message = Message(len(self._messages), time.monotonic(), msg)
                self._messages.append(message)
                self._by_parent[message.parent_id].append(message)
                self._lock.notify_all()

    def _read_replies(self, timeout: float) -> None:
        """Read the shell replies that arrived, waiting at most ``timeout`` for the first one."""
        try:
            reply = self.kc.get_shell_msg(timeout=timeout)
        except queue.Empty:
            return
        while True:
            received = time.monotonic()
            parent = reply["parent_header"].get("msg_id", "")
            self.replies[parent] = reply
            cell = self.cells.get(parent)
            if cell is not None:
                cell.reply, cell.replied_at = reply["content"], received
            if not self.kc.shell_channel.msg_ready():
                return
            reply = self.kc.get_shell_msg(timeout=0)

    @property
    def messages(self) -> list[Message]:
        """Return every iopub message recorded so far, in arrival order."""
        with self._lock:
            return list(self._messages)

    def messages_of(self, parent: str) -> list[Message]:
        """Return the iopub messages recorded so far whose parent is ``parent`` (a msg_id)."""
        with self._lock:
            return list(self._by_parent.get(parent, ()))

    def mark(self) -> int:
        """Return the index the next recorded message will get."""
        with self._lock:
            return len(self._messages)

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Read replies until ``predicate()`` is truthy (checked at least every 10 ms); fail after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            outcome = predicate()
            if outcome:
                return outcome
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"waiting for {what}: still not there after {timeout} s\n{self.stacks()}", pytrace=False)
            self._read_replies(min(left, _POLL))

    # -- executing ---------------------------------------------------------------------------------
    def send(self, code: str, **kwargs: Any) -> Cell:
        """Send ``code`` for execution (``kwargs`` go to ``execute_request``); return its cell at once."""
        kwargs.setdefault("allow_stdin", False)
        kwargs.setdefault("stop_on_error", False)
        sent = time.monotonic()
        msg_id = self.kc.execute(code, **kwargs)
        cell = Cell(msg_id, self, sent, code=code)
        self.cells[msg_id] = cell
        return cell

    def execute(self, code: str, timeout: float = CELL_TIMEOUT, **kwargs: Any) -> Cell:
        """Run ``code`` and wait for it to finish (bounded); return its cell, failed or not."""
        return self.send(code, **kwargs).wait(timeout)

    def run(self, code: str, timeout: float = CELL_TIMEOUT, **kwargs: Any) -> Cell:
        """Run ``code``, assert it raised nothing, return its cell."""
        return self.execute(code, timeout, **kwargs).ok()

    def value(self, expression: str, timeout: float = CELL_TIMEOUT) -> Any:
        """Return ``expression``'s value, printed as JSON by a cell (so lists, not tuples; it shows as output)."""
        cell = self.run(f"import json as _omniq_json\nprint(_omniq_json.dumps({expression}))", timeout)
        return json.loads(cell.stdout.strip().splitlines()[-1])

    def evaluate(self, expression: str, timeout: float = CELL_TIMEOUT) -> Any:
        """Return ``expression``'s value as a Python literal, read as a user expression (nothing is shown)."""
        cell = self.run("", timeout, user_expressions={"v": expression})
        assert cell.reply is not None
        found = cell.reply["user_expressions"]["v"]
        if found["status"] != "ok":
            pytest.fail(f"{expression!r} raised {found.get('ename')}: {found.get('evalue')}", pytrace=False)
        return ast.literal_eval(found["data"]["text/plain"])

    def texts_with(self, needle: str) -> dict[str, str]:
        """Return, per parent msg_id, the stream text of every parent whose output contains ``needle``."""
        with self._lock:
            by_parent = {parent: list(messages) for parent, messages in self._by_parent.items()}
        found: dict[str, str] = {}
        for parent, messages in by_parent.items():
            text = "".join(m.content.get("text", "") for m in messages if m.msg_type == "stream")
            if needle in text:
                found[parent] = text
        return found

    def send_shell(self, msg_type: str, content: dict[str, Any]) -> str:
        """Send an arbitrary message on the shell channel (e.g. comm_msg); return its msg_id."""
        msg = self.kc.session.msg(msg_type, content)
        self.kc.shell_channel.send(msg)
        msg_id: str = msg["header"]["msg_id"]
        return msg_id

    def send_comm_msg(self, comm_id: str, data: dict[str, Any]) -> str:
        """Send a ``comm_msg`` from the "frontend" (as a browser does when a button is clicked)."""
        return self.send_shell("comm_msg", {"comm_id": comm_id, "data": data})

    # -- widgets as a frontend sees them -----------------------------------------------------------
    def widget_states(self, until: int | None = None) -> dict[str, dict[str, Any]]:
        """Return each widget's state after the messages before index ``until`` (all by default)."""
        states: dict[str, dict[str, Any]] = {}
        for message in self.messages[:until]:
            content = message.content
            if message.msg_type == "comm_open" and content.get("target_name") == "jupyter.widget":
                states[content["comm_id"]] = dict(content["data"].get("state", {}))
            elif message.comm_method == "update" and content["comm_id"] in states:
                states[content["comm_id"]].update(content["data"].get("state", {}))
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

    def widget_outputs(self, model_id: str) -> list[dict[str, Any]]:
        """Return the outputs held by the Output widgets inside widget ``model_id`` (a view and its children)."""
        states = self.widget_states()
        outputs: list[dict[str, Any]] = []
        for model in self.tree(model_id, states):
            if states[model].get("_model_name") == "OutputModel":
                outputs.extend(states[model].get("outputs", []))
        return outputs

    def widget_text(self, model_id: str, name: str = "stdout") -> str:
        """Return the stream text the Output widgets inside widget ``model_id`` hold."""
        return "".join(
            o.get("text", "")
            for o in self.widget_outputs(model_id)
            if o.get("output_type") == "stream" and o.get("name") == name
        )

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

    # -- the kernel's life -------------------------------------------------------------------------
    def interrupt(self) -> None:
        """Interrupt the kernel as a frontend does (SIGINT to the kernel's process group)."""
        self.km.interrupt_kernel()

    def sigkill(self) -> None:
        """Kill the kernel process alone (not its process group), as when it crashes."""
        os.kill(self.pid, signal.SIGKILL)
        wait_until(lambda: not self.km.is_alive(), 30, "the killed kernel to be reported dead")

    def restart(self) -> None:
        """Restart the kernel as a frontend does (graceful shutdown, same cwd and env)."""
        self._stop_recording()  # waiting for the restarted kernel reads (and drops) iopub messages itself
        try:
            self.km.restart_kernel(now=False)
            self.kc.wait_for_ready(timeout=STARTUP_TIMEOUT)
        finally:
            self._start_recording()

    def close(self) -> None:
        """Stop recording and the channels; shut the kernel down (killed if it does not stop)."""
        try:
            self._stop_recording()
            self.kc.stop_channels()
        finally:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=not self.km.is_alive())


def _references(values: Iterable[Any]) -> Iterable[str]:
    for value in values:
        if isinstance(value, str) and value.startswith("IPY_MODEL_"):
            yield value.removeprefix("IPY_MODEL_")
        elif isinstance(value, list):
            yield from _references(value)
