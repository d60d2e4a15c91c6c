"""Stores behind one protocol; ``open_storage(url)`` picks the backend by the URL's scheme.

Backends are imported only when their scheme is used, so a driver that is not installed
matters only to the users of that backend. A new backend implements every role of
``storage.base`` on one object, applies ``storage.lifecycle``'s rules, reuses
``storage.rows`` if it stores rows, and reports through ``storage.health``.
``redact_url`` (from ``omniq_nb.urls``) is re-exported here: it is public.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from omniq_nb.config import Settings
from omniq_nb.storage.base import NotSupported, Storage, StorageError
from omniq_nb.urls import redact_url

__all__ = ["NotSupported", "Storage", "StorageError", "open_storage", "redact_url"]

_LATER = {"nats"}


def open_storage(url: str, *, settings: Settings | None = None) -> Storage:
    """Return the store for ``url``, not yet opened: use it with ``async with``.

    Args:
        url: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``memory://``,
            ``postgresql://user@host/db?schema=NAME``, ``redis://host:6379/0?prefix=NAME``
            (also ``rediss://``, ``unix:///path.sock``), ...
        settings: settings that tune the store (events, SQLite synchronous mode).

    Returns:
        A store that keeps the ``Storage`` protocol.

    Raises:
        StorageError: the URL is malformed (a NUL byte, say) or names an unknown scheme.
        NotSupported: the scheme's backend is not available in this version, or its
            driver is not installed (``pip install 'omniq-nb[postgres]'``, ``[redis]``).

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
    if scheme in ("postgresql", "postgres"):
        return _postgres(url, settings)
    if scheme in ("redis", "rediss", "unix"):
        return _redis(url, settings)
    if scheme in _LATER:
        raise NotSupported(
            f"the {scheme} store is not available yet in this version of omniq_nb; "
            "use sqlite:///path.db (one machine) or memory://"
        )
    raise StorageError(
        f"unknown store URL {redact_url(str(url))!r}; expected sqlite:///relative.db, "
        "sqlite:////absolute/path.db, memory://, postgresql://..., redis://..., rediss://..., unix://... "
        "or nats://..."
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


def _redis(url: str, settings: Settings) -> Storage:
    """Return the Redis store, or say how to install its driver."""
    try:
        from omniq_nb.storage.redis import RedisStorage
    except ImportError as exc:
        raise NotSupported(
            f"the Redis store needs redis-py ({exc.name} is not installed): pip install 'omniq-nb[redis]'"
        ) from None
    return RedisStorage(url, events=settings.events)
