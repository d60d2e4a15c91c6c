"""The PostgreSQL test server (127.0.0.1:5432, trust auth, database ``test``) and a schema per test.

Tests isolate themselves by schema; the server's configuration is never changed. When the
server cannot be reached, PostgreSQL tests fail (they are never skipped).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def new_schema() -> str:
    """Return a schema name no other test uses."""
    return f"omniq_t_{uuid.uuid4().hex}"


def drop_schema(schema: str) -> None:
    """Drop ``schema`` and everything in it, if it exists."""
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """Yield a fresh schema name on the test server; drop that schema (CASCADE) afterwards."""
    schema = new_schema()
    try:
        yield schema
    finally:
        drop_schema(schema)
