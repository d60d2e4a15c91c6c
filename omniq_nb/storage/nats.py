"""NATS JetStream store: many hosts, many processes, via nats-py.

Install with ``pip install 'omniq-nb[nats]'``. URL ``nats://[user:password@]host:4222`` (or
``tls://…``) with ``?prefix=NAME`` (default ``omniq``): the bucket and the stream of the
store are named from the prefix, so several stores share a server. Tasks are entries of a
key-value bucket, one key per task; every transition is a compare-and-set on the key's
revision (the fence: JetStream accepts an acknowledgement after redelivery, so no ack is
ever trusted); events go to a stream whose sequence is the event's ``seq``. See
``nats_base`` for the layout and the clock, ``nats_mirror`` for the mirror that claims and listings read.

``NATSStorage`` is assembled from mixins, one per protocol role, as ``RedisStorage`` is:

- ``nats_base.NATSConnection``: URL, connection, bucket and stream, clock, errors;
- ``nats_mirror.NATSMirror``: the bucket's mirror, the fenced writes, event records, wake-ups;
- ``nats_objects.NATSObjects``: arguments and results too large for an entry, in an object store;
- ``nats_results.NATSResults``: ``ResultStore`` and ``EventStore``;
- ``nats_queue.NATSQueue``: ``QueueStore``;
- ``nats_maintenance.NATSRegistry`` and ``NATSMaintenance``: ``WorkerRegistry`` and ``MaintenanceStore``;
- ``nats_outcomes.NATSOutcomes``: ``OutcomeStore`` (results and events of a queue kept elsewhere);
- ``nats_output.NATSCache`` and ``NATSOutput``: the result cache and ``TaskOutputStore``.

The codec of entries and events is ``nats_codec``.
"""

from __future__ import annotations

from omniq_nb.storage.nats_maintenance import NATSMaintenance, NATSRegistry
from omniq_nb.storage.nats_outcomes import NATSOutcomes
from omniq_nb.storage.nats_output import NATSCache, NATSOutput

__all__ = ["NATSStorage"]


class NATSStorage(NATSCache, NATSRegistry, NATSMaintenance, NATSOutcomes, NATSOutput):
    """A store under one prefix of a NATS JetStream server, shared by workers on any number of machines.

    Args:
        url: ``nats://[user:password@]host:4222?prefix=NAME`` (``events_max=N`` caps the event
            stream, default 1,000,000).
        events: record a ``TaskEvent`` per transition.

    Capability flags: ``supports_notify`` (the bucket's changes) and ``multi_host`` are true.
    """
