"""The kernel's own queue and worker pool, and blocking waits that keep the kernel responsive.

The queue and pool live on the kernel's running event loop. A cell that blocks on a
result (``h.result()``) cannot simply wait: the pool needs the same loop to make progress.
The wait therefore re-enters the loop with ``nest-asyncio2`` (the maintained fork that
ipykernel 7 itself depends on, applied only when such a wait first happens), so the pool
and the views it updates keep running while the cell waits, and widget (comm) messages from
the browser are handled as they arrive (see ``_comms_served``); other requests, such as the
next cell, run after it. An interrupt stops the wait, not the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any, TypeVar

from omniq_nb import handles
from omniq_nb.config import Settings
from omniq_nb.context import OutputSink, set_origin, set_owner
from omniq_nb.core import AsyncOmniQ, OmniQ
from omniq_nb.errors import OmniQError
from omniq_nb.handles import GroupHandle, TaskHandle
from omniq_nb.models import Task
from omniq_nb.notebook.output import CellOutputs, install_routing, remove_routing
from omniq_nb.notebook.widgets import Dashboard, GroupView, TaskView
from omniq_nb.task import use_queue
from omniq_nb.worker import AsyncWorkerPool

logger = logging.getLogger(__name__)

T = TypeVar("T")

_COMM_MESSAGES = frozenset({"comm_open", "comm_msg", "comm_close"})
_SHUTDOWN_TIMEOUT = 10.0  # seconds the kernel's shutdown waits for the pool to hand work back


class KernelRunner:
    """Owns the kernel's queue (and pool); everything a notebook does goes through it.

    Args:
        shell: the IPython shell of the kernel.
        settings: settings (from env and YAML by default).
    """

    current: KernelRunner | None = None
    """The runner of this kernel, once the extension is loaded."""

    def __init__(self, shell: Any, settings: Settings | None = None) -> None:
        self.shell = shell
        self.loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._nested = False
        self.outputs = CellOutputs(shell)
        self.views: dict[str, TaskView] = {}
        self._dashboards: weakref.WeakSet[Dashboard] = weakref.WeakSet()
        self.core = AsyncOmniQ(settings=settings or Settings.from_env(), runner=self.block)
        self.block(self.core.open)
        self.queue = OmniQ.attached(self.core, _KernelCaller(self))
        self.pool: AsyncWorkerPool | None = None
        use_queue(self.queue)
        set_owner(self.outputs.kernel)  # tasks enqueued here belong to this kernel (kernel affinity)
        install_routing(shell)
        handles.display_hook = self.view
        shell.events.register("pre_run_cell", self._before_cell)
        self._unpatch_shutdown = _on_kernel_shutdown(shell, self.shutdown_from_control)
        KernelRunner.current = self

    def block(self, fn: Callable[..., Awaitable[T]], /, *args: Any) -> T:
        """Run ``fn(*args)`` on the kernel's loop and wait for it, from a cell or any thread.

        An ``OmniQError`` or ``TimeoutError`` (a failed task, a wait too long) is raised from
        here, without the frames of the nested wait (asyncio, nest_asyncio2, the queue) that a
        notebook would show above the task's own remote traceback.

        Raises:
            KeyboardInterrupt: the kernel was interrupted; the wait stops (the work it waited
                for, such as a task, goes on).
        """
        if threading.get_ident() != self._thread:
            return asyncio.run_coroutine_threadsafe(_as_coroutine(fn, *args), self.loop).result()
        if not self.loop.is_running():
            return self.loop.run_until_complete(_as_coroutine(fn, *args))
        if not self._nested:
            import nest_asyncio2

            nest_asyncio2.apply(self.loop)
            self._nested = True
        waiting = self.loop.create_task(_as_coroutine(fn, *args))
        interrupted = False

        def on_interrupt(signum: int, frame: Any) -> None:
            # The default handler would raise KeyboardInterrupt inside whichever pool task runs
            # at that instant and kill it; stop only the wait instead.
            nonlocal interrupted
            interrupted = True
            waiting.cancel()

        previous = _swap_sigint(on_interrupt)
        try:
            with _comms_served(self.shell):
                return self.loop.run_until_complete(waiting)
        except asyncio.CancelledError:
            if interrupted:
                raise KeyboardInterrupt from None
            raise
        except (OmniQError, TimeoutError) as exc:  # a task's outcome: the wait's own frames say nothing
            raise exc.with_traceback(None) from exc.__cause__
        finally:
            _swap_sigint(previous)
            if not waiting.done():
                waiting.cancel()

    def start_pool(
        self, *, concurrency: int | None = None, kind: str | None = None, shared: bool = False
    ) -> AsyncWorkerPool:
        """Start the kernel's pool, replacing a running one (it stops gracefully first).

        The pool runs this kernel's tasks and those of no live kernel; with ``shared``, every
        task of its queues, other kernels' too.

        Raises:
            ValueError: a bad ``concurrency`` or ``kind``.
        """
        pool = AsyncWorkerPool(
            self.core,
            concurrency=concurrency,
            kind=kind,
            kernel=self.outputs.kernel,
            shared=shared,
            output=self._output_for,
        )
        self.stop_pool()
        self.block(pool.start)
        self.pool = pool
        return pool

    def stop_pool(self) -> None:
        """Stop the kernel's pool gracefully (running work goes back to the queue)."""
        pool, self.pool = self.pool, None
        if pool is not None:
            self.block(pool.stop)

    async def aclose(self) -> None:
        """Close the dashboards, stop the pool and close the queue's connections (on the kernel's loop)."""
        for dashboard in list(self._dashboards):
            dashboard.close()
        pool, self.pool = self.pool, None
        if pool is not None:
            await pool.stop(timeout=_SHUTDOWN_TIMEOUT / 2)
        await self.core.close()

    def close(self) -> None:
        """Stop the pool, close the queue, and undo what loading the extension did."""
        with contextlib.suppress(ValueError):
            self.shell.events.unregister("pre_run_cell", self._before_cell)
        self._unpatch_shutdown()
        remove_routing(self.shell)
        handles.display_hook = None
        self.block(self.aclose)
        use_queue(None)
        set_owner(None)
        if KernelRunner.current is self:
            KernelRunner.current = None

    def shutdown_from_control(self) -> None:
        """Close while the kernel shuts down (its control thread handles that request)."""
        if threading.get_ident() == self._thread:
            self.block(self.aclose)
            return
        try:
            asyncio.run_coroutine_threadsafe(self.aclose(), self.loop).result(_SHUTDOWN_TIMEOUT)
        except Exception:
            logger.exception("the kernel's worker pool did not stop cleanly")

    def _before_cell(self, *_: Any) -> None:
        set_origin(self.outputs.remember_current_cell())

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


