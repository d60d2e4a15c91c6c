"""The PostgreSQL test server (127.0.0.1:5432, trust auth, database ``test``) and a schema per test.

For tests that stop and restart a server, ``private_server()`` starts one of their own.

Tests isolate themselves by schema; the server's configuration is never changed. When the
server cannot be reached, PostgreSQL tests fail (they are never skipped).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

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


class PrivateServer:
    """A PostgreSQL server of this test alone (initdb in a temporary folder, a free port), to stop and restart.

    Runs as user ``postgres`` when this process is root (``initdb`` refuses root), from
    ``/usr/lib/postgresql/15/bin``; trust auth on 127.0.0.1, and also on ``listen``'s
    addresses (``(address, network)`` pairs, e.g. a veth's ``("10.211.7.1", "10.211.7.0/24")``:
    it listens there too and trusts clients of ``network``). ``url`` reaches its
    database ``postgres`` on 127.0.0.1. ``stop()`` is ``pg_ctl stop -m fast`` (connections are cut),
    ``start()`` brings it back on the same port and data; ``close()`` stops it and removes
    the folder. The shared server is never touched.
    """

    BIN = Path("/usr/lib/postgresql/15/bin")

    def __init__(self, listen: Sequence[tuple[str, str]] = ()) -> None:
        self.listen = tuple(listen)
        self.folder = Path(tempfile.mkdtemp(prefix="omniq-pg-"))
        self.data = self.folder / "data"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self._user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.writelines(f"host all all {network} trust\n" for _, network in self.listen)

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.BIN / program), *args], capture_output=True, text=True, timeout=120, cwd=self.folder, **self._user
        )
        assert done.returncode == 0, f"{program} failed: {done.stdout}{done.stderr}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        addresses = ",".join(["127.0.0.1", *(address for address, _ in self.listen)])
        options = f"-p {self.port} -k {self.folder} -c listen_addresses={addresses} -c fsync=off"
        log = str(self.folder / "log")
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", log, "-o", options)

    def stop(self) -> None:
        """Stop the server at once (``-m fast``: every session is cut)."""
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", str(self.data))

    def close(self) -> None:
        """Stop the server if it runs and remove its folder."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError):
                self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", "immediate", "-D", str(self.data))
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def private_server(listen: Sequence[tuple[str, str]] = ()) -> Iterator[PrivateServer]:
    """Yield a started ``PrivateServer`` (also on ``listen``); stop it and remove its data afterwards."""
    server = PrivateServer(listen)
    try:
        server.start()
        yield server
    finally:
        server.close()


def query(schema: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run ``sql`` on the test server with ``schema`` first on the search path (a connection of its own)."""
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'SET search_path TO "{schema}"'.encode())
        return conn.execute(sql.encode(), params).fetchall()
