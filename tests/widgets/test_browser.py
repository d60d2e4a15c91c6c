"""Live views in a real browser: JupyterLab on loopback, headless Debian chromium through Playwright.

Each test writes small notebooks, starts JupyterLab on a free loopback port with a random
token, runs all cells of a notebook from the "Run" menu and waits (bounded) until the page
shows what it should, then saves a screenshot cropped to the view. The task view: a full
bar and "succeeded", in ``test-artifacts/task-view.png``. The dashboard of two kernels and
one CLI worker on one folder's store, listing the three, and the view of a task only a
CLI worker ran, with its result and duration: in the test's tmp folder. With
``OMNIQ_UPDATE_SCREENSHOT=1`` they are also saved to ``docs/`` (the README shows
``docs/task-view.png``).

Playwright (Python) and chromium are required, not optional: CI installs them, so their
absence fails the test with what to install. Browsers are never downloaded: the system
chromium is launched (``CHROMIUM`` overrides its path).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from processes import Child

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_TIMEOUT = 45.0
VIEW_TIMEOUT = 60.0
CELLS = [
    "%load_ext omniq_nb\nimport time\nimport omniq_nb as omniq",
    "@omniq.task\n"
    "def train(epochs):\n"
    "    loss = 1.0\n"
    "    for epoch in omniq.track(range(epochs)):\n"
    "        time.sleep(0.01)\n"
    "        loss *= 0.97\n"
    "    print(f'trained {epochs} epochs')\n"
    "    return {'epochs': epochs, 'loss': round(loss, 4)}",
    "h = train.submit(150)\nh",
]
DASHBOARD_NOTEBOOKS = {
    "first.ipynb": ["%load_ext omniq_nb", "%omniq workers status"],
    "second.ipynb": [
        "%load_ext omniq_nb\nimport omniq_nb as omniq",
        "@omniq.task\ndef square(x):\n    return x * x\n\nsquare.map(range(4)).result()",
        "%omniq dashboard",
    ],
}
CLI_RUN_CELLS = [
    "%load_ext omniq_nb\nimport time\nimport omniq_nb as omniq",
    "@omniq.task\ndef multiply(a, b):\n    time.sleep(0.5)\n    return a * b",
    "h = multiply.submit(6, 7)\nh",
]
_DURATION = re.compile(r"\b\d+\.\d s\b")


def _require_browser() -> Any:
    """Return Playwright's sync API; fail (not skip) with what to install when something is missing."""
    try:
        from playwright import sync_api
    except ImportError:
        pytest.fail(
            "Playwright for Python is missing: pip install playwright (never `playwright install`: "
            "the test uses the system chromium)",
            pytrace=False,
        )
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"chromium is missing at {CHROMIUM}: apt-get install chromium (or set CHROMIUM to its path)",
            pytrace=False,
        )
    if shutil.which("jupyter-lab") is None and not _has_module("jupyterlab"):
        pytest.fail("JupyterLab is missing: pip install jupyterlab", pytrace=False)
    return sync_api


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_notebook(path: Path, sources: list[str]) -> None:
    cells = [
        {"cell_type": "code", "execution_count": None, "id": f"cell-{i}", "metadata": {}, "outputs": [], "source": c}
        for i, c in enumerate(sources)
    ]
    notebook = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook, indent=1))


class Lab:
    """A JupyterLab server process on loopback, isolated from the user's settings (``env`` on top)."""

    def __init__(self, root: Path, home: Path, extra_env: Mapping[str, str]) -> None:
        self.root, self.token, self.port = root, secrets.token_hex(16), _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "jupyterlab.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMNIQ_", "JUPYTER"))}
        env.update(
            OMNIQ_POLL_INTERVAL="0.05",
            JUPYTER_CONFIG_DIR=str(home / "config"),
            JUPYTER_RUNTIME_DIR=str(home / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
            PYDEVD_DISABLE_FILE_VALIDATION="1",
        )
        env.update(extra_env)
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--IdentityProvider.token={self.token}",  # ServerApp.token is its deprecated alias
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers often run as root
            command.append("--allow-root")
        settings = {  # no news prompt; start the notebook's kernel without asking
            "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
            "notebook-extension/tracker": {"autoStartDefaultKernel": True},
        }
        for name, values in settings.items():
            path = home / "settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _get(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")

    def kernel_idle(self, notebook: str) -> bool:
        """Return True once a session for ``notebook`` has a started, idle kernel."""
        sessions = self._get("/api/sessions")
        return any(
            s.get("path") == notebook and (s.get("kernel") or {}).get("execution_state") == "idle" for s in sessions
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_TIMEOUT
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"JupyterLab exited ({self.process.returncode}):\n{self.tail()}", pytrace=False)
            try:
                self._get("/api/status")
                return
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer within {SERVER_TIMEOUT} s:\n{self.tail()}", pytrace=False)
                time.sleep(0.2)  # polling the server's status endpoint

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Ask the server to shut down (its kernels with it); end its process group if it does not."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError, urllib.error.URLError):
                self._get("/api/shutdown", method="POST")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=15)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)  # the group this test started: the server and its kernels
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue


