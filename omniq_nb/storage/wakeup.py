"""Cross-process wake-up hints for stores on one machine (SQLite): "tasks may be ready".

An idle worker binds a Linux abstract-namespace datagram socket and registers its name as
an empty file in a folder beside the store file (``<db>.wake/``). A writer that adds ready
tasks sends one byte to each registered socket: idle workers wake within a millisecond and
use no CPU while they wait. Hints only wake; polling the store stays the source of truth,
so a lost hint costs latency, never a task. Where abstract sockets do not exist (not Linux),
nothing is sent and workers rely on polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import socket
import sys
import time
from pathlib import Path

_RESCAN_SECONDS = 1.0  # how long a writer trusts its list of registered sockets
_SUPPORTED = sys.platform.startswith("linux")


class WakeChannel:
    """Send and receive wake-up hints among the processes using one store file.

    Args:
        store_path: the store's file; the registry folder is ``<store_path>.wake``.
    """

    def __init__(self, store_path: str) -> None:
        resolved = Path(store_path).resolve()
        self._folder = Path(f"{resolved}.wake")
        self._prefix = "omniq-" + hashlib.sha256(str(resolved).encode()).hexdigest()[:16] + "-"
        self._sender: socket.socket | None = None
        self._peers: list[str] = []
        self._scanned_at = -_RESCAN_SECONDS
        self._receiver: socket.socket | None = None
        self._entry: Path | None = None

    def notify(self) -> None:
        """Tell every registered waiter that tasks may be ready (non-blocking, best effort)."""
        if not _SUPPORTED:
            return
        now = time.monotonic()
        if now - self._scanned_at >= _RESCAN_SECONDS:
            self._scanned_at = now
            try:
                self._peers = os.listdir(self._folder)
            except OSError:
                self._peers = []
        if not self._peers:
            return
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        for name in self._peers:
            if self._entry is not None and name == self._entry.name:
                continue  # this store's own writes wake its pools directly (``on_local_write``)
            try:
                self._sender.sendto(b"!", "\0" + self._prefix + name)
            except ConnectionRefusedError:  # its process is gone: forget it
                with contextlib.suppress(OSError):
                    (self._folder / name).unlink()
            except OSError:  # a full buffer already holds a hint
                continue

    async def wait(self, timeout: float) -> None:
        """Return when a hint arrives or after ``timeout`` seconds, whichever is first."""
        if not _SUPPORTED:
            await asyncio.sleep(timeout)
            return
        receiver = self._register()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loop.sock_recv(receiver, 64), timeout)
        with contextlib.suppress(BlockingIOError):  # drain hints that piled up
            while True:
                receiver.recv(64)

    def close(self) -> None:
        """Unregister and close the sockets."""
        if self._entry is not None:
            with contextlib.suppress(OSError):
                self._entry.unlink()
            self._entry = None
        for sock in (self._receiver, self._sender):
            if sock is not None:
                sock.close()
        self._receiver = self._sender = None

    def _register(self) -> socket.socket:
        if self._receiver is not None:
            return self._receiver
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind("\0" + self._prefix + name)
        receiver.setblocking(False)
        self._folder.mkdir(mode=0o700, exist_ok=True)
        entry = self._folder / name
        entry.touch(mode=0o600)
        self._receiver, self._entry = receiver, entry
        return receiver
