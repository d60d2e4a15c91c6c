"""Live views of tasks: ``TaskView``, ``GroupView``, ``Dashboard``; the only ipywidgets import.

A view *has* a few widgets and redraws them from its handle's state through one throttle:
at most one frame every ``min_interval`` seconds (each frame sends at most two comm
messages: the status line, and new output), the last frame always lands, and a finished
view stops sending. The live part is one HTML widget, so a frame is one message however
many fields changed. Every view also has a one-line ``str()`` and a text/HTML repr for
frontends without widgets.
"""

from __future__ import annotations

import asyncio
import builtins
import html
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from pathlib import PurePath
from typing import Any, Protocol

import ipywidgets as widgets

from omniq_nb.handles import GroupHandle, TaskHandle
from omniq_nb.models import Task, TaskStatus, WorkerInfo
from omniq_nb.serialization import BlobSerializer

_MIN_INTERVAL = 0.2  # seconds between frames of one view
_TICK = 1.0  # seconds between redraws of a running view's clock
_MAX_OUTPUT_CHARS = 100_000  # output kept in a view; older text is dropped
_PREVIEW_CHARS = 500
_GROUP_ROWS = 50  # rows shown in a group's task table
_DASHBOARD_ROWS = 50
_DASHBOARD_REFRESH = 1.0
_ALL = "all"  # the dashboard's filter value that shows every status
_COLORS = {
    TaskStatus.PENDING: "#6c757d",
    TaskStatus.RUNNING: "#0d6efd",
    TaskStatus.SUCCEEDED: "#198754",
    TaskStatus.FAILED: "#dc3545",
    TaskStatus.CANCELLED: "#6c757d",
    TaskStatus.EXPIRED: "#b58900",
}
_UTC = timezone.utc


class Actions(Protocol):
    """What views need from the kernel's queue (an ``AsyncOmniQ`` provides it)."""

    async def cancel(self, task_id: str, /) -> bool:
        """Cancel a task."""
        ...

    async def retry(self, task_id: str, /) -> TaskHandle:
        """Retry a finished task."""
        ...

    async def purge_report(self, *, command: str = "purge") -> str:
        """Purge finished tasks past their result_ttl; say what went, or why nothing did."""
        ...

    async def list(self, *, status: Any = None, queue: str | None = None, limit: int = 100) -> list[Task]:
        """List recent tasks."""
        ...

    async def workers(self) -> builtins.list[WorkerInfo]:
        """List the store's live worker pools."""
        ...

    @property
    def serializer(self) -> BlobSerializer:
        """Decodes stored results."""
        ...


class Throttle:
    """Call ``render`` at most once per ``min_interval`` on the loop; never drop the last call."""

    def __init__(self, render: Callable[[], None], min_interval: float = _MIN_INTERVAL) -> None:
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