@contextlib.contextmanager
def running_lab(tmp_path: Path, notebooks: Mapping[str, list[str]], **env: str) -> Iterator[Lab]:
    """Start JupyterLab (``env`` on top of its environment, its kernels' too) in ``tmp_path / "lab"``.

    ``notebooks`` maps a notebook's name to its cells' sources. The server (and its kernels)
    is always stopped afterwards.
    """
    root = tmp_path / "lab"
    root.mkdir()
    for name, sources in notebooks.items():
        _write_notebook(root / name, sources)
    server = Lab(root, tmp_path, env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def browser_page(tmp_path: Path, sync_api: Any, width: int = 1100) -> Iterator[Any]:
    """Open headless chromium (``width`` pixels wide) on a fresh profile; yield its page; on a failure save it."""
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": 800},
        )
        page = context.pages[0] if context.pages else context.new_page()
        (REPO / "test-artifacts").mkdir(exist_ok=True)
        try:
            page.set_default_timeout(30_000)
            # JupyterLab may ask which kernel to start, whenever it likes: always take the preferred one
            select = page.locator(".jp-Dialog").get_by_role("button", name="Select", exact=True)
            page.add_locator_handler(select, lambda button: button.click())
            yield page
        except Exception:
            page.screenshot(path=str(REPO / "test-artifacts" / "jupyterlab-failure.png"))
            raise
        finally:
            context.close()


def run_all_cells(page: Any, lab: Lab, notebook: str) -> None:
    """Open ``notebook`` in JupyterLab, wait (bounded) for its kernel, and run all its cells from the Run menu."""
    page.goto(f"{lab.url}/lab/tree/{notebook}?token={lab.token}")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    deadline = time.monotonic() + SERVER_TIMEOUT
    while not lab.kernel_idle(notebook):  # the kernel must be up, or queued cells get lost
        if time.monotonic() > deadline:
            pytest.fail(f"the kernel of {notebook} did not start:\n{lab.tail()}", pytrace=False)
        page.wait_for_timeout(200)  # polling the server's sessions; lets dialog handlers run
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.get_by_text("Run All Cells", exact=True).click()


def save_screenshot(shot: bytes, path: Path) -> None:
    """Keep a screenshot at ``path``; with ``OMNIQ_UPDATE_SCREENSHOT=1`` also in docs/ (for the README)."""
    path.write_bytes(shot)
    if os.environ.get("OMNIQ_UPDATE_SCREENSHOT"):  # refresh the README's pictures on request only
        (REPO / "docs" / path.name).write_bytes(shot)
    assert len(shot) < 200_000, "the screenshot should be cropped to the view"


def test_task_view_in_jupyterlab(tmp_path: Path) -> None:
    sync_api = _require_browser()  # before starting anything: fail at once with what to install
    with running_lab(tmp_path, {"demo.ipynb": CELLS}) as lab, browser_page(tmp_path, sync_api) as page:
        run_all_cells(page, lab, "demo.ipynb")
        view = page.locator(".jp-OutputArea-output .widget-vbox").filter(has_text="succeeded").first
        view.wait_for(timeout=VIEW_TIMEOUT * 1000)
        full_bar = view.locator("div[style*='width:100.0%']")
        full_bar.first.wait_for(timeout=10_000)
        view.get_by_text("'loss':").first.wait_for(timeout=10_000)
        text = view.inner_text()
        assert "100%" in text
        assert "succeeded" in text
        assert "{'epochs': 150" in text
        save_screenshot(view.screenshot(animations="disabled"), REPO / "test-artifacts" / "task-view.png")


def test_dashboard_lists_two_kernels_and_a_cli_worker(tmp_path: Path, cli_worker: Callable[..., Child]) -> None:
    sync_api = _require_browser()
    with running_lab(tmp_path, DASHBOARD_NOTEBOOKS) as lab, browser_page(tmp_path, sync_api, 1500) as page:
        worker = cli_worker(lab.root)
        run_all_cells(page, lab, "first.ipynb")
        page.get_by_text("busy, queues").first.wait_for(timeout=VIEW_TIMEOUT * 1000)  # its pool runs
        run_all_cells(page, lab, "second.ipynb")

        dashboard = page.locator(".jp-OutputArea-output .widget-vbox").filter(has_text="heartbeat").first
        dashboard.wait_for(timeout=VIEW_TIMEOUT * 1000)
        dashboard.get_by_text("3 live").wait_for(timeout=VIEW_TIMEOUT * 1000)
        dashboard.get_by_text("square").first.wait_for(timeout=10_000)
        text = dashboard.inner_text()
        for shown in ("first.ipynb", "second.ipynb (this kernel)", "all tasks", f":{worker.pid}", "s ago", "succeeded"):
            assert shown in text, f"the dashboard does not show {shown!r}:\n{text}"
        assert worker.alive(), worker.text()
        save_screenshot(dashboard.screenshot(animations="disabled"), tmp_path / "dashboard.png")


def test_task_view_of_a_task_a_cli_worker_ran(tmp_path: Path, cli_worker: Callable[..., Child]) -> None:
    sync_api = _require_browser()
    notebooks = {"cli-run.ipynb": CLI_RUN_CELLS}
    with running_lab(tmp_path, notebooks, OMNIQ_AUTOSTART="0") as lab, browser_page(tmp_path, sync_api) as page:
        worker = cli_worker(lab.root)  # the kernel starts no pool: only this process can run the task
        run_all_cells(page, lab, "cli-run.ipynb")
        view = page.locator(".jp-OutputArea-output .widget-vbox").filter(has_text="succeeded").first
        view.wait_for(timeout=VIEW_TIMEOUT * 1000)
        view.get_by_text("42", exact=True).wait_for(timeout=10_000)
        view.get_by_text(_DURATION).first.wait_for(timeout=10_000)
        text = view.inner_text()
        assert "multiply" in text
        assert "100%" in text
        assert worker.alive(), worker.text()
        save_screenshot(view.screenshot(animations="disabled"), tmp_path / "task-view-cli-worker.png")
