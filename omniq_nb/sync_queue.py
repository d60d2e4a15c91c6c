"""``OmniQ``: the blocking twin of ``AsyncOmniQ``; every method is one call through its bridge.

The twin holds no queue logic: each method runs its ``AsyncOmniQ`` namesake on the queue's
loop through a blocking ``LoopBridge`` (``omniq_nb.bridge``) and returns what it returns.
Import the class from ``omniq_nb`` or ``omniq_nb.core``.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from omniq_nb.admin import BlockingQueueAdmin, StatusFilter
from omniq_nb.async_queue import LIST_LIMIT, AsyncOmniQ
from omniq_nb.bridge import BlockingBridge, ThreadBridge, on_loop
from omniq_nb.config import Settings
from omniq_nb.estimates import TaskStats
from omniq_nb.events import EventListener
from omniq_nb.handles import GroupHandle, TaskHandle
from omniq_nb.models import Task
from omniq_nb.storage import Storage


class OmniQ(BlockingQueueAdmin):
    """Blocking twin of ``AsyncOmniQ``: each method is one call through the queue's bridge.

    Works in scripts, in threads, and in notebook cells (its loop runs on a thread of its
    own, a ``ThreadBridge``). Handles it returns block in ``result()``; ``await handle`` also
    works. The bridge is also the async core's: ``q.core.bridge`` (a ``WorkerPool`` runs the
    pool on the queue's loop through it). Administration (``purge``, ``check``, ``workers``,
    ...) comes from ``BlockingQueueAdmin``.

    Args:
        settings: as for ``AsyncOmniQ``.
        storage: as for ``AsyncOmniQ``.
        **overrides: as for ``AsyncOmniQ``: settings by lower-case name.

    Raises:
        ConfigError: a setting is invalid.
        TypeError: an override names no setting.
        StorageError: the store cannot be opened.

    Example:
        >>> import operator
        >>> with OmniQ(db_url="memory://") as q:
        ...     q.enqueue(operator.add, 1, 2).status
        <TaskStatus.PENDING: 'pending'>

    """

    def __init__(self, *, settings: Settings | None = None, storage: Storage | None = None, **overrides: Any) -> None:
        bridge = ThreadBridge(name="omniq-sync", owner="OmniQ", alternative="AsyncOmniQ")
        self._core: AsyncOmniQ = bridge.open(
            on_loop, AsyncOmniQ, settings=settings, storage=storage, bridge=bridge, **overrides
        )
        self._bridge: BlockingBridge = bridge

    @classmethod
    def attached(cls, core: AsyncOmniQ, bridge: BlockingBridge) -> OmniQ:
        """Wrap an open ``AsyncOmniQ`` whose loop ``bridge`` runs coroutines on.

        The notebook layer uses this so that the kernel's queue, on the kernel's own loop, has
        the same blocking methods as any ``OmniQ``; ``close()`` then calls ``bridge.close()``.

        Args:
            core: the open async queue, built with ``bridge=bridge`` (so its handles block too).
            bridge: runs ``core``'s coroutines to completion and blocks (``call``), and closes.
        """
        queue = cls.__new__(cls)
        queue._bridge, queue._core = bridge, core
        return queue

    @classmethod
    def from_env(cls, **overrides: Any) -> OmniQ:
        """Blocking version of ``AsyncOmniQ.from_env``."""
        return cls(**overrides)

    def __enter__(self) -> OmniQ:
        """Return the open queue."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the queue."""
        self.close()

    @property
    def settings(self) -> Settings:
        """Return the queue's settings."""
        return self._core.settings

    @property
    def core(self) -> AsyncOmniQ:
        """Return the ``AsyncOmniQ`` this twin drives (it lives on the twin's loop; its ``bridge`` is the twin's)."""
        return self._core

    def close(self) -> None:
        """Blocking version of ``AsyncOmniQ.close``; also ends the loop thread."""
        self._bridge.close()

    def enqueue(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskHandle:
        """Blocking version of ``AsyncOmniQ.enqueue``."""
        return self._bridge.call(self._core.enqueue, fn, *args, **kwargs)

    def enqueue_call(
        self,
        fn: Callable[..., Any],
        /,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> TaskHandle:
        """Blocking version of ``AsyncOmniQ.enqueue_call``."""
        return self._bridge.call(self._core.enqueue_call, fn, args=args, kwargs=kwargs, **options)

    def enqueue_many(self, fn: Callable[..., Any], /, calls: Iterable[Sequence[Any]], **options: Any) -> GroupHandle:
        """Blocking version of ``AsyncOmniQ.enqueue_many``."""
        return self._bridge.call(self._core.enqueue_many, fn, calls, **options)

    def get(self, task_id: str, /) -> TaskHandle:
        """Blocking version of ``AsyncOmniQ.get``."""
        return self._bridge.call(self._core.get, task_id)

    def list(
        self,
        *,
        status: StatusFilter = None,
        queue: str | None = None,
        limit: int = LIST_LIMIT,
    ) -> builtins.list[Task]:
        """Blocking version of ``AsyncOmniQ.list``."""
        return self._bridge.call(self._core.list, status=status, queue=queue, limit=limit)

    def cancel(self, task_id: str, /) -> bool:
        """Blocking version of ``AsyncOmniQ.cancel``."""
        return self._bridge.call(self._core.cancel, task_id)

    def retry(self, task_id: str, /) -> TaskHandle:
        """Blocking version of ``AsyncOmniQ.retry``."""
        return self._bridge.call(self._core.retry, task_id)

    def stats(self, fn: Any, /) -> TaskStats:
        """Blocking version of ``AsyncOmniQ.stats``."""
        return self._bridge.call(self._core.stats, fn)

    def on_event(self, listener: EventListener) -> Callable[[], None]:
        """Blocking version of ``AsyncOmniQ.on_event`` (the listener runs on the queue's loop)."""
        unsubscribe: Callable[[], None] = self._bridge.call(on_loop, self._core.on_event, listener)
        return unsubscribe

    def result(self, task_id: str, /, *, timeout: float | None = None) -> Any:
        """Blocking version of ``AsyncOmniQ.result``."""
        return self._bridge.call(self._core.result, task_id, timeout=timeout)

    def results(
        self, task_ids: Sequence[str], /, *, timeout: float | None = None, return_exceptions: bool = False
    ) -> builtins.list[Any]:
        """Blocking version of ``AsyncOmniQ.results``."""
        return self._bridge.call(self._core.results, task_ids, timeout=timeout, return_exceptions=return_exceptions)
