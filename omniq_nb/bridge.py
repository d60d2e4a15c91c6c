"""Loop bridges: how code runs a queue's coroutine functions on the queue's own event loop.

An ``AsyncOmniQ`` lives on one event loop: its store connections, locks and events belong
to it. Every caller that is not simply awaiting on that loop goes through the queue's
*bridge*, one object with ``call(fn, *args, **kwargs)`` and ``close()``:

- ``SameLoopBridge`` (a plain ``AsyncOmniQ``): the caller is on the queue's loop; ``call``
  hands the coroutine back, to be awaited.
- ``ThreadBridge`` (a plain ``OmniQ``): the queue's loop runs on a thread of its own; ``call``
  blocks the calling thread until the coroutine has run there.
- ``KernelBridge`` (``omniq_nb.notebook.kernel_bridge``, the notebook's queue): the loop is
  the kernel's; ``call`` blocks the cell without blocking the loop.

Handles run ``result()``, ``cancel()`` and ``retry()`` through their queue's bridge, so they
return coroutines from an ``AsyncOmniQ`` and block from an ``OmniQ``.

Example:
    >>> import asyncio
    >>> async def add(a, b):
    ...     return a + b
    >>> bridge = ThreadBridge(name="example", owner="OmniQ", alternative="AsyncOmniQ")
    >>> bridge.call(add, 1, b=2)
    3
    >>> bridge.close()
    >>> asyncio.run(SameLoopBridge().call(add, 1, 2))
    3

"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, ExitStack
from functools import partial
from typing import Any, Protocol, TypeVar

from anyio.from_thread import start_blocking_portal

T = TypeVar("T")

_FROM_ASYNC = "{owner} (sync) was called from async code on its own loop; use {alternative} and await it."
_CLOSED = "this {owner} is closed (its with block ended, or close() was called); open a new one to go on"


class LoopBridge(Protocol):
    """Runs coroutine functions of a queue on the queue's loop (see the module's docstring)."""

    def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on the queue's loop: return its result, or the awaitable itself."""
        ...

    def close(self) -> None:
        """Release what the bridge holds (its loop thread, the queue it drives); idempotent."""
        ...


class BlockingBridge(LoopBridge, Protocol):
    """A bridge whose ``call`` blocks until the coroutine has run and returns its result (sync twins)."""

    def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` to completion on the queue's loop and return its result."""
        ...


class SameLoopBridge:
    """The bridge of an ``AsyncOmniQ`` used from its own loop: ``call`` hands the coroutine back."""

    def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> Awaitable[T]:
        """Return ``fn(*args, **kwargs)`` unawaited, for the caller to await."""
        return fn(*args, **kwargs)

    def close(self) -> None:
        """Do nothing: the caller owns the loop and closes the queue itself."""


class ThreadBridge:
    """A private event loop on a thread of its own, and the blocking calls into it.

    Works in scripts, in threads, and in notebook cells whose thread already runs a loop
    (where ``asyncio.run`` fails). Async objects are built and entered *through* the bridge,
    so their connections, locks and events belong to its loop.

    Args:
        name: the thread's name.
        owner: the sync class's name, for error messages.
        alternative: the async class to suggest when called from the bridge's own loop.

    """

    def __init__(self, *, name: str, owner: str, alternative: str) -> None:
        self._owner, self._alternative = owner, alternative
        self._stack = ExitStack()
        self._anyio_portal = self._stack.enter_context(start_blocking_portal(name=name))
        self._thread_id: int | None = self._anyio_portal.call(threading.get_ident)
        self._closed = False

    def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the bridge's loop and block until it returns.

        Raises:
            RuntimeError: called from the bridge's own loop (which would deadlock), or after ``close()``.

        """
        if threading.get_ident() == self._thread_id:
            raise RuntimeError(_FROM_ASYNC.format(owner=self._owner, alternative=self._alternative))
        if self._closed:
            raise RuntimeError(_CLOSED.format(owner=self._owner))
        return self._anyio_portal.call(partial(fn, *args, **kwargs))

    def enter(self, manager: AbstractAsyncContextManager[T]) -> T:
        """Enter an async context manager on the bridge's loop; it is exited by ``close()``."""
        return self._stack.enter_context(self._anyio_portal.wrap_async_context_manager(manager))

    def open(
        self, factory: Callable[..., Awaitable[AbstractAsyncContextManager[T]]], /, *args: Any, **kwargs: Any
    ) -> T:
        """Build an async context manager on the bridge's loop and enter it there; ``close()`` exits it.

        Built on the bridge's loop, its connections, locks and events belong to that loop.

        Args:
            factory: an async function that builds the manager from ``args`` and ``kwargs``.
            *args: passed to ``factory``.
            **kwargs: passed to ``factory``.

        Returns:
            What entering the manager returns.

        Raises:
            BaseException: whatever building or entering raised; the bridge is closed first.

        """
        try:
            return self.enter(self.call(factory, *args, **kwargs))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Exit what was entered (on the bridge's loop), then stop the loop and its thread."""
        self._thread_id, self._closed = None, True
        self._stack.close()


async def on_loop(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Return ``fn(*args, **kwargs)``, called on the running loop: pass it to a bridge's ``call``.

    The sync twins build their async halves this way, so that their asyncio events and locks
    belong to the bridge's loop, and subscribe listeners there.
    """
    return fn(*args, **kwargs)
