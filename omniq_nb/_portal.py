"""The one helper behind every sync twin: run an async object on a private loop thread.

``start_blocking_portal()`` runs an event loop on a thread of its own, so blocking calls work
in scripts, in threads, and in notebook cells whose thread already runs a loop (where
``asyncio.run`` fails). Async objects are built and entered *through* the portal, so their
connections, locks and events belong to that loop.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, ExitStack
from functools import partial
from typing import Any, TypeVar

from anyio.from_thread import start_blocking_portal

T = TypeVar("T")

_FROM_ASYNC = "{owner} (sync) was called from async code on its own loop; use {alternative} and await it."


class Portal:
    """A private event loop on its own thread, and the blocking calls into it.

    Args:
        name: the thread's name.
        owner: the sync class's name, for error messages.
        alternative: the async class to suggest when called from the portal's own loop.

    """

    def __init__(self, *, name: str, owner: str, alternative: str) -> None:
        self._owner, self._alternative = owner, alternative
        self._stack = ExitStack()
        self._portal = self._stack.enter_context(start_blocking_portal(name=name))
        self._thread_id: int | None = self._portal.call(threading.get_ident)

    def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the portal's loop and block until it returns.

        Raises:
            RuntimeError: called from the portal's own loop (which would deadlock).

        """
        if threading.get_ident() == self._thread_id:
            raise RuntimeError(_FROM_ASYNC.format(owner=self._owner, alternative=self._alternative))
        return self._portal.call(partial(fn, *args, **kwargs))

    def enter(self, manager: AbstractAsyncContextManager[T]) -> T:
        """Enter an async context manager on the portal's loop; it is exited by ``close()``."""
        return self._stack.enter_context(self._portal.wrap_async_context_manager(manager))

    def close(self) -> None:
        """Exit what was entered (on the portal's loop), then stop the loop and its thread."""
        self._thread_id = None
        self._stack.close()
