"""Live views of tasks: ``TaskView`` for one, ``GroupView`` for many.

A view *has* a few widgets and redraws them from its handle's state through one throttle:
at most one frame every ``min_interval`` seconds (each frame sends at most two comm
messages: the status line, and new output), the last frame always lands, and a finished
view stops sending. The live part is one HTML widget, so a frame is one message however
many fields changed. Every view also has a one-line ``str()`` and a text/HTML repr for
frontends without widgets.

The views' HTML comes from ``omniq_nb.notebook.view_text``, their pacing (``Throttle``,
``Expectations``) from ``omniq_nb.notebook.view_timing``, a view's kept output read from the
store from ``omniq_nb.notebook.view_output``; the ``Dashboard`` lives in
``omniq_nb.notebook.dashboard_view`` and is importable from here too. These two are the only
modules that import ipywidgets.
"""

from __future__ import annotations

import asyncio
import builtins
import html
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import ipywidgets as widgets

from omniq_nb.estimates import TaskStats, elapsed, estimate_parts, group_time_left, seconds_text
from omniq_nb.handles import GroupHandle, TaskHandle
from omniq_nb.history import RunHistory
from omniq_nb.jobs import keep_running
from omniq_nb.models import Task, TaskOutput, TaskStatus, WorkerInfo
from omniq_nb.notebook.dashboard_view import Dashboard
from omniq_nb.notebook.view_output import StoredOutput
from omniq_nb.notebook.view_text import COLORS, badge, group_elapsed, preview, status_text, task_table
from omniq_nb.notebook.view_timing import MIN_INTERVAL as _MIN_INTERVAL
from omniq_nb.notebook.view_timing import Expectations, Throttle
from omniq_nb.serialization import BlobSerializer
from omniq_nb.terminal import OUTPUT_DROPPED, display_parts

__all__ = ["Actions", "Dashboard", "Expectations", "GroupView", "TaskView", "Throttle"]

logger = logging.getLogger(__name__)

_TICK = 1.0  # seconds between redraws of a running view's clock
_MAX_OUTPUT_CHARS = 1 << 20  # output kept in a view (as OUTPUT_LIMIT by default); older text is dropped
_GROUP_ROWS = 50  # rows shown in a group's task table


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

    async def output(self, task_id: str, /, *, after: int = 0, limit: int = 1000) -> TaskOutput:
        """Return a page of what a task printed, as kept (``OUTPUT_LIMIT``)."""
        ...

    @property
    def history(self) -> RunHistory:
        """The durations of past runs, for expected durations and ETAs."""
        ...


class TaskView:
    """Live view of one task: status badge, progress, output, result or error, cancel and retry.

    Its output comes live from this kernel when this kernel runs the task, else from the
    store, which keeps it (``StoredOutput``: what was kept so far, then what is added).

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
        self._expectations = Expectations(actions.history, self.refresh)
        self._tick: asyncio.TimerHandle | None = None
        self._jobs: set[asyncio.Future[None]] = set()
        self._stored = StoredOutput(handle.id, actions, lambda: self.handle.task.status, self._show_stored)
        self._render()
        handle.observe(self._changed)
        self._stored.start()

    def refresh(self) -> None:
        """Redraw soon (throttled); the frame after the task finishes is sent at once."""
        if not self._finished:
            self._throttle.request(final=self.handle.done())

    def _changed(self, _: TaskHandle) -> None:
        # a finished task still changes: its stored row (result, times) follows the event that
        # finished it when another process ran it, and a retry brings it back
        self._finished = False
        self._stored.changed()
        self.refresh()

    def write(self, name: str, text: str) -> None:
        """Add what the task wrote to its output area (from the loop, live from this kernel; batched per frame)."""
        self._stored.live()
        self._pending_text.append((name, text))
        self._throttle.request()

    def display(self, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        """Show something the task displayed in its output area (live from this kernel)."""
        self._stored.live()
        self._show_display(data, metadata)

    def _show_stored(self, page: TaskOutput) -> None:
        """Add kept output read from the store; say first when its head was dropped."""
        if page.dropped and not self._output.outputs and not self._pending_text:
            self._pending_text.append(("stderr", OUTPUT_DROPPED + "\n"))
        for chunk in page.chunks:
            if chunk.stream == "display":
                self._flush_text()
                self._show_display(*display_parts(chunk.text))
            else:
                self._pending_text.append((chunk.stream, chunk.text))
        self._throttle.request()

    def _show_display(self, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        self._output.outputs = (
            *self._output.outputs,
            {"output_type": "display_data", "data": data, "metadata": metadata},
        )

    def __str__(self) -> str:
        """Return a one-line summary: name, id, status, attempt, progress, expected duration and ETA."""
        task = self.handle.task
        estimate = "".join(f" · {part}" for part in self._estimate(task))
        return f"{task.name} [{task.id}] {status_text(task)} {task.progress:.0%}{estimate}"

    def _estimate(self, task: Task) -> list[str]:
        return [] if task.status.is_terminal else estimate_parts(task, self._expectations.of(task.name))

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
        seconds = elapsed(task)
        percent = 100 * (1.0 if task.status is TaskStatus.SUCCEEDED else task.progress)
        details = [f"{percent:.0f}%"]
        if seconds is not None:
            details.append(f"{seconds:.1f} s")
        details += [html.escape(part) for part in self._estimate(task)]
        if task.progress_message:
            details.append(html.escape(task.progress_message))
        return (
            f'<div style="font-family:var(--jp-ui-font-family,sans-serif)"><b>{html.escape(task.name)}</b> '
            f"<code>{task.id}</code> {badge(task)}"
            f'<div style="background:#e9ecef;height:8px;border-radius:4px;margin:4px 0">'
            f'<div style="width:{percent:.1f}%;background:{COLORS[task.status]};height:8px;border-radius:4px">'
            f"</div></div><small>{' · '.join(details)}</small></div>"
        )

    def _outcome_html(self, task: Task) -> str:
        if task.has_value:
            try:
                value = None if task.result is None else self._actions.serializer.loads(task.result)
            except Exception as exc:  # the view must never raise into a cell
                return f"<pre>result unavailable: {html.escape(str(exc))}</pre>"
            return f"<b>result</b><pre>{html.escape(preview(value))}</pre>"
        if (
            task.status in (TaskStatus.FAILED, TaskStatus.SUCCEEDED) and task.error is not None
        ):  # else an earlier attempt's
            error = task.error
            text = f"{error.type}: {error.message}\n\n{error.traceback}".rstrip()
            return f"<b>error</b><pre style='color:#dc3545'>{html.escape(text)}</pre>"
        return f"<pre>{html.escape(task.status.value)}</pre>"

    def _act(self, action: Callable[[str], Awaitable[Any]]) -> None:
        """Run a button's action as a task on the loop: a click never blocks the kernel."""
        keep_running(self._acted(action), self._jobs)

    async def _acted(self, action: Callable[[str], Awaitable[Any]]) -> None:
        try:
            await action(self.handle.id)  # the queue hands the changed task to this view's handle
        except Exception as exc:  # a button must never raise into the frontend's handler
            self._outcome.value = f"<pre style='color:#dc3545'>{html.escape(str(exc))}</pre>"


