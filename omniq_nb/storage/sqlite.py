"""SQLite store (the default): one file, one host, several processes, via aiosqlite.

WAL with ``synchronous=NORMAL`` (``FULL`` opt-in), ``busy_timeout``, a schema version
table with migrations, a partial index on the claim path. Network filesystems are refused:
WAL needs shared memory that they do not provide.

``SQLiteStorage`` is assembled from mixins, one per protocol role, all sharing one
connection through ``SQLiteConnection`` (mixins, not composition: every role needs the same
connection, lock and file check, and the store stays one object with plain methods):

- ``sqlite_base.SQLiteConnection``: open/close/clone, the clock, transactions, wake-ups;
- ``sqlite_results.SQLiteResults``: ``ResultStore`` (task reads);
- ``sqlite_queue.SQLiteQueue``: ``QueueStore`` (the transitions; builds on the reads);
- ``sqlite_registry.SQLiteRegistry``: ``WorkerRegistry``;
- ``sqlite_maintenance.SQLiteEvents`` and ``SQLiteMaintenance``: ``EventStore`` and ``MaintenanceStore``;
- ``sqlite_outcomes.SQLiteOutcomes``: ``OutcomeStore`` (results and events of a queue kept elsewhere);
- ``sqlite_output.SQLiteOutput``: ``TaskOutputStore`` (what tasks printed).

The file itself (URL parsing, owner-only creation) is ``sqlite_file``; the schema and its
migrations ``sqlite_schema``; shared SQL text ``sqlite_statements``; the row codec ``rows``.
"""

from __future__ import annotations

from omniq_nb.storage.sqlite_file import sqlite_path
from omniq_nb.storage.sqlite_maintenance import SQLiteEvents, SQLiteMaintenance
from omniq_nb.storage.sqlite_outcomes import SQLiteOutcomes
from omniq_nb.storage.sqlite_output import SQLiteOutput
from omniq_nb.storage.sqlite_queue import SQLiteQueue
from omniq_nb.storage.sqlite_registry import SQLiteRegistry

__all__ = ["SQLiteStorage", "sqlite_path"]


class SQLiteStorage(SQLiteQueue, SQLiteRegistry, SQLiteEvents, SQLiteMaintenance, SQLiteOutcomes, SQLiteOutput):
    """The default store: a SQLite file shared by the processes of one machine.

    Args:
        url: ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite://`` (in memory).
        events: record a ``TaskEvent`` per transition.
        synchronous: ``NORMAL`` (nothing committed is lost when a process dies) or ``FULL``
            (also survives power loss).

    Capability flags: ``supports_notify`` is true for a file (wake-up hints reach the other
    processes on it), false in memory; ``multi_host`` is false (one machine only).

    Example:
        >>> import asyncio
        >>> async def main():
        ...     async with SQLiteStorage("sqlite://") as store:
        ...         return store.supports_notify, store.multi_host, await store.count(task_ids=[])
        >>> asyncio.run(main())[:2]
        (False, False)

    """

    multi_host = False
