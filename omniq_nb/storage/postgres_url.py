"""What a ``postgresql://`` store URL says beyond the driver's DSN, and SQL that names the schema itself.

Options of the URL that omniq_nb reads (and takes out before the DSN reaches libpq):

- ``schema=NAME``: the schema of the store's tables (default ``omniq``).
- ``pgbouncer=1`` (``true``, ``yes``, ``on``): the URL points at PgBouncer in transaction
  mode (or any pooler that lends a server session per transaction). Prepared statements
  are then off (``prepare_threshold=None``), and no ``LISTEN`` goes through the pooler: a
  listener's session would be lent to others between transactions, so its notifications
  would reach no one. Idle workers then poll, unless ``listen_url`` is given.
- ``listen_url=URL`` (URL-encoded): a direct connection to the server, used only for
  ``LISTEN`` (wake-up hints); everything else still goes through the main URL.

The store never relies on session state: statements name their tables with the schema
(``qualify``) instead of setting ``search_path``, and the only setting (``omniq.events =
off``, when events are off) is a startup option, or ``SET LOCAL`` in each transaction
through a pooler.
Every connection gets ``application_name=omniq-nb/SCHEMA`` unless the URL names one, so an
operator sees whose sessions they are in ``pg_stat_activity``.
Every connection also gives up on a silent network (a cut link drops packets, nothing is
refused or reset) within seconds, not the kernel's quarter of an hour: ``tcp_user_timeout``
(data sent but unacknowledged) and TCP keepalives (an idle connection, such as the
listener's) unless the URL sets them, so a call fails as when the server went away and a
worker logs "lost" and retries (``_TCP``).

Example:
    >>> target = parse_url("postgresql://me@pooler:6432/q?schema=jobs&pgbouncer=1")
    >>> (target.dsn, target.schema, target.pgbouncer, target.listen_dsn)
    ('postgresql://me@pooler:6432/q', 'jobs', True, None)
    >>> qualify("SELECT id FROM tasks WHERE seq > 1", "jobs")
    'SELECT id FROM "jobs".tasks WHERE seq > 1'

"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from omniq_nb.errors import StorageError
from omniq_nb.urls import redact_url

__all__ = ["PostgresTarget", "connect_options", "parse_url", "qualify", "split_schema"]

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,56}")
_OURS = {"schema", "pgbouncer", "listen_url"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
_TABLES = re.compile(
    r"\b(FROM|UPDATE|INTO|JOIN)\s+"
    r"(tasks|task_deps|task_output|output_seq|events|workers|leaders|kept_results|callables|omniq_schema)\b"
)
_APP_NAME_BYTES = 63  # the server truncates longer names
_TCP = {  # libpq's; a URL that names one of them keeps its own
    "tcp_user_timeout": 10_000,  # ms a sent request may stay unacknowledged before the connection is dropped
    "keepalives": 1,
    "keepalives_idle": 10,  # s of silence on an idle connection before the first probe
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


def split_schema(url: str) -> tuple[str, str]:
    """Return ``(url without the schema option, schema)`` of a ``postgresql://`` URL.

    Example:
        >>> split_schema("postgresql://me@db/q?schema=jobs&sslmode=require")
        ('postgresql://me@db/q?sslmode=require', 'jobs')
        >>> split_schema("postgres://db/q")[1]
        'omniq'

    Raises:
        StorageError: the schema is not a plain identifier (letters, digits, ``_``; at most 57).

    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    schema = schemas[-1] if schemas else "omniq"
    if not _SCHEMA_NAME.fullmatch(schema):
        raise StorageError(
            f"invalid schema {schema!r} in {redact_url(url)!r}: use letters, digits and '_' (at most 57 characters)"
        )
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


@dataclass(frozen=True)
class PostgresTarget:
    """Where and how to connect, read from a store URL (see the module's docstring)."""

    dsn: str
    """The URL for the driver: the main connection pool (omniq's options removed)."""
    schema: str
    """The schema of the store's tables."""
    pgbouncer: bool
    """Whether ``dsn`` reaches the server through a transaction-mode pooler."""
    listen_dsn: str | None
    """Where ``LISTEN`` connects, or ``None``: no wake-up hints, idle workers poll."""
    app_name: str | None
    """The ``application_name`` to set, or ``None`` when the URL names its own."""


def parse_url(url: str) -> PostgresTarget:
    """Read a store URL's options (``schema``, ``pgbouncer``, ``listen_url``) and the driver's DSN.

    Raises:
        StorageError: a bad schema name, a ``pgbouncer`` value that is not a yes or no, or a
            ``listen_url`` that is not a ``postgresql://`` URL.

    """
    without_schema, schema = split_schema(url)
    parts = urlsplit(without_schema)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = {key: value for key, value in query if key in _OURS}
    flag = options.get("pgbouncer", "").strip().lower()
    if flag not in _TRUE | _FALSE:
        raise StorageError(f"pgbouncer={flag!r} in {redact_url(url)!r} must be 1 or 0 (true/false, yes/no)")
    dsn = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k not in _OURS])))
    pgbouncer = flag in _TRUE
    listen = options.get("listen_url") or None
    if listen is not None and urlsplit(listen).scheme.lower() not in ("postgresql", "postgres"):
        raise StorageError(f"listen_url in {redact_url(url)!r} must be a postgresql:// URL")
    named = any(key == "application_name" for key, _ in query)
    app_name = None if named else f"omniq-nb/{schema}"[:_APP_NAME_BYTES]
    return PostgresTarget(dsn, schema, pgbouncer, listen or (None if pgbouncer else dsn), app_name)


def connect_options(target: PostgresTarget, *, events: bool) -> dict[str, Any]:
    """Return the driver's keyword arguments of every connection to ``target`` (autocommit included).

    With events off on a direct connection, the switch is a startup option of the session;
    through a pooler it cannot be (the session is shared), and the store sets it per
    transaction instead (``SET LOCAL``).
    """
    named = {key for key, _ in parse_qsl(urlsplit(target.dsn).query, keep_blank_values=True)}
    options: dict[str, Any] = {"autocommit": True, **{k: v for k, v in _TCP.items() if k not in named}}
    if target.app_name is not None:
        options["application_name"] = target.app_name
    if target.pgbouncer:
        options["prepare_threshold"] = None
    elif not events:
        options["options"] = "-c omniq.events=off"
    return options


@functools.lru_cache(maxsize=512)
def qualify(query: str, schema: str) -> str:
    """Return ``query`` with the store's tables named with their schema (``FROM tasks`` → ``FROM "s".tasks``).

    Only the positions where a table is named (``FROM``, ``UPDATE``, ``INTO``, ``JOIN``)
    change; ``tasks.id`` and the like still resolve. ``schema`` is a plain identifier
    (``split_schema`` checked it).
    """
    return _TABLES.sub(lambda match: f'{match.group(1)} "{schema}".{match.group(2)}', query)
