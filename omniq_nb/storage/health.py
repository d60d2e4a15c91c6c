"""One judge of store health for every backend: each measures, ``health_report`` decides what is a problem.

Example:
    >>> report = health_report("memory://", counts={}, expired_leases=0, stale_ids=[], stale_after=30)
    >>> report.ok, report.problems
    (True, ())

"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from omniq_nb.models import StoreHealth, TaskStatus

__all__ = ["STALE_IDS_SHOWN", "health_report"]

STALE_IDS_SHOWN = 10
"""How many ids of tasks with stale leases a health report names."""


def health_report(
    url: str,
    *,
    counts: Mapping[TaskStatus, int] | None,
    expired_leases: int,
    stale_ids: Sequence[str],
    stale_after: float,
    stale_leases: int | None = None,
    integrity: str = "ok",
    schema_version: int | None = None,
    wal_bytes: int | None = None,
    problems: Iterable[str] = (),
    warnings: Iterable[str] = (),
) -> StoreHealth:
    """Return a ``StoreHealth`` from what a backend measured, judging its problems the same way for all.

    Args:
        url: the store's redacted URL.
        counts: tasks per status (missing statuses count 0), or ``None`` when they could not be read.
        expired_leases: running tasks whose lease has run out.
        stale_ids: ids of running tasks whose lease ran out more than ``stale_after`` seconds
            ago, longest expired first (all of them, or at least the first ``STALE_IDS_SHOWN``).
        stale_after: the grace period used.
        stale_leases: how many such tasks there are (default: ``len(stale_ids)``).
        integrity: ``"ok"`` or the store's own integrity report.
        schema_version: the stored schema version, where the store has one.
        wal_bytes: the size of the write-ahead log, where there is one.
        problems: problems only the backend can see (an unreadable table, a newer schema).
        warnings: facts only the backend can see that are not problems (a server that keeps
            nothing on disk).

    """
    stale = len(stale_ids) if stale_leases is None else stale_leases
    found = [] if integrity == "ok" else [f"integrity check failed: {'; '.join(integrity.splitlines())}"]
    found += problems
    if stale:
        shown = ", ".join(stale_ids[:STALE_IDS_SHOWN]) + (", ..." if stale > STALE_IDS_SHOWN else "")
        found.append(
            f"{stale} running task(s) lost their worker: the lease ran out more than {stale_after:g} s ago and "
            f"no live worker pool has rescued them (a running pool does so within seconds): {shown}"
        )
    return StoreHealth(
        url=url,
        ok=not found,
        problems=tuple(found),
        integrity=integrity,
        schema_version=schema_version,
        wal_bytes=wal_bytes,
        counts={} if counts is None else {status: counts.get(status, 0) for status in TaskStatus},
        expired_leases=expired_leases,
        stale_leases=stale,
        stale_ids=tuple(stale_ids[:STALE_IDS_SHOWN]),
        stale_after=stale_after,
        warnings=tuple(warnings),
    )
