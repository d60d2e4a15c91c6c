"""``KernelBridge``: the kernel's queue runs its coroutines on the kernel's own loop.

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
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from omniq_nb.errors import OmniQError

T = TypeVar("T")

_COMM_MESSAGES = frozenset({"comm_open", "comm_msg", "comm_close"})


class KernelBridge:
    """The blocking ``LoopBridge`` of the notebook's queue: waits on the kernel's loop, from a cell or any thread.

    Build it on the kernel's loop (it takes the running loop and its thread).

    Args:
        shell: the IPython shell of the kernel (for serving comm messages during a wait).
        on_close: what ``close()`` does (the kernel runner closes the queue and its pool).
    """

    def __init__(self, shell: Any, on_close: Callable[[], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self._shell = shell
        self._on_close = on_close
        self._thread = threading.get_ident()
        self._nested = False

    def on_loop_thread(self) -> bool:
        """Return True when called from the thread that runs the kernel's loop."""
        return threading.get_ident() == self._thread

    def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the kernel's loop and wait for it, from a cell or any thread.

        An ``OmniQError`` or ``TimeoutError`` (a failed task, a wait too long) is raised from
        here, without the frames of the nested wait (asyncio, nest_asyncio2, the queue) that a
        notebook would show above the task's own remote traceback.

        Raises:
            KeyboardInterrupt: the kernel was interrupted; the wait stops (the work it waited
                for, such as a task, goes on).
        """
        if not self.on_loop_thread():
            return asyncio.run_coroutine_threadsafe(_as_coroutine(fn, *args, **kwargs), self.loop).result()
        if not self.loop.is_running():
            return self.loop.run_until_complete(_as_coroutine(fn, *args, **kwargs))
        if not self._nested:
            import nest_asyncio2

            nest_asyncio2.apply(self.loop)
            self._nested = True
        waiting = self.loop.create_task(_as_coroutine(fn, *args, **kwargs))
        interrupted = False

        def on_interrupt(signum: int, frame: Any) -> None:
            # The default handler would raise KeyboardInterrupt inside whichever pool task runs
            # at that instant and kill it; stop only the wait instead.
            nonlocal interrupted
            interrupted = True
            waiting.cancel()

        previous = _swap_sigint(on_interrupt)
        try:
            with _comms_served(self._shell):
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

    def close(self) -> None:
        """Close the kernel's queue (``OmniQ.close()`` on the notebook's queue ends up here)."""
        self._on_close()


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


async def _as_coroutine(fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
    return await fn(*args, **kwargs)