class _KernelCaller:
    """Runs ``OmniQ``'s calls on the kernel's loop (what a portal does for a plain ``OmniQ``)."""

    def __init__(self, runner: KernelRunner) -> None:
        self._runner = runner

    def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        return self._runner.block(partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._runner.close()


@contextlib.contextmanager
def _comms_served(shell: Any) -> Iterator[None]:
    """Let comm messages (widgets) through while a cell blocks in a nested wait.

    ipykernel dispatches shell messages one after another: in 7 each from a task bound to
    one persistent context that the blocked cell is itself running in (so the nested loop
    cannot step it), in 6 from a queue that waits for the running cell. While the wait
    lasts, comm messages are taken off that path and handled at once (7: by the kernel's
    own concurrent comm dispatch, in a task of their own context; 6: by the kernel's comm
    handler). Other messages keep their usual path and run after the cell.
    """
    kernel: Any = getattr(shell, "kernel", None)
    manager = getattr(getattr(kernel, "shell_channel_thread", None), "manager", None)
    forwarded: Any = getattr(getattr(manager, "_shell_channel_to_main", None), "to_stream", None)
    stream: Any = forwarded if forwarded is not None else getattr(kernel, "shell_stream", None)
    original = getattr(stream, "_recv_callback", None)
    if original is None:
        yield
        return

    def receive(message: Any) -> Any:
        parsed = _comm_message(kernel, message)
        if parsed is None:
            return original(message)
        if forwarded is not None:
            return kernel.shell_main(None, message)
        idents, frames = parsed
        content = kernel.session.deserialize(frames, content=True, copy=False)
        return kernel.shell_handlers[content["header"]["msg_type"]](stream, idents, content)

    stream._recv_callback = receive
    try:
        yield
    finally:
        stream._recv_callback = original


def _comm_message(kernel: Any, message: Any) -> tuple[Any, Any] | None:
    """Return ``(idents, frames)`` when ``message`` is a comm message, else ``None``."""
    try:
        idents, frames = kernel.session.feed_identities(message, copy=False)
        header = kernel.session.deserialize(frames, content=False, copy=False)["header"]
    except Exception:
        return None
    return (idents, frames) if header.get("msg_type") in _COMM_MESSAGES else None


def _swap_sigint(handler: Any) -> Any:
    """Install ``handler`` for SIGINT (main thread only) and return the previous one."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, handler)


async def _as_coroutine(fn: Callable[..., Awaitable[T]], /, *args: Any) -> T:
    return await fn(*args)


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
