"""The kernel's own queue and worker pool, and what a notebook does with them.

The queue (an ``OmniQ`` over an ``AsyncOmniQ``) and the pool live on the kernel's running
event loop; blocking calls reach that loop through a ``KernelBridge`` (see
``omniq_nb.notebook.kernel_bridge``: a cell that waits keeps the kernel responsive).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable
from typing import Any

from omniq_nb import handles
from omniq_nb.config import Settings
from omniq_nb.context import OutputSink, set_origin, set_owner
from omniq_nb.core import AsyncOmniQ, OmniQ
from omniq_nb.errors import OmniQError
from omniq_nb.handles import GroupHandle, TaskHandle
from omniq_nb.models import Task
from omniq_nb.notebook.activity import Keepalive
from omniq_nb.notebook.interrupts import CellTasks, cancel_unfinished, cancelled_line, ended_on_interrupt
from omniq_nb.notebook.kernel_bridge import KernelBridge
from omniq_nb.notebook.output import CellOutputs, install_routing, remove_routing
from omniq_nb.notebook.widgets import Dashboard, GroupView, TaskView
from omniq_nb.task import use_queue
from omniq_nb.worker import AsyncWorkerPool

logger = logging.getLogger(__name__)

NOTEBOOK_SETTINGS = ("interrupt", "keepalive", "output_limit", "output_lines")
"""The settings ``%omniq config`` shows and changes in a running kernel."""
_SHUTDOWN_TIMEOUT = 10.0  # seconds the kernel's shutdown waits for the pool to hand work back
_SHUTDOWN_GRACE = 1.0  # seconds running tasks get to finish when the kernel goes; then they are handed back
_GEVENT_DEFAULT = (
    "DEFAULT_WORKER=gevent applies to omniq-nb worker only: this kernel's pool runs sync tasks on threads; "
    "tasks with kind='gevent' wait for omniq-nb worker --kind gevent"
)


class KernelRunner:
    """Owns the kernel's queue (and pool); everything a notebook does goes through it.

    Attributes:
        queue: the kernel's queue object, an ``OmniQ`` (not a queue *name*, as ``Task.queue``
            and ``pool.queues`` are); ``omniq.get`` and ``.submit`` use it.
        core: the ``AsyncOmniQ`` behind ``queue``, on the kernel's loop (views and the pool use it).
        bridge: runs ``core``'s coroutines on the kernel's loop and waits (``queue`` and handles use it).
        pool: the kernel's worker pool, when one runs.
        cell_tasks: the tasks the running cell launched (cancelled on an interrupt with ``INTERRUPT=cancel``).
        keepalive: the activity signals sent while the pool runs tasks (``KEEPALIVE``).

    Args:
        shell: the IPython shell of the kernel.
        settings: settings (from env and YAML by default).
    """

    current: KernelRunner | None = None
    """The runner of this kernel, once the extension is loaded."""

    def __init__(self, shell: Any, settings: Settings | None = None) -> None:
        self.shell = shell
        self.bridge = KernelBridge(shell, on_close=self.close)
        self.loop = self.bridge.loop
        self.outputs = CellOutputs(shell)
        self.views: dict[str, TaskView] = {}
        self._dashboards: weakref.WeakSet[Dashboard] = weakref.WeakSet()
        self.core = AsyncOmniQ(settings=settings or Settings.from_env(), bridge=self.bridge)
        self.bridge.call(self.core.open)
        self.queue = OmniQ.attached(self.core, self.bridge)
        self.pool: AsyncWorkerPool | None = None
        use_queue(self.queue)
        set_owner(self.outputs.kernel)  # tasks enqueued here belong to this kernel (kernel affinity)
        install_routing(shell)
        handles.display_hook = self.view
        self.cell_tasks = CellTasks()
        self._unwatch_writes = self.core.on_local_write(self.cell_tasks.saw)
        shell.events.register("pre_run_cell", self._before_cell)
        shell.events.register("post_run_cell", self._after_cell)
        self.keepalive = Keepalive(getattr(shell, "kernel", None), self._working)
        self.keepalive.set_interval(self.core.settings.keepalive)
        self._unpatch_shutdown = _on_kernel_shutdown(shell, self.shutdown_from_control)
        KernelRunner.current = self

    def start_pool(
        self, *, concurrency: int | None = None, kind: str | None = None, shared: bool = False
    ) -> AsyncWorkerPool:
        """Start the kernel's pool, replacing a running one (it stops gracefully first).

        The pool runs this kernel's tasks and those of no live kernel; with ``shared``, every
        task of its queues, other kernels' too.

        ``DEFAULT_WORKER=gevent`` is for ``omniq-nb worker``: without a ``kind``, the kernel's
        pool then runs sync tasks on threads (and says so) instead of refusing to start.

        Raises:
            ValueError: a bad ``concurrency`` or ``kind``; ``kind="gevent"`` (a kernel cannot
                host a gevent pool: the message names ``omniq-nb worker --kind gevent``).
        """
        if kind is None and self.core.settings.default_worker == "gevent":
            logger.warning(_GEVENT_DEFAULT)
            kind = "thread"
        pool = AsyncWorkerPool(
            self.core,
            concurrency=concurrency,
            kind=kind,
            kernel=self.outputs.kernel,
            shared=shared,
            output=self._output_for,
        )
        self.stop_pool()
        self.bridge.call(pool.start)
        self.pool = pool
        return pool

    def stop_pool(self) -> None:
        """Stop the kernel's pool gracefully (running work goes back to the queue)."""
        pool, self.pool = self.pool, None
        if pool is not None:
            self.bridge.call(pool.stop)

    async def aclose(self) -> None:
        """Close the dashboards, stop the pool and close the queue's connections (on the kernel's loop)."""
        for dashboard in list(self._dashboards):
            dashboard.close()
        pool, self.pool = self.pool, None
        if pool is not None:
            # a frontend's restart or shutdown signals the kernel after 2.5 s (jupyter_client's
            # default wait of 5 s): hand running tasks back well before, to run again elsewhere
            await pool.stop(timeout=_SHUTDOWN_GRACE)
        await self.core.close()

    def configure(self, **changes: Any) -> Settings:
        """Change settings of the kernel's queue by lower-case name (the notebook's own: ``interrupt``, ``keepalive``).

        Returns:
            The settings now in force.

        Raises:
            ConfigError: a value is invalid (the message names the setting and what it accepts).
            TypeError: a name is not a setting.
        """
        self.core.settings = self.core.settings.with_overrides(**changes)
        if "keepalive" in changes:
            self.keepalive.set_interval(self.core.settings.keepalive)
        return self.core.settings

    def close(self) -> None:
        """Stop the pool, close the queue, and undo what loading the extension did."""
        self.keepalive.close()
        self._unwatch_writes()
        for event, callback in (("pre_run_cell", self._before_cell), ("post_run_cell", self._after_cell)):
            with contextlib.suppress(ValueError):
                self.shell.events.unregister(event, callback)
        self._unpatch_shutdown()
        remove_routing(self.shell)
        handles.display_hook = None
        self.bridge.call(self.aclose)
        use_queue(None)
        set_owner(None)
        if KernelRunner.current is self:
            KernelRunner.current = None

    def shutdown_from_control(self) -> None:
        """Close while the kernel shuts down (its control thread handles that request)."""
        if self.bridge.on_loop_thread():
            self.bridge.call(self.aclose)
            return
        try:
            asyncio.run_coroutine_threadsafe(self.aclose(), self.loop).result(_SHUTDOWN_TIMEOUT)
        except Exception:
            logger.exception("the kernel's worker pool did not stop cleanly")

    def _before_cell(self, *_: Any) -> None:
        origin = self.outputs.remember_current_cell()
        set_origin(origin)
        self.cell_tasks.start(origin)

    def _after_cell(self, result: Any = None) -> None:
        """With ``INTERRUPT=cancel``, cancel the unfinished tasks of a cell that a kernel interrupt stopped."""
        if self.core.settings.interrupt != "cancel" or not ended_on_interrupt(result):
            return
        launched = self.cell_tasks.launched()
        if not launched:
            return
        try:
            cancelled = self.bridge.call(cancel_unfinished, self.core, launched)
        except OmniQError as exc:
            print(f"interrupted: could not cancel the tasks launched by this cell: {str(exc).splitlines()[0]}")
            return
        if cancelled:
            print(cancelled_line(cancelled))

    def _working(self) -> bool:
        """Return True while the kernel's pool runs tasks (read from the keepalive thread)."""
        pool = self.pool
        return pool is not None and pool.busy > 0

    def view(self, handle: TaskHandle | GroupHandle) -> TaskView | GroupView:
        """Return the live view of a handle (one per task, reused when shown again)."""
        if isinstance(handle, GroupHandle):
            return GroupView(handle)
        view = self.views.get(handle.id)
        if view is None:
            view = self.views[handle.id] = TaskView(handle, self.core)
        return view

    def dashboard(self) -> Dashboard:
        """Return a live dashboard of the store's workers and recent tasks (closed with the queue, at the latest)."""
        dashboard = Dashboard(self.core, kernel=self.outputs.kernel)
        self._dashboards.add(dashboard)
        return dashboard

    def _output_for(self, task: Task) -> Any:
        cell = self.outputs.sink_for(task.origin)
        if cell is None and task.id not in self.views:
            return None
        return _ViewOrCell(self, task.id, cell)


class _ViewOrCell:
    """A task's output sink: its live view when it has one, else the cell that launched it."""

    def __init__(self, runner: KernelRunner, task_id: str, cell: OutputSink | None) -> None:
        self._runner, self._task_id, self._cell = runner, task_id, cell

    def __call__(self, kind: str, payload: Any) -> None:
        view = self._runner.views.get(self._task_id)
        if view is not None and kind == "display":
            self._runner.loop.call_soon_threadsafe(view.display, *payload)
        elif view is not None:
            self._runner.loop.call_soon_threadsafe(view.write, kind, payload)
        elif self._cell is not None:
            self._cell(kind, payload)


def _on_kernel_shutdown(shell: Any, callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` when the kernel is asked to shut down; return the undo."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return lambda: None
    original = kernel.do_shutdown

    def do_shutdown(restart: bool) -> Any:
        callback()
        return original(restart)  # a coroutine in ipykernel 7, a dict in 6

    kernel.do_shutdown = do_shutdown

    def undo() -> None:
        kernel.do_shutdown = original

    return undo
