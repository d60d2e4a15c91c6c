"""The SQLite store's file: URL to path, owner-only creation, network-filesystem refusal, errors.

The database file is never opened here, nor anywhere outside SQLite: on POSIX, closing any
descriptor of a file drops every fcntl lock this process holds on it, SQLite's included,
and another process would then believe it is alone and delete the live WAL. Only ``stat``
(which opens nothing) and SQLite's own connections touch it.

Example:
    >>> sqlite_path("sqlite:///data/omniq.db"), sqlite_path("sqlite:////srv/q.db"), sqlite_path("sqlite://")
    ('data/omniq.db', '/srv/q.db', None)

"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from omniq_nb.errors import StorageError
from omniq_nb.urls import redact_url

__all__ = ["existing_store", "prepare_file", "sqlite_path", "storage_error"]

_NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "sshfs", "ceph", "glusterfs", "lustre", "afs", "gpfs"}
)


def sqlite_path(url: str) -> str | None:
    """Return the file path of a ``sqlite:`` URL, or ``None`` for an in-memory database.

    Args:
        url: ``sqlite:///relative.db`` (relative to the working directory),
            ``sqlite:////absolute/path.db``, or ``sqlite://`` / ``sqlite:///:memory:``.

    Raises:
        StorageError: the URL is malformed; the message shows the accepted forms.

    """
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or parts.query or parts.fragment:
        raise StorageError(
            f"malformed SQLite URL {redact_url(url)!r}: expected sqlite:///relative/path.db "
            "(three slashes) or sqlite:////absolute/path.db (four slashes)"
        )
    path = unquote(parts.path)
    if path in ("", "/", "/:memory:"):
        return None
    return path[1:]


def storage_error(path: str | None, exc: sqlite3.Error) -> StorageError:
    """Return a one-line ``StorageError`` for a SQLite error, naming the store's file."""
    where = path if path is not None else ":memory:"
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return StorageError(f"the disk holding the SQLite store {where} is full ({exc}); free space and try again")
    return StorageError(f"the SQLite store {where} failed: {exc}")


def prepare_file(path: str) -> None:
    """Create the folder and an owner-only file, or say clearly why that is impossible.

    The database file itself is never opened here (see the module's docstring). A new
    store is made as an owner-only temporary file beside it and hard-linked into place
    (which never replaces an existing file); writability is checked by SQLite's own
    ``BEGIN IMMEDIATE``.

    Raises:
        StorageError: the folder or file cannot be created, or it lies on a network filesystem.

    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not target.exists():
            _create_owner_only(target)
    except OSError as exc:
        raise StorageError(f"cannot create or write the SQLite store at {target.resolve()}: {exc.strerror}") from exc
    filesystem = _filesystem_type(target.resolve())
    if filesystem in _NETWORK_FILESYSTEMS:
        raise StorageError(
            f"{target.resolve()} is on a network filesystem ({filesystem}); SQLite's WAL mode does not "
            "work there and could corrupt the store. Put the file on a local disk, or use a "
            "PostgreSQL or Redis store to share tasks between machines."
        )


def existing_store(path: str) -> Path:
    """Return the absolute path of the store file at ``path``, or say clearly that there is none.

    Raises:
        StorageError: no file exists at ``path``.

    """
    where = Path(path).resolve()
    if not where.exists():
        raise StorageError(f"no store at {where}: the file does not exist (check creates nothing)")
    return where


def _create_owner_only(target: Path) -> None:
    """Create an empty owner-only file at ``target`` unless one exists, without opening ``target``.

    Where the filesystem has no hard links, SQLite creates the file and its mode is set by path.
    """
    handle, scratch = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)  # the scratch file's descriptor, never the store's
    try:
        os.link(scratch, target)
    except FileExistsError:
        pass  # another process or store object created it first
    except OSError:  # no hard links here: let SQLite create it, then restrict it by path
        sqlite3.connect(f"file:{quote(str(target))}?mode=rwc", uri=True).close()
        os.chmod(target, 0o600)
    finally:
        os.unlink(scratch)


def _filesystem_type(path: Path) -> str:
    """Return the type of the filesystem holding ``path`` (Linux), or '' when unknown."""
    best, kind = "", ""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1].replace("\\040", " ")
                if str(path).startswith(mount.rstrip("/") + "/") and len(mount) > len(best):
                    best, kind = mount, fields[2]
    except OSError:
        return ""
    return kind
