"""The pacing of views: ``Throttle`` for their frames, ``Expectations`` for their estimates.

``Throttle`` sends at most one frame per interval and never drops the last; ``Expectations``
answers from the run history in memory and re-reads the store in the background.

``omniq_nb.notebook.widgets`` re-exports both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from omniq_nb.estimates import TaskStats
from omniq_nb.history import FRESH, FRESH_FOR_NEW, RunHistory

__all__ = ["MIN_INTERVAL", "Expectations", "Throttle"]

logger = logging.getLogger(__name__)

MIN_INTERVAL = 0.2  # seconds between frames of one view


class Throttle:
    """Call ``render`` at most once per ``min_interval`` on the loop; never drop the last call."""

    def __init__(self, render: Callable[[], None], min_interval: float = MIN_INTERVAL) -> None:
        self._render, self._min_interval = render, min_interval
        self._sent_at = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def request(self, *, final: bool = False) -> None:
        """Ask for a frame: now if the last one is old enough (or ``final``), else a bit later."""
        wait = self._sent_at + self._min_interval - time.monotonic()
        if wait > 0 and not final:
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(wait, self._fire)
            return
        self._fire()

    def cancel(self) -> None:
        """Drop a frame scheduled for later."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self.cancel()
        self._sent_at = time.monotonic()
        self._render()


class Expectations:
    """A view's reading of its queue's run history: answers from memory, re-reads the store in the background.

    Its first answer is from a reading at most ``FRESH_FOR_NEW`` seconds old (runs that other
    processes finished just before count), later ones at most ``FRESH`` seconds old.

    Args:
        history: the queue's run history.
        redraw: called on the loop after a reading of the store finished.
    """

    def __init__(self, history: RunHistory, redraw: Callable[[], None]) -> None:
        self._history, self._redraw = history, redraw
        self._max_age = FRESH_FOR_NEW
        self._reading: asyncio.Task[None] | None = None

    def of(self, name: str) -> TaskStats | None:
        """Return what is known of ``name``'s past runs; start a reading of the store when it is due."""
        if self._reading is None and self._history.stale(self._max_age):
            with contextlib.suppress(RuntimeError):  # no loop here (a repr from another thread): memory only
                self._reading = asyncio.get_running_loop().create_task(self._read(self._max_age))
        return self._history.known(name)

    async def _read(self, max_age: float) -> None:
        try:
            await self._history.refresh(max_age=max_age)
        except Exception:  # a view never raises; it shows no estimate until a reading works
            logger.debug("the run history could not be read", exc_info=True)
        finally:
            self._reading, self._max_age = None, FRESH
        self._redraw()