class TaskView:
    """Live view of one task: status badge, progress, output, result or error, cancel and retry.

    Args:
        handle: the task's handle (kept current by its queue).
        actions: the queue the buttons act on and results are decoded with.
        min_interval: seconds between frames.
    """

    def __init__(self, handle: TaskHandle, actions: Actions, *, min_interval: float = _MIN_INTERVAL) -> None:
        self.handle = handle
        self._actions = actions
        self._status = widgets.HTML(layout=widgets.Layout(width="100%"))
        self._output = widgets.Output(layout=widgets.Layout(max_height="300px", overflow="auto"))
        self._outputs = widgets.Accordion(children=[self._output], selected_index=None)
        self._outputs.set_title(0, "output")
        self._outcome = widgets.HTML()
        self._cancel = widgets.Button(description="Cancel", icon="stop", layout=widgets.Layout(width="auto"))
        self._retry = widgets.Button(description="Retry", icon="redo", layout=widgets.Layout(width="auto"))
        self._cancel.on_click(lambda _: self._act(self._actions.cancel))
        self._retry.on_click(lambda _: self._act(self._actions.retry))
        buttons = widgets.HBox([self._cancel, self._retry])
        self.widget = widgets.VBox([self._status, buttons, self._outputs, self._outcome])
        self._pending_text: list[tuple[str, str]] = []
        self._kept = 0
        self._last_status = ""
        self._finished = False
        self._throttle = Throttle(self._render, min_interval)
        self._tick: asyncio.TimerHandle | None = None
        self._jobs: set[asyncio.Future[None]] = set()
        self._render()
        handle.observe(self._changed)

    def refresh(self) -> None:
        """Redraw soon (throttled); the frame after the task finishes is sent at once."""
        if not self._finished:
            self._throttle.request(final=self.handle.done())

    def _changed(self, _: TaskHandle) -> None:
        # a finished task still changes: its stored row (result, times) follows the event that
        # finished it when another process ran it, and a retry brings it back
        self._finished = False
        self.refresh()

    def write(self, name: str, text: str) -> None:
        """Add what the task wrote to its output area (from the loop; batched per frame)."""
        self._pending_text.append((name, text))
        self._throttle.request()

    def display(self, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        """Show something the task displayed in its output area."""
        self._output.outputs = (
            *self._output.outputs,
            {"output_type": "display_data", "data": data, "metadata": metadata},
        )

    def __str__(self) -> str:
        """Return a one-line summary: name, id, status, attempt, progress."""
        task = self.handle.task
        return f"{task.name} [{task.id}] {_status_text(task)} {task.progress:.0%}"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        return {**bundle, "text/plain": str(self), "text/html": self._status_html()}

    def _render(self) -> None:
        task = self.handle.task
        with self.widget.hold_sync():
            line = self._status_html()
            if line != self._last_status:
                self._status.value = self._last_status = line
            self._flush_text()
            self._cancel.disabled = task.status.is_terminal
            self._retry.disabled = task.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED)
            self._outcome.value = self._outcome_html(task) if task.status.is_terminal else ""
        self._schedule_tick(task)
        self._finished = task.status.is_terminal and not self._pending_text

    def _flush_text(self) -> None:
        if not self._pending_text:
            return
        texts, self._pending_text = self._pending_text, []
        outputs = list(self._output.outputs)
        for name, text in texts:
            if outputs and outputs[-1].get("output_type") == "stream" and outputs[-1].get("name") == name:
                outputs[-1] = {**outputs[-1], "text": outputs[-1]["text"] + text}
            else:
                outputs.append({"output_type": "stream", "name": name, "text": text})
            self._kept += len(text)
        while self._kept > _MAX_OUTPUT_CHARS and len(outputs) > 1:
            self._kept -= len(outputs.pop(0).get("text", ""))
        self._output.outputs = tuple(outputs)

    def _schedule_tick(self, task: Task) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if task.status is TaskStatus.RUNNING:
            self._tick = asyncio.get_running_loop().call_later(_TICK, self.refresh)

    def _status_html(self) -> str:
        task = self.handle.task
        elapsed = _elapsed(task)
        percent = 100 * (1.0 if task.status is TaskStatus.SUCCEEDED else task.progress)
        details = [f"{percent:.0f}%"]
        if elapsed is not None:
            details.append(f"{elapsed:.1f} s")
            if task.status is TaskStatus.RUNNING and 0 < task.progress < 1:
                details.append(f"ETA {elapsed * (1 - task.progress) / task.progress:.1f} s")
        if task.progress_message:
            details.append(html.escape(task.progress_message))
        return (
            f'<div style="font-family:var(--jp-ui-font-family,sans-serif)"><b>{html.escape(task.name)}</b> '
            f"<code>{task.id}</code> {_badge(task)}"
            f'<div style="background:#e9ecef;height:8px;border-radius:4px;margin:4px 0">'
            f'<div style="width:{percent:.1f}%;background:{_COLORS[task.status]};height:8px;border-radius:4px">'
            f"</div></div><small>{' · '.join(details)}</small></div>"
        )

    def _outcome_html(self, task: Task) -> str:
        if task.status is TaskStatus.SUCCEEDED:
            try:
                value = None if task.result is None else self._actions.serializer.loads(task.result)
            except Exception as exc:  # the view must never raise into a cell
                return f"<pre>result unavailable: {html.escape(str(exc))}</pre>"
            return f"<b>result</b><pre>{html.escape(_preview(value))}</pre>"
        if task.status is TaskStatus.FAILED and task.error is not None:  # else it is an earlier attempt's
            error = task.error
            text = f"{error.type}: {error.message}\n\n{error.traceback}".rstrip()
            return f"<b>error</b><pre style='color:#dc3545'>{html.escape(text)}</pre>"
        return f"<pre>{html.escape(task.status.value)}</pre>"

    def _act(self, action: Callable[[str], Awaitable[Any]]) -> None:
        """Run a button's action as a task on the loop: a click never blocks the kernel."""
        job = asyncio.ensure_future(self._acted(action))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _acted(self, action: Callable[[str], Awaitable[Any]]) -> None:
        try:
            await action(self.handle.id)  # the queue hands the changed task to this view's handle
        except Exception as exc:  # a button must never raise into the frontend's handler
            self._outcome.value = f"<pre style='color:#dc3545'>{html.escape(str(exc))}</pre>"


