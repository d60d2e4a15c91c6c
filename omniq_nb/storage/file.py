"""The file store (``file:///abs/dir``): one file per task in a folder on this machine's disk.

No server and no extra to install: several processes on one machine share the folder (a
kernel and ``omniq-nb worker`` processes), never machines (network filesystems are
refused: their renames and locks are not reliable). See ``file_base`` for the folder's
layout, the store lock and the write order that survives a crash at any point.

``FileStorage`` is assembled from one mixin per protocol role over ``file_results.FileState``,
as ``MemoryStorage`` and ``SQLiteStorage`` are: ``FileResults`` (``file_results``),
``FileQueue`` (``file_queue``), ``FileAdmin`` (``file_admin``), ``FileRegistry`` and ``FileMaintenance``
(``file_maintenance``), ``FileOutput`` (``file_output``). The lifecycle rules come from ``storage.lifecycle``.
"""

from __future__ import annotations

from omniq_nb.storage.file_admin import FileAdmin
from omniq_nb.storage.file_maintenance import FileMaintenance, FileRegistry
from omniq_nb.storage.file_output import FileOutput
from omniq_nb.storage.file_queue import FileQueue

__all__ = ["FileStorage"]


class FileStorage(FileQueue, FileAdmin, FileRegistry, FileMaintenance, FileOutput):
    """A queue kept as files in a local folder (``file:///absolute/folder``).

    Args:
        url: ``file:///absolute/folder`` (created owner-only if missing).
        events: record a ``TaskEvent`` per transition.

    Capability flags: ``supports_notify`` is true (wake-up hints reach idle workers of
    other processes on this machine; polling stays the source of truth); ``multi_host``
    is false.

    Durability: a task's file and its folder are fsync'd on enqueue, settle, release,
    cancel, requeue, expiry and dependency moves; claims, lease renewals, progress and events are not, so
    after a power loss a claimed task may be pending again (it runs again: at least once).

    Example:
        >>> import asyncio, tempfile
        >>> async def main(folder):
        ...     async with FileStorage(f"file://{folder}/queue") as store:
        ...         return store.supports_notify, store.multi_host, await store.count(task_ids=[])
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     notify, multi_host, counts = asyncio.run(main(folder))
        >>> notify, multi_host, sum(counts.values())
        (True, False, 0)

    """
