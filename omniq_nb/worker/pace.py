"""How much a pool holds at once, set by how quick its runs are: slots, calls in line, claims ahead.

While runs are quick (a running mean below ``QUICK_RUN``), a pool claims ahead of its free
slots, so that one claim feeds several rounds of runs, and a process pool lets each child
hold its next call in line (``PIPELINE_DEPTH``). A slow run, or a task handed back because it
found no slot, ends both until runs show again that they are quick.
"""

from __future__ import annotations

from collections.abc import Callable

from omniq_nb.models import Task
from omniq_nb.worker.executors import PIPELINE_DEPTH

QUICK_RUN = 0.01  # seconds: runs this short (on average) are worth claiming ahead for
AHEAD_PER_SLOT = 16  # tasks claimed ahead per slot while runs are quick (at most MAX_AHEAD)
MAX_AHEAD = 128
_SMOOTHING = 0.2  # weight of the latest run in the running mean of run times


class Pace:
    """The slots and the room ahead of one pool, from the running mean of its run times.

    Args:
        concurrency: the pool's slots when runs are not quick (and the most child processes).
        kind: the pool's kind; only a ``"process"`` pool holds calls in line.
        in_a_child: whether a task's call runs in a child process.
    """

    def __init__(self, concurrency: int, kind: str, in_a_child: Callable[[Task], bool]) -> None:
        self._concurrency, self._kind, self._in_a_child = concurrency, kind, in_a_child
        self._mean_run: float | None = None  # running mean of run times, seconds
        self._in_children = 0  # runs going on whose calls went to child processes

    def started(self, in_child: bool) -> None:
        """Count a run that starts (``in_child``: its call goes to a child process)."""
        self._in_children += in_child

    def ended(self, in_child: bool) -> None:
        """Count a run that ended (``in_child``: as given to ``started``)."""
        self._in_children -= in_child

    def ran(self, seconds: float) -> None:
        """Count one run's time in the running mean."""
        mean = self._mean_run
        self._mean_run = seconds if mean is None else mean + _SMOOTHING * (seconds - mean)

    def slow_down(self) -> None:
        """Claim no more ahead and hold no call in line until runs are quick again."""
        self._mean_run = None

    def slots(self) -> int:
        """Return how many runs may go on at once: the concurrency (more in a quick process pool).

        In a process pool whose runs are quick, ``PIPELINE_DEPTH`` times as many: each child
        holds the next call in line.
        """
        quick_children = self._kind == "process" and self._quick()
        return self._concurrency * PIPELINE_DEPTH if quick_children else self._concurrency

    def ahead(self) -> int:
        """Return how many tasks to hold beyond the slots: some per slot while runs are quick, none otherwise."""
        return min(self.slots() * AHEAD_PER_SLOT, MAX_AHEAD) if self._quick() else 0

    def may_start(self, task: Task, busy: int) -> bool:
        """Return whether ``task`` may start while ``busy`` runs go on: in a free slot, or in line in a child.

        Beyond the concurrency, only a plain process call starts, and only to wait in line
        behind a busy child's call: a thread or the loop (or an idle child) would run more
        calls at once than the pool's concurrency, a time-out would run while the call waits,
        and an ``at_most_once`` task would be failed unrun if this process died.
        """
        if busy < self._concurrency:
            return True
        if busy >= self.slots() or task.at_most_once or task.timeout is not None:
            return False
        return self._in_children >= self._concurrency and self._in_a_child(task)  # every child holds one

    def _quick(self) -> bool:
        return self._mean_run is not None and self._mean_run < QUICK_RUN
