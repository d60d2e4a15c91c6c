"""``KEEPALIVE``: a kernel whose pool runs tasks shows activity to the Jupyter server, so it is not culled.

jupyter_server culls a kernel (``MappingKernelManager.cull_idle_timeout``) whose
``last_activity`` is older than the timeout and whose execution state is not busy; JupyterHub's
idle culler reads the server's activity, which follows its kernels'. The server refreshes a
kernel's ``last_activity`` on each IOPub message whose type, or whose parent's type, is not in
``untracked_message_types`` (``status``, ``stream``, ``display_data``, ... are; ``comm_msg``
is not). So while the kernel's pool runs tasks, one ``comm_msg`` for a comm no frontend opened
goes out every ``KEEPALIVE`` seconds: frontends ignore a message for an unknown comm, and no
``status`` message is sent, so their busy indicator is untouched. When the pool runs nothing,
nothing is sent and an idle kernel is culled as before.

The signals come from a thread of their own: an async task that blocks the loop must not
silence them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

KEEPALIVE_COMM = "omniq-keepalive"
"""The comm id of the activity signals (no frontend opens it, so they are dropped there)."""


class Keepalive:
    """Send an activity signal every ``interval`` seconds while ``working()`` says so.

    Args:
        kernel: the ipykernel kernel (its session and IOPub socket send the signal).
        working: whether the kernel's pool runs tasks now (called from the keepalive thread).
    """

    def __init__(self, kernel: Any, working: Callable[[], bool]) -> None:
        self._kernel, self._working = kernel, working
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def set_interval(self, seconds: float | None) -> None:
        """Send every ``seconds`` from now on (``None`` or 0: stop sending)."""
        self.close()
        if not seconds or self._kernel is None:
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(seconds, self._stop), name="omniq-keepalive", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop sending (the thread ends at once)."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join()

    def _run(self, seconds: float, stop: threading.Event) -> None:
        failed = False
        while not stop.wait(seconds):
            try:
                if self._working():
                    self._signal()
            except Exception:  # a closed socket at shutdown, say: say so once, keep trying
                if not failed:
                    logger.exception("could not send the kernel's activity signal")
                failed = True

    def _signal(self) -> None:
        content = {"comm_id": KEEPALIVE_COMM, "data": {}}
        self._kernel.session.send(self._kernel.iopub_socket, "comm_msg", content, parent=None)
