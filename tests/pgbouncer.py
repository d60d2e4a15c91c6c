"""A private PgBouncer (Debian's ``pgbouncer``) in transaction mode in front of the test server.

``pgbouncer()`` starts one on a free port with its config, log and pidfile in a folder of
its own, as user ``postgres`` when this process is root (PgBouncer refuses to run as root),
and stops it (by its process id) at the end. The shared server's configuration is never
touched: the bouncer only connects to it like any client. Its URL reaches database
``test`` as ``postgres`` (``auth_type = trust``, pool per transaction).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polling

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
START_WAIT = 30.0

_CONFIG = """\
[databases]
test = host=127.0.0.1 port=5432 dbname=test

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/userlist.txt
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
"""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _reachable(port: int) -> bool:
    import psycopg

    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/test", connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


@contextlib.contextmanager
def pgbouncer() -> Iterator[str]:
    """Yield the URL of a new PgBouncer in transaction mode in front of ``test``; stop it afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="omniq-pgbouncer-"))
    port = free_port()
    (folder / "pgbouncer.ini").write_text(_CONFIG.format(port=port, folder=folder))
    (folder / "userlist.txt").write_text('"postgres" ""\n')
    user = {}
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for path in (folder, *folder.iterdir()):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    with (folder / "stdout.log").open("wb") as out:
        process = subprocess.Popen(
            [PGBOUNCER, str(folder / "pgbouncer.ini")], stdout=out, stderr=subprocess.STDOUT, **user
        )
    try:
        polling.wait_until_sync(
            lambda: _running(process, folder) and _reachable(port), timeout=START_WAIT, what="pgbouncer to accept"
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/test"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def _running(process: subprocess.Popen[bytes], folder: Path) -> bool:
    if process.poll() is not None:
        log = (folder / "pgbouncer.log").read_text() if (folder / "pgbouncer.log").exists() else ""
        raise AssertionError(f"pgbouncer exited with {process.returncode}: {log[-2000:]}")
    return True
