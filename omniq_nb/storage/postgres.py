"""PostgreSQL store: many hosts, many processes, via psycopg 3 and psycopg_pool.

Install with ``pip install 'omniq-nb[postgres]'``. Tables live in one schema (``?schema=``
in the URL, default ``omniq``), created and migrated on open under an advisory lock.
Claims use ``FOR UPDATE SKIP LOCKED``, times come from the server's clock, events are
written by triggers in the transition's transaction, and ``LISTEN/NOTIFY`` wakes idle
workers (polling stays the truth).

``PostgresStorage`` is assembled from mixins, one per protocol role, all sharing one pool
through ``PostgresConnection``, as ``SQLiteStorage`` is:

- ``postgres_base.PostgresConnection``: pool, open/close/clone, the clock, transactions, errors, wake-ups
  (the URL's options and schema-qualified SQL: ``postgres_url``);
- ``postgres_results.PostgresResults``: ``ResultStore``;
- ``postgres_queue.PostgresQueue``: ``QueueStore`` (builds on the reads);
- ``postgres_registry.PostgresRegistry``: ``WorkerRegistry``;
- ``postgres_maintenance.PostgresEvents`` and ``PostgresMaintenance``: ``EventStore`` and ``MaintenanceStore``
  (with the maintenance election, a leader row that works through PgBouncer);
- ``postgres_outcomes.PostgresOutcomes``: ``OutcomeStore`` (results and events of a queue kept elsewhere);
- ``postgres_output.PostgresOutput``: ``TaskOutputStore`` (what tasks printed, trimmed to its limits).

The schema, its migrations and event triggers are ``postgres_schema``; shared SQL text
``postgres_statements`` and ``sql_text``; the row codec ``rows``.
"""

from __future__ import annotations

from omniq_nb.storage.postgres_maintenance import PostgresEvents, PostgresMaintenance
from omniq_nb.storage.postgres_outcomes import PostgresOutcomes
from omniq_nb.storage.postgres_output import PostgresOutput
from omniq_nb.storage.postgres_queue import PostgresQueue
from omniq_nb.storage.postgres_registry import PostgresRegistry

__all__ = ["PostgresStorage"]


class PostgresStorage(
    PostgresQueue, PostgresRegistry, PostgresEvents, PostgresMaintenance, PostgresOutcomes, PostgresOutput
):
    """A store in one schema of a PostgreSQL database, shared by workers on any number of machines.

    Args:
        url: ``postgresql://user:password@host:port/database?schema=NAME`` (``postgres://`` too).
            ``pgbouncer=1`` when it points at PgBouncer in transaction mode, with
            ``listen_url=`` (URL-encoded) a direct URL for ``LISTEN`` wake-ups (see
            ``postgres_url``); other query options, ``sslmode`` say, go to the driver.
        events: record a ``TaskEvent`` per transition.

    Capability flags: ``multi_host`` is true; ``supports_notify`` (``LISTEN/NOTIFY``) too,
    unless the URL goes through a pooler and names no ``listen_url`` (idle workers then poll).
    """
