"""The dashboard: live tables of the store's worker pools and recent tasks, with actions.

``%omniq dashboard`` and ``omniq_nb.dashboard()`` show one (``KernelRunner.dashboard``); its tables are HTML
(``omniq_nb.notebook.view_text``), each sent only when it changed. (Not ``dashboard.py``:
importing that submodule would replace the function ``omniq_nb.notebook.dashboard``.)
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Sequence
from datetime import datetime, timezone
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from omniq_nb.handles import TaskHandle
from omniq_nb.jobs import keep_running
from omniq_nb.models import TaskStatus, WorkerInfo
from omniq_nb.notebook.view_text import problem, table, task_table

if TYPE_CHECKING:
    from omniq_nb.notebook.widgets import Actions

_DASHBOARD_ROWS = 50
_DASHBOARD_REFRESH = 1.0
_ALL = "all"  # the dashboard's filter value that shows every status
_UTC = timezone.utc


class Dashboard:
    """Live tables of the store's worker pools and the queue's recent tasks (any process), with actions.

    It reads the store every ``refresh`` seconds until ``close()``, which closing its view in
    the frontend also calls; each table is sent only when it changed.

    Args:
        actions: the queue to show and act on.
        refresh: seconds between refreshes while open.
        kernel: this kernel's session (its pool is marked "this kernel").
    """

    def __init__(self, actions: Actions, *, refresh: float = _DASHBOARD_REFRESH, kernel: str | None = None) -> None:
        self._actions = actions
        self._kernel = kernel
        options = [_ALL, *(s.value for s in TaskStatus)]
        self._filter = widgets.Dropdown(options=options, value=_ALL, description="status")
        self._task_id = widgets.Text(placeholder="task id", layout=widgets.Layout(width="22em"))
        self._message = widgets.HTML()
        self._pools = widgets.HTML()
        self._table = widgets.HTML()
        cancel = widgets.Button(description="Cancel", layout=widgets.Layout(width="auto"))
        retry = widgets.Button(description="Retry", layout=widgets.Layout(width="auto"))
        purge = widgets.Button(description="Purge finished", layout=widgets.Layout(width="auto"))
        cancel.on_click(lambda _: self._start(self._act("cancel", actions.cancel(self._task_id.value))))
        retry.on_click(lambda _: self._start(self._act("retry", actions.retry(self._task_id.value))))
        purge.on_click(lambda _: self._start(self._act("purge", actions.purge_report(command="%omniq purge"))))
        self._filter.observe(lambda _: self._start(self.update()), names="value")
        controls = widgets.HBox([self._filter, self._task_id, cancel, retry, purge])
        self.widget = widgets.VBox([controls, self._message, self._pools, self._table])
        self._refresh = refresh
        self._shown = ""
        self._pools_shown = ""
        self._jobs: set[asyncio.Future[None]] = set()
        self._closed = False
        self._start(self._keep_updating())
        if self.widget.comm is not None:
            self.widget.comm.on_close(lambda _: self.close())

    async def update(self) -> None:
        """Reload the tables now; a message is sent only for a table that changed."""
        status = None if self._filter.value == _ALL else self._filter.value
        try:
            rows = await self._actions.list(status=status, limit=_DASHBOARD_ROWS + 1)
            tasks = "<b>tasks</b>" + task_table(rows[:_DASHBOARD_ROWS], len(rows))
        except Exception as exc:  # keep the dashboard alive: show the problem instead
            tasks = problem(exc)
        try:
            pools = worker_table(await self._actions.workers(), self._kernel)
        except Exception as exc:
            pools = problem(exc)
        if pools != self._pools_shown:
            self._pools.value = self._pools_shown = pools
        if tasks != self._shown:
            self._table.value = self._shown = tasks

    def close(self) -> None:
        """Stop refreshing and close the widgets (again: nothing)."""
        self._closed = True
        for job in list(self._jobs):
            job.cancel()
        self.widget.close()

    def __str__(self) -> str:
        """Return a one-line summary."""
        return "omniq dashboard"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        return {**bundle, "text/plain": str(self), "text/html": self._pools_shown + self._shown}

    async def _keep_updating(self) -> None:
        while not self._closed:
            await self.update()
            await asyncio.sleep(self._refresh)

    async def _act(self, name: str, action: Awaitable[Any]) -> None:
        try:
            outcome = await action
            shown = outcome.id if isinstance(outcome, TaskHandle) else outcome
            self._message.value = f"{html.escape(name)}: {html.escape(str(shown))}"
        except Exception as exc:
            self._message.value = f"<span style='color:#dc3545'>{html.escape(name)}: {html.escape(str(exc))}</span>"
        await self.update()

    def _start(self, work: Awaitable[None]) -> None:
        keep_running(work, self._jobs)


def worker_table(pools: Sequence[WorkerInfo], kernel: str | None) -> str:
    """Return the live pools as a titled HTML table; the pool serving ``kernel`` is marked "this kernel".

    Args:
        pools: the live pools, as ``workers()`` returns them.
        kernel: this kernel's session, or ``None``.

    Example:
        >>> worker_table([], None)
        '<b>workers</b> <small>none live: start one with %omniq workers start or omniq-nb worker</small>'

    """
    if not pools:
        return "<b>workers</b> <small>none live: start one with %omniq workers start or omniq-nb worker</small>"
    now = datetime.now(_UTC)
    rows = []
    for pool in pools:
        seen = pool.seen(now)
        # a notebook by its name (its path on hover), or a kernel's session, or "all tasks"
        where = PurePath(pool.notebook).name if pool.notebook else pool.serves
        serves = f"<span title='{html.escape(pool.serves)}'>{html.escape(where)}</span>"
        if kernel is not None and pool.kernel == kernel:
            serves += " <b>(this kernel)</b>"
        if pool.stop_requested:
            serves += " <i>(stopping)</i>"
        rows.append(
            (
                f"<code>{pool.id}</code>",
                html.escape(pool.name),
                html.escape(pool.kind),
                f"{pool.running}/{pool.concurrency}",
                html.escape(",".join(pool.queues)),
                html.escape(f"{pool.host}:{pool.pid}"),
                serves,
                "" if seen is None else f"{seen:.0f} s ago",
            )
        )
    head = ("id", "name", "kind", "busy", "queues", "host:pid", "serves", "heartbeat")
    return f"<b>workers</b> <small>{len(pools)} live</small>{table(head, rows)}"