class GroupView:
    """One aggregate bar for many tasks, with per-task rows on demand (no widget per task).

    Args:
        group: the group handle (``.map()`` or ``enqueue_many``).
        min_interval: seconds between frames.
    """

    def __init__(self, group: GroupHandle, *, min_interval: float = _MIN_INTERVAL) -> None:
        self.group = group
        self._summary = widgets.HTML()
        self._rows = widgets.HTML()
        self._throttle = Throttle(self._render, min_interval)
        self._toggle = widgets.ToggleButton(description="tasks", icon="list", layout=widgets.Layout(width="auto"))
        self._toggle.observe(lambda _: self._throttle.request(final=True), names="value")
        self.widget = widgets.VBox([self._summary, self._toggle, self._rows])
        self._render()
        for handle in group.handles:
            handle.observe(lambda _: self._throttle.request(final=group.done()))

    def __str__(self) -> str:
        """Return a one-line summary with counts per status."""
        counts = self.group.counts
        shown = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
        return f"{len(self.group)} tasks: {shown}"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        return {**bundle, "text/plain": str(self), "text/html": self._summary_html()}

    def _render(self) -> None:
        with self.widget.hold_sync():
            self._summary.value = self._summary_html()
            self._rows.value = _task_table([h.task for h in self.group.handles[:_GROUP_ROWS]], len(self.group))
            self._rows.layout.display = None if self._toggle.value else "none"

    def _summary_html(self) -> str:
        counts = self.group.counts
        total = max(1, len(self.group))
        finished = sum(n for s, n in counts.items() if s.is_terminal)
        elapsed = _group_elapsed([h.task for h in self.group.handles])
        rate = finished / elapsed if elapsed > 0 else 0.0
        eta = f"ETA {(total - finished) / rate:.1f} s · " if rate > 0 and finished < total else ""
        parts = " ".join(f'<span style="color:{_COLORS[s]}">{n} {s.value}</span>' for s, n in counts.items() if n)
        width = 100 * finished / total
        return (
            f'<div><b>{total} tasks</b> {parts}<div style="background:#e9ecef;height:8px;border-radius:4px;'
            f'margin:4px 0"><div style="width:{width:.1f}%;background:#198754;height:8px;border-radius:4px">'
            f"</div></div><small>{finished}/{total} done · {rate:.1f} tasks/s · {eta}{elapsed:.1f} s</small></div>"
        )


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
            table = "<b>tasks</b>" + _task_table(rows[:_DASHBOARD_ROWS], len(rows))
        except Exception as exc:  # keep the dashboard alive: show the problem instead
            table = _problem(exc)
        try:
            pools = _worker_table(await self._actions.workers(), self._kernel)
        except Exception as exc:
            pools = _problem(exc)
        if pools != self._pools_shown:
            self._pools.value = self._pools_shown = pools
        if table != self._shown:
            self._table.value = self._shown = table

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
        job = asyncio.ensure_future(work)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)


def _badge(task: Task) -> str:
    return (
        f'<span style="background:{_COLORS[task.status]};color:white;border-radius:8px;padding:1px 8px">'
        f"{html.escape(_status_text(task))}</span>"
    )


def _status_text(task: Task) -> str:
    if task.status is TaskStatus.PENDING and task.error is not None:
        return f"retrying (attempt {task.attempt + 1} of {task.max_attempts})"
    if task.status is TaskStatus.RUNNING and task.max_attempts > 1:
        return f"running (attempt {task.attempt} of {task.max_attempts})"
    return task.status.value


def _elapsed(task: Task) -> float | None:
    if task.started_at is None:
        return None
    end = task.finished_at or datetime.now(_UTC)
    return max(0.0, (end - task.started_at).total_seconds())


def _group_elapsed(tasks: Sequence[Task]) -> float:
    """Return seconds from the first task's enqueue to the last one's finish (or to now, while one runs)."""
    if not tasks:
        return 0.0
    ends = [task.finished_at for task in tasks if task.finished_at is not None]
    end = max(ends) if len(ends) == len(tasks) else datetime.now(_UTC)
    return max(0.0, (end - min(task.created_at for task in tasks)).total_seconds())


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 3] + "..."


def _problem(exc: Exception) -> str:
    return f"<pre style='color:#dc3545'>{html.escape(str(exc))}</pre>"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Return an HTML table; ``head`` is plain text, the cells are HTML already."""
    header = "".join(f"<th style='text-align:left;padding:0 8px'>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td style='padding:0 8px'>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<div style='overflow-x:auto'><table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table></div>"


def _worker_table(pools: Sequence[WorkerInfo], kernel: str | None) -> str:
    """Return the live pools as a titled table; the pool serving ``kernel`` is marked "this kernel"."""
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
    return f"<b>workers</b> <small>{len(pools)} live</small>{_table(head, rows)}"


def _task_table(tasks: Sequence[Task], total: int) -> str:
    head = ("id", "name", "status", "progress", "queue", "attempt", "started", "duration", "worker")
    rows = []
    for task in tasks:
        elapsed = _elapsed(task)
        started = task.started_at.astimezone().strftime("%H:%M:%S") if task.started_at else ""
        cells = (
            f"<code>{task.id}</code>",
            html.escape(task.name),
            _badge(task),
            f"{task.progress:.0%}",
            html.escape(task.queue),
            f"{task.attempt}/{task.max_attempts}",
            started,
            "" if elapsed is None else f"{elapsed:.1f} s",
            html.escape(task.worker or ""),
        )
        rows.append(cells)
    more = f"<div><small>{total - len(tasks)} more not shown</small></div>" if total > len(tasks) else ""
    return f"{_table(head, rows)}{more}"
