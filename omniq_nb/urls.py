"""URL helpers that every layer may use: nothing here imports the rest of omniq_nb.

Example:
    >>> redact_url("redis://:hunter2@cache:6379/0")
    'redis://:***@cache:6379/0'

"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from omniq_nb.errors import StorageError

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


def split_prefix_options(
    url: str, *, prefix_pattern: re.Pattern[str], allowed: str, events_max: int
) -> tuple[str, str, int]:
    """Take ``prefix`` and ``events_max`` out of a key-prefixed store's URL (Redis, NATS).

    Args:
        url: the store URL, e.g. ``redis://host/0?prefix=NAME&events_max=1000``.
        prefix_pattern: what a prefix may be (default ``omniq``).
        allowed: ``prefix_pattern`` in words, for the error message.
        events_max: the cap on kept events when the URL names none.

    Returns:
        The URL without those two options (as written otherwise), the prefix and the cap.

    Raises:
        StorageError: the prefix does not match, or the cap is not a positive integer.
    """
    query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    given = dict(query)
    prefix = given.get("prefix", "omniq")
    if not prefix_pattern.fullmatch(prefix):
        raise StorageError(f"invalid prefix {prefix!r} in {redact_url(url)!r}: use {allowed} (1 to 64)")
    cap = given.get("events_max", str(events_max))
    if not re.fullmatch(r"[0-9]{1,12}", cap) or int(cap) < 1:
        raise StorageError(f"invalid events_max {cap!r} in {redact_url(url)!r}: a positive number of events")
    rest = urlencode([(key, value) for key, value in query if key not in ("prefix", "events_max")])
    base = url.split("?", 1)[0]  # as written: urlunsplit would turn unix:///path into unix:/path
    return base + (f"?{rest}" if rest else ""), prefix, int(cap)
