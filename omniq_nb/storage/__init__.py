"""Stores behind one protocol; ``open_storage(url)`` picks the backend by the URL's scheme.

Backends are imported only when their scheme is used, so a driver that is not installed
matters only to the users of that backend. A new backend implements every role of
``storage.base`` on one object, applies ``storage.lifecycle``'s rules, reuses
``storage.rows`` if it stores rows, and reports through ``storage.health``.
``redact_url`` (from ``omniq_nb.urls``) is re-exported here: it is public.
``open_stores(settings)`` opens the queue's store with results and events where the
settings put them (``result_url``, ``events_url``).
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import msgspec

from omniq_nb.config import Settings
from omniq_nb.storage.base import NotSupported, OutcomeStore, Storage, StorageError
from omniq_nb.storage.split import SplitStorage
from omniq_nb.urls import redact_url

__all__ = ["NotSupported", "Storage", "StorageError", "open_outcome_store", "open_storage", "open_stores", "redact_url"]

_OWN_SCHEMES = {"sqlite", "memory", "postgresql", "postgres", "redis", "rediss", "unix", "nats"}
_OUTCOMES_ONLY = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "hdfs", "webhdfs", "sftp")


def open_storage(url: str, *, settings: Settings | None = None) -> Storage:
    """Return the store for ``url``, not yet opened: use it with ``async with``.

    Args:
        url: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``memory://``,
            ``postgresql://user@host/db?schema=NAME``, ``redis://host:6379/0?prefix=NAME``
            (also ``rediss://``, ``unix:///path.sock``), ``nats://host:4222?prefix=NAME``,
            ``file:///absolute/folder`` (one machine), ...
        settings: settings that tune the store (events, SQLite synchronous mode).

    Returns:
        A store that keeps the ``Storage`` protocol.

    Raises:
        StorageError: the URL is malformed (a NUL byte, say) or names an unknown scheme.
        NotSupported: the scheme's backend is not available in this version, or its
            driver is not installed (``pip install 'omniq-nb[postgres]'``, ``[redis]``, ``[nats]``).

    Example:
        >>> import asyncio
        >>> async def main():
        ...     async with open_storage("memory://") as store:
        ...         return await store.list()
        >>> asyncio.run(main())
        []

    """
    settings = settings or Settings()
    if isinstance(url, str) and "\x00" in unquote(url):
        raise StorageError(f"store URL {redact_url(url)!r} contains a NUL byte (\\x00); no store can have that name")
    try:
        scheme = urlsplit(url).scheme.lower() if isinstance(url, str) else ""
    except ValueError as exc:  # an unclosed IPv6 bracket, say
        raise StorageError(f"malformed store URL {redact_url(url)!r}: {exc}") from None
    if scheme == "sqlite":
        from omniq_nb.storage.sqlite import SQLiteStorage

        return SQLiteStorage(url, events=settings.events, synchronous=settings.sqlite_synchronous)
    if scheme == "memory":
        from omniq_nb.storage.memory import MemoryStorage

        return MemoryStorage(url, events=settings.events)
    if scheme == "file":
        from omniq_nb.storage.file import FileStorage

        return FileStorage(url, events=settings.events)
    if scheme in ("postgresql", "postgres"):
        return _postgres(url, settings)
    if scheme in ("redis", "rediss", "unix"):
        return _redis(url, settings)
    if scheme == "nats":
        return _nats(url, settings)
    if scheme in _OUTCOMES_ONLY or scheme.startswith("fsspec+"):
        raise StorageError(
            f"{redact_url(url)!r} can keep a queue's results and events (result_url, events_url), "
            "not its tasks; give the queue a sqlite:///..., file:///..., postgresql://..., redis://..., nats://... "
            "or memory:// store"
        )
    raise StorageError(
        f"unknown store URL {redact_url(str(url))!r}; expected sqlite:///relative.db, "
        "sqlite:////absolute/path.db, memory://, file:///absolute/folder, postgresql://..., redis://..., "
        "rediss://..., unix://... or nats://..."
    )


def _postgres(url: str, settings: Settings) -> Storage:
    """Return the PostgreSQL store, or say how to install its driver."""
    try:
        from omniq_nb.storage.postgres import PostgresStorage
    except ImportError as exc:
        raise NotSupported(
            f"the PostgreSQL store needs psycopg 3 and psycopg_pool ({exc.name} is not installed): "
            "pip install 'omniq-nb[postgres]'"
        ) from None
    return PostgresStorage(url, events=settings.events)


def open_stores(settings: Settings) -> Storage:
    """Return the queue's store (``settings.db_url``), with results and events where the settings say.

    When ``result_url`` and ``events_url`` are unset (or name the queue's store) this is
    ``open_storage(settings.db_url)``. Otherwise the queue's store is joined with a result
    store and an events store (one store when both URLs are the same) in a ``SplitStorage``:
    results are written before the transition that accepts them, events after it.

    Raises:
        StorageError: a URL is malformed or names an unknown scheme.
        NotSupported: a store cannot keep results or events apart from its queue yet.

    Example:
        >>> store = open_stores(Settings(db_url="sqlite:///jobs.db", result_url="memory://"))
        >>> type(store).__name__, store.url
        ('SplitStorage', 'sqlite:///jobs.db')

    """
    queue_url = settings.db_url
    result_url = settings.result_url if settings.result_url not in (None, queue_url) else None
    events_url = settings.events_url if settings.events_url not in (None, queue_url) and settings.events else None
    if result_url is None and events_url is None:
        return open_storage(queue_url, settings=settings)
    queue = open_storage(
        queue_url, settings=msgspec.structs.replace(settings, events=settings.events and not events_url)
    )
    results = open_outcome_store(result_url, settings=settings) if result_url is not None else None
    if events_url is None:
        events = None
    elif events_url == result_url:
        events = results
    else:
        events = open_outcome_store(events_url, settings=settings, setting="events_url")
    return SplitStorage(queue, results=results, events=events)


def open_outcome_store(url: str, *, settings: Settings | None = None, setting: str = "result_url") -> OutcomeStore:
    """Return the (unopened) store at ``url`` that keeps a queue's results or events.

    Stores of omniq's own schemes keep them in tables of their own; any other URL goes to
    fsspec (``s3://bucket/prefix``, ``gs://…``, ``file:///abs/dir``, ``fsspec+memory://name``)
    with the ``storage_options`` setting.

    Raises:
        StorageError: the URL is malformed, or fsspec knows no such filesystem.
        NotSupported: the store cannot keep results or events yet, or fsspec is not installed.

    """
    settings = settings or Settings()
    if _scheme(url) in _OWN_SCHEMES:
        store = open_storage(url, settings=settings)
        if not isinstance(store, OutcomeStore):
            raise NotSupported(
                f"{setting}={redact_url(url)!r}: this store cannot keep a queue's results or events yet; "
                "use sqlite:///path.db, postgresql://..., redis://..., memory:// or an fsspec URL (s3://..., file:///dir)"
            )
        return store
    try:
        import fsspec

        from omniq_nb.storage.fsspec_outcomes import FSSPEC_PREFIX, FsspecOutcomes
    except ImportError as exc:
        raise NotSupported(
            f"{setting}={redact_url(url)!r} needs fsspec ({exc.name} is not installed): pip install 'omniq-nb[fsspec]'"
        ) from None
    scheme = _scheme(url)
    if scheme.removeprefix(FSSPEC_PREFIX) not in fsspec.available_protocols():
        raise StorageError(
            f"unknown store URL {setting}={redact_url(url)!r}; expected sqlite:///path.db, postgresql://..., "
            "memory://, or a URL of a filesystem fsspec knows (s3://bucket/prefix, file:///abs/dir, "
            "fsspec+memory://name)"
        )
    return FsspecOutcomes(url, storage_options=settings.storage_options)


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise StorageError(f"malformed store URL {redact_url(url)!r}: {exc}") from None


def _redis(url: str, settings: Settings) -> Storage:
    """Return the Redis store, or say how to install its driver."""
    try:
        from omniq_nb.storage.redis import RedisStorage
    except ImportError as exc:
        raise NotSupported(
            f"the Redis store needs redis-py ({exc.name} is not installed): pip install 'omniq-nb[redis]'"
        ) from None
    return RedisStorage(url, events=settings.events)


def _nats(url: str, settings: Settings) -> Storage:
    """Return the NATS JetStream store, or say how to install its driver."""
    try:
        from omniq_nb.storage.nats import NATSStorage
    except ImportError as exc:
        raise NotSupported(
            f"the NATS store needs nats-py ({exc.name} is not installed): pip install 'omniq-nb[nats]'"
        ) from None
    return NATSStorage(url, events=settings.events)
