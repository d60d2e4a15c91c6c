"""The result cache at submission: each call's key, and the stored successes that answer them.

A task submitted with ``cache=True`` (or ``cache_key=``, ``cache_ttl=``) gets a key
(``omniq_nb.cache_keys``); when the store already has a succeeded task with that key (within
``cache_ttl``), the submission returns that task's handle and nothing is queued. A call that
cannot be keyed (an argument or a global that cannot be pickled, a ``cache_key`` that
raises) is submitted without the cache, with one warning per submission, never an error.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from omniq_nb.building import task_name
from omniq_nb.cache_keys import call_key, function_digest
from omniq_nb.errors import CacheWarning
from omniq_nb.models import Task
from omniq_nb.options import TaskOptions
from omniq_nb.storage import Storage

__all__ = ["call_keys", "reuse"]

Call = tuple[Sequence[Any], Mapping[str, Any]]


def call_keys(fn: Callable[..., Any], options: TaskOptions, calls: Sequence[Call]) -> list[str | None]:
    """Return each call's cache key, or ``None`` for each when the options ask for no cache.

    A call that cannot be keyed gets ``None`` (it runs without the cache); one
    ``CacheWarning`` names the first such call and why.
    """
    if not options.cache:
        return [None] * len(calls)
    try:
        digest = function_digest(fn)
    except Exception as exc:  # whatever pickling raised: the payload's own pickling reports it
        _warn(fn, f"the function cannot be keyed ({type(exc).__name__}: {exc})")
        return [None] * len(calls)
    keys: list[str | None] = []
    failed: list[tuple[int, Exception]] = []
    for index, (args, kwargs) in enumerate(calls):
        try:
            keys.append(call_key(fn, args, kwargs, key=options.cache_key, fn_digest=digest))
        except Exception as exc:  # a cache_key callable may raise anything
            keys.append(None)
            failed.append((index, exc))
    if failed:
        index, error = failed[0]
        which = "its arguments" if len(calls) == 1 else f"{len(failed)} of {len(calls)} calls (first: call {index})"
        _warn(fn, f"{which} cannot be keyed ({type(error).__name__}: {error})")
    return keys


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


def _warn(fn: Callable[..., Any], why: str) -> None:
    warnings.warn(f"{task_name(fn)}: runs without the result cache: {why}", CacheWarning, stacklevel=4)
