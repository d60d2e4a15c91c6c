"""Redis store: many hosts, many processes, via redis-py's asyncio client.

Install with ``pip install 'omniq-nb[redis]'``. URLs ``redis://[:password@]host:port/db``,
``rediss://…`` (TLS) and ``unix:///path.sock``, each with ``?prefix=NAME`` (default
``omniq``): every key of the store starts with the prefix, so several stores share a server.
Tasks are hashes; each queue has a ready sorted set ordered by priority, eta and enqueue
order; delayed tasks wait in a sorted set that claims move to ready by the server's clock.
Every transition is one Lua script, fenced on the lease token; events go to a capped stream;
idle workers are woken by pub/sub (polling stays the truth).

Event ``seq``: a counter per prefix (``INCR PREFIX:evseq``) drawn inside the script that
records the event, which also writes the stream entry with the id ``SEQ-0``. Scripts run
one at a time on the server, so seqs appear in the stream in the order they were drawn and a
cursor (``events(since=n)``) can never skip one; the counter is never reset (not even by
``purge(everything=True)``), so a seq is never handed out twice while the server keeps its
data. A restart that lost data (no persistence) or a failover to a replica that had not
received the last writes resets the counter with everything else; a follower whose cursor is
past the new seqs then sees nothing until they pass it (the event hub's re-reads of awaited
tasks still find their outcomes). Stream ids derived from the clock would survive that, at
the price of seqs that are not small integers; the counter keeps ``seq`` what every other store
makes it.

``RedisStorage`` is assembled from mixins, one per protocol role, sharing one client
through ``RedisConnection``, as ``PostgresStorage`` is:

- ``redis_base.RedisConnection``: URL, client, scripts, open/close/clone, the clock, errors, wake-ups;
- ``redis_results.RedisResults``: ``ResultStore`` and ``EventStore``;
- ``redis_queue.RedisQueue``: ``QueueStore`` (builds on the reads);
- ``redis_maintenance.RedisRegistry`` and ``RedisMaintenance``: ``WorkerRegistry`` and ``MaintenanceStore``;
- ``redis_output.RedisCache`` and ``RedisOutput``: the result cache and ``TaskOutputStore``.

The scripts are ``redis_lua`` (insert, claim, settle: the hot path, and the key layout) and
``redis_lua_admin`` (the rest; the cache and output in ``redis_lua_output``); the hash codec is ``redis_codec``.
"""

from __future__ import annotations

from omniq_nb.storage.redis_maintenance import RedisMaintenance, RedisRegistry
from omniq_nb.storage.redis_outcomes import RedisOutcomes
from omniq_nb.storage.redis_output import RedisCache, RedisOutput
from omniq_nb.storage.redis_queue import RedisQueue

__all__ = ["RedisStorage"]


class RedisStorage(RedisQueue, RedisRegistry, RedisMaintenance, RedisOutcomes, RedisCache, RedisOutput):
    """A store under one key prefix of a Redis server, shared by workers on any number of machines.

    Args:
        url: ``redis://[:password@]host:port/db?prefix=NAME`` (``rediss://`` for TLS,
            ``unix:///path.sock?db=N&prefix=NAME`` for a local socket; ``events_max=N`` caps
            the event stream, default 100,000).
        events: record a ``TaskEvent`` per transition.

    Capability flags: ``supports_notify`` (pub/sub) and ``multi_host`` are true.
    """
