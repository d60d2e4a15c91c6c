"""The result cache at submission: each call's key, and the stored successes that answer them.

A task submitted with ``cache=True`` (or ``cache_key=``, ``cache_ttl=``) gets a key
(``omniq_nb.cache_keys``) over its function, its arguments, its task name, its ``after=``
ids and its ``run_on``; when the store already has a succeeded task with that key (within
``cache_ttl``), the submission returns that task's handle and nothing is queued. A call
that cannot be keyed (an argument or a global that cannot be pickled, a ``cache_key`` that
raises, ``run_on`` other than ``success`` with dependencies) is submitted without the cache,
and ``warn`` says so once the submission stands (never an error).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import msgspec

from omniq_nb.cache_keys import call_key, function_digest
from omniq_nb.errors import CacheWarning
from omniq_nb.models import Task
from omniq_nb.options import TaskOptions
from omniq_nb.storage import Storage

__all__ = ["Keys", "call_keys", "reuse", "warn"]

Call = tuple[Sequence[Any], Mapping[str, Any], Sequence[str]]
"""A call as ``inputs.extract`` leaves it: arguments with placeholders, and the ids they stand for."""


class Keys(msgspec.Struct, frozen=True):
    """Each call's cache key (``None``: runs uncached), and why some call could not be keyed."""

    keys: list[str | None]
    problem: str | None = None


def call_keys(fn: Callable[..., Any], options: TaskOptions, name: str, calls: Sequence[Call]) -> Keys:
    """Return each call's cache key, or ``None`` for each when the options ask for no cache.

    Args:
        fn: the task's callable.
        options: its validated options (``cache``, ``cache_key``, ``after``, ``run_on``).
        name: its task name (part of the key, as ``cache_clear`` forgets by name).
        calls: the calls, as ``inputs.extract`` returned them.

    """
    if not options.cache:
        return Keys([None] * len(calls))
    if options.run_on != "success" and (options.after or any(ids for _, _, ids in calls)):
        why = f"run_on={options.run_on!r} with dependencies: a dependency retried later may change its input"
        return Keys([None] * len(calls), why)
    try:
        digest = function_digest(fn)
    except Exception as exc:  # whatever pickling raised: the payload's own pickling reports it
        return Keys([None] * len(calls), f"the function cannot be keyed ({type(exc).__name__}: {exc})")
    context = (name, options.after, options.run_on)
    keys: list[str | None] = []
    failed: list[tuple[int, Exception]] = []
    for index, (args, kwargs, _) in enumerate(calls):
        try:
            keys.append(call_key(fn, args, kwargs, key=options.cache_key, fn_digest=digest, context=context))
        except Exception as exc:  # a cache_key callable may raise anything
            keys.append(None)
            failed.append((index, exc))
    if not failed:
        return Keys(keys)
    index, error = failed[0]
    which = "its arguments" if len(calls) == 1 else f"{len(failed)} of {len(calls)} calls (first: call {index})"
    return Keys(keys, f"{which} cannot be keyed ({type(error).__name__}: {error})")


async def reuse(storage: Storage, keys: Sequence[str | None], ttl: float | None) -> list[Task | None]:
    """Return, for each key, the newest succeeded task of the store with it (within ``ttl`` seconds), or ``None``.

    One lookup for the whole batch. A task whose result is no longer readable (purged from a
    separate result store) does not count.
    """
    wanted = [key for key in keys if key is not None]
    if not wanted:
        return [None] * len(keys)
    since = None if ttl is None else await storage.now() - timedelta(seconds=ttl)
    found = {key: task for key, task in (await storage.cached(wanted, finished_after=since)).items() if task.has_value}
    return [None if key is None else found.get(key) for key in keys]


def unanswered(
    calls: Sequence[Call], keys: Sequence[str | None], hits: Sequence[Task | None]
) -> tuple[Sequence[Call], Sequence[str | None]]:
    """Return the calls the cache did not answer and their keys (the lists given, when it answered none)."""
    if all(hit is None for hit in hits):  # the common case: a large batch is not copied
        return calls, keys
    kept = [n for n, hit in enumerate(hits) if hit is None]
    return [calls[n] for n in kept], [keys[n] for n in kept]


def warn(name: str, keys: Keys) -> None:
    """Issue the ``CacheWarning`` of a submission some of whose calls run uncached (each time, not once per place)."""
    if keys.problem is not None:
        warnings.warn_explicit(
            f"{name}: runs without the result cache: {keys.problem}",
            CacheWarning,
            filename="omniq_nb",
            lineno=0,
            module="omniq_nb.caching",
            registry=None,  # every submission says it: the registry would show one per message
        )