class GroupView:
    """One aggregate bar for many tasks, with per-task rows on demand (no widget per task).

    The ETA comes from the expected durations of the unfinished tasks (``group_time_left``,
    shared by as many runs at once as the view has seen running together), else from the
    rate at which tasks finished so far.

    Args:
        group: the group handle (``.map()`` or ``enqueue_many``).
        min_interval: seconds between frames.
    """

    def __init__(self, group: GroupHandle, *, min_interval: float = _MIN_INTERVAL) -> None:
        self.group = group
        self._summary = widgets.HTML()
        self._rows = widgets.HTML()
        self._throttle = Throttle(self._render, min_interval)
        self._expectations = Expectations(group.queue.history, self._throttle.request)
        self._concurrency = 1  # the most of its tasks seen running at once
        self._tick: asyncio.TimerHandle | None = None
        self._toggle = widgets.ToggleButton(description="tasks", icon="list", layout=widgets.Layout(width="auto"))
        self._toggle.observe(lambda _: self._throttle.request(final=True), names="value")
        self.widget = widgets.VBox([self._summary, self._toggle, self._rows])
        self._render()
        for handle in group.handles:
            handle.observe(lambda _: self._throttle.request(final=group.done()))

    def __str__(self) -> str:
        """Return a one-line summary with counts per status, and the ETA while tasks are left."""
        counts = self.group.counts
        shown = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
        left = self._time_left([h.task for h in self.group.handles])
        return f"{len(self.group)} tasks: {shown}" + ("" if left is None else f" · ETA {seconds_text(left)}")

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        return {**bundle, "text/plain": str(self), "text/html": self._summary_html()}

    def _render(self) -> None:
        running = self.group.counts[TaskStatus.RUNNING]
        self._concurrency = max(self._concurrency, running)
        with self.widget.hold_sync():
            self._summary.value = self._summary_html()
            self._rows.value = task_table([h.task for h in self.group.handles[:_GROUP_ROWS]], len(self.group))
            self._rows.layout.display = None if self._toggle.value else "none"
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if running:  # the ETA counts down between the tasks' own changes
            self._tick = asyncio.get_running_loop().call_later(_TICK, self._throttle.request)

    def _time_left(self, tasks: builtins.list[Task]) -> float | None:
        """Return the seconds until the group is done: from expected durations, else from the rate so far."""
        unfinished = [task for task in tasks if not task.status.is_terminal]
        if not unfinished:
            return None
        known: dict[str, TaskStats | None] = {}
        for task in unfinished:
            if task.name not in known:
                known[task.name] = self._expectations.of(task.name)
        left = group_time_left(unfinished, known.__getitem__, concurrency=self._concurrency)
        if left is not None:
            return left
        seconds = group_elapsed(tasks)
        finished = len(tasks) - len(unfinished)
        return len(unfinished) * seconds / finished if finished and seconds > 0 else None

    def _summary_html(self) -> str:
        counts = self.group.counts
        total = max(1, len(self.group))
        finished = sum(n for s, n in counts.items() if s.is_terminal)
        tasks = [h.task for h in self.group.handles]
        seconds = group_elapsed(tasks)
        rate = finished / seconds if seconds > 0 else 0.0
        left = self._time_left(tasks)
        eta = "" if left is None else f"ETA {seconds_text(left)} · "
        parts = " ".join(f'<span style="color:{COLORS[s]}">{n} {s.value}</span>' for s, n in counts.items() if n)
        width = 100 * finished / total
        return (
            f'<div><b>{total} tasks</b> {parts}<div style="background:#e9ecef;height:8px;border-radius:4px;'
            f'margin:4px 0"><div style="width:{width:.1f}%;background:#198754;height:8px;border-radius:4px">'
            f"</div></div><small>{finished}/{total} done · {rate:.1f} tasks/s · {eta}{seconds:.1f} s</small></div>"
        )
