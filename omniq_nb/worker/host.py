"""The narrow interface a worker pool needs from the queue it serves (``AsyncOmniQ`` has it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from omniq_nb.config import Settings
from omniq_nb.models import Task
from omniq_nb.serialization import BlobSerializer
from omniq_nb.storage import Storage


class PoolHost(Protocol):
    """What a pool uses of its queue: the store, the settings, the serializer, and local change news.

    ``AsyncOmniQ`` satisfies it as it is; a test or an embedding can pass anything else that does.
    """

    @property
    def storage(self) -> Storage:
        """The store the pool claims from and writes outcomes to."""
        ...

    @property
    def settings(self) -> Settings:
        """Defaults (workers, queue, lease), retry backoff, poll interval and secret."""
        ...

    @property
    def serializer(self) -> BlobSerializer:
        """Loads calls and serializes results."""
        ...

    def publish(self, tasks: Sequence[Task] = ()) -> None:
        """Tell this process's listeners (handles, views) that ``tasks`` changed (nothing: re-read the store)."""
        ...

    def on_local_write(self, callback: Callable[[Sequence[Task]], None]) -> Callable[[], None]:
        """Call ``callback`` with the tasks of every write made in this process; returns the unsubscribe."""
        ...
