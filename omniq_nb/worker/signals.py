"""Serve a pool until SIGINT or SIGTERM: the one serving loop of ``run()``, its sync twin and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Sequence
from types import FrameType, TracebackType
from typing import Protocol

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Servable(Protocol):
    """What ``serve_until_signal`` needs of a pool (``AsyncWorkerPool`` has it)."""

    @property
    def name(self) -> str:
        """The pool's name, for the log."""
        ...

    @property
    def stop_requested(self) -> bool:
        """Whether it was asked to stop through the store's registry."""
        ...

    async def start(self) -> None:
        """Start serving."""
        ...

    async def wait(self) -> None:
        """Return once stopped (raise ``StoreLost`` when it stopped because its store went away)."""
        ...

    async def stop(self) -> None:
        """Stop gracefully."""
        ...


class StopSignals:
    """While entered, SIGINT and SIGTERM ask to stop (``wait()`` returns) instead of interrupting or killing.

    Handlers are installed only when entered in the main thread (where Python runs them);
    elsewhere nothing is installed and ``wait()`` returns only after ``ask()``. ``wait()`` may
    run on any thread's loop: a signal caught in the main thread wakes it.

    Args:
        signals: the signals to catch.
    """

    def __init__(self, signals: Sequence[signal.Signals] = STOP_SIGNALS) -> None:
        self._signals = signals
        self._previous: dict[signal.Signals, signal._HANDLER] = {}
        self._asked = threading.Event()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._lock = threading.Lock()

    def __enter__(self) -> StopSignals:
        """Install the handlers (in the main thread)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._caught) for sig in self._signals}
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Put the previous handlers back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def ask(self) -> None:
        """Ask to stop, as a signal would (from any thread)."""
        self._asked.set()
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    async def wait(self) -> None:
        """Return once a signal arrived (or ``ask()`` was called)."""
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self._lock:
            self._waiters.append(waiter)
        try:
            if not self._asked.is_set():
                await event.wait()
        finally:
            with self._lock:
                self._waiters.remove(waiter)

    def _caught(self, signum: int, frame: FrameType | None) -> None:
        logger.info("caught %s", signal.Signals(signum).name)
        self.ask()


async def serve_until_signal(pool: Servable, *, signals: StopSignals | None = None) -> None:
    """Start ``pool`` and serve until a stop signal, until it stops, or until cancelled; then stop it gracefully.

    Args:
        pool: the pool to serve.
        signals: caught signals already entered by the caller (the sync twin enters them in the
            main thread while this runs on its loop thread); default: catch SIGINT and SIGTERM
            here, when this runs in the main thread.

    Raises:
        StoreLost: the pool stopped on its own because its store went away.
    """
    with contextlib.ExitStack() as stack:
        caught = stack.enter_context(StopSignals()) if signals is None else signals
        await pool.start()
        signalled = asyncio.ensure_future(caught.wait())
        ended = asyncio.ensure_future(pool.wait())  # raises StoreLost when the pool stopped on its own
        try:
            done, _ = await asyncio.wait([signalled, ended], return_when=asyncio.FIRST_COMPLETED)
            if ended in done:
                ended.result()
            why = " (asked to through the registry)" if pool.stop_requested else ""
            logger.info("stopping worker %s%s", pool.name, why)
        finally:
            signalled.cancel()
            ended.cancel()
            await asyncio.shield(pool.stop())
