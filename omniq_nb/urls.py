"""URL helpers that every layer may use: nothing here imports the rest of omniq_nb.

Example:
    >>> redact_url("redis://:hunter2@cache:6379/0")
    'redis://:***@cache:6379/0'

"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_url"]


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, safe for messages and logs.

    Args:
        url: a store URL such as ``postgresql://user:pw@host/db``.

    Example:
        >>> redact_url("postgresql://me:secret@db:5432/q")
        'postgresql://me:***@db:5432/q'

    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # as written: an IPv6 host keeps its brackets, a bad port shows
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
