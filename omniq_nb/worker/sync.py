"""``WorkerPool``: the blocking twin of ``AsyncWorkerPool``, run on the ``OmniQ``'s private loop thread."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType

from omniq_nb.bridge import BlockingBridge, on_loop
from omniq_nb.context import OutputSink
from omniq_nb.core import OmniQ
from omniq_nb.models import Task, WorkerInfo
from omniq_nb.worker.pool import STOP_TIMEOUT, AsyncWorkerPool
from omniq_nb.worker.signals import StopSignals, serve_until_signal


class WorkerPool:
    """Blocking twin of ``AsyncWorkerPool``: the pool runs on the queue's private loop thread.

    Args:
        queue: an ``OmniQ`` (its loop hosts the pool).
        concurrency: as for ``AsyncWorkerPool``.
        kind: as for ``AsyncWorkerPool``.
        queues: as for ``AsyncWorkerPool``.
        lease: as for ``AsyncWorkerPool``.
        name: as for ``AsyncWorkerPool``.
        kernel: as for ``AsyncWorkerPool``.
        shared: as for ``AsyncWorkerPool``.
        output: as for ``AsyncWorkerPool`` (called on the pool's loop thread).

    Raises:
        ConfigError: as for ``AsyncWorkerPool``.

    Example:
        >>> import omniq_nb as omniq
        >>> with omniq.OmniQ(db_url="memory://") as q, WorkerPool(q, concurrency=2):
        ...     q.enqueue(sum, [1, 2]).result(timeout=10)
        3
    """

    def __init__(
        self,
        queue: OmniQ,
        *,
        concurrency: int | None = None,
        kind: str | None = None,
        queues: Sequence[str] | None = None,
        lease: float | None = None,
        name: str | None = None,
        kernel: str | None = None,
        shared: bool | None = None,
        output: Callable[[Task], OutputSink | None] | None = None,
    ) -> None:
        self._bridge: BlockingBridge = queue.core.bridge  # the pool lives on the queue's loop
        self.pool: AsyncWorkerPool = self._bridge.call(
            on_loop,
            AsyncWorkerPool,
            queue.core,
            concurrency=concurrency,
            kind=kind,
            queues=queues,
            lease=lease,
            name=name,
            kernel=kernel,
            shared=shared,
            output=output,
        )
        """The async pool this one drives (its ``id``, ``name``, ``failure``...)."""

    def __enter__(self) -> WorkerPool:
        """Start the pool."""
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the pool gracefully."""
        self.stop()

    @property
    def running(self) -> bool:
        """Return True between ``start()`` and ``stop()``."""
        return self.pool.running

    @property
    def busy(self) -> int:
        """Return how many runs occupy a slot now (see ``AsyncWorkerPool.busy``)."""
        return self.pool.busy

    def start(self) -> None:
        """Blocking version of ``AsyncWorkerPool.start``: returns once the pool runs."""
        self._bridge.call(self.pool.start)

    def info(self) -> WorkerInfo:
        """Return the pool's registry entry (see ``AsyncWorkerPool.info``)."""
        return self.pool.info()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Blocking version of ``AsyncWorkerPool.stop``."""
        self._bridge.call(self.pool.stop, timeout)

    def run(self) -> None:
        """Blocking version of ``AsyncWorkerPool.run``: SIGINT and SIGTERM are caught in this (main) thread."""
        with StopSignals() as caught:
            self._bridge.call(serve_until_signal, self.pool, signals=caught)

    def wait(self) -> None:
        """Blocking version of ``AsyncWorkerPool.wait``."""
        self._bridge.call(self.pool.wait)
