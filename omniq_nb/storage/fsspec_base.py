"""The connection of the fsspec result and event store: the filesystem, its root, whole-object writes.

``FsspecOutcomes`` (``fsspec_outcomes``) builds the ``OutcomeStore`` role on it; the layout
and the lag are explained there. Every filesystem call runs on a thread (fsspec's API is
blocking), and its errors become one-line ``StorageError``s.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import fsspec

from omniq_nb.errors import StorageError
from omniq_nb.opening import OpensAndCloses
from omniq_nb.urls import redact_url

__all__ = ["DEFAULT_LAG", "FSSPEC_PREFIX", "FsspecConnection", "path_part"]

FSSPEC_PREFIX = "fsspec+"
"""Prefix that sends a URL to fsspec when omniq has a store of that scheme (``fsspec+memory://``)."""
DEFAULT_LAG = 1.0
"""Seconds after its seq's time that an event becomes readable, unless ``?lag=`` says otherwise."""
_UTC = timezone.utc
_T = TypeVar("_T")


def path_part(name: str) -> str:
    """Return ``name`` quoted for one path component, ``~`` included (it separates marker fields)."""
    return quote(name, safe="").replace("~", "%7E")


def _split_lag(url: str) -> tuple[str, float]:
    """Return ``url`` without omniq's ``lag`` option, and that option's value."""
    parts = urlsplit(url)
    options = parse_qsl(parts.query, keep_blank_values=True)
    lag = [float(value) for name, value in options if name == "lag"]
    rest = urlencode([(name, value) for name, value in options if name != "lag"])
    if lag and (lag[-1] < 0 or lag[-1] != lag[-1]):
        raise StorageError(f"lag={lag[-1]} in {redact_url(url)!r} must be a number of seconds, 0 or more")
    return urlunsplit(parts._replace(query=rest)), (lag[-1] if lag else DEFAULT_LAG)


class FsspecConnection(OpensAndCloses):
    """The filesystem and root of a result and event store on fsspec, with whole-object writes.

    Args:
        url: ``s3://bucket/prefix``, ``file:///abs/dir``, ``fsspec+memory://name``, ...
        storage_options: keyword arguments for the filesystem (credentials, endpoint).

    Raises:
        StorageError: the URL names no filesystem fsspec knows, or its driver is missing.

    """

    supports_notify = False

    def __init__(self, url: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = redact_url(url)
        self._url, self._options = url, dict(storage_options or {})
        target, self._lag = _split_lag(url.removeprefix(FSSPEC_PREFIX))
        scheme = urlsplit(target).scheme or "file"
        options = {"auto_mkdir": True, **self._options} if scheme in ("file", "local") else self._options
        try:
            self._fs, root = fsspec.core.url_to_fs(target, **options)
        except (ImportError, ValueError) as exc:
            raise StorageError(f"cannot open {self.url} with fsspec: {exc}") from None
        self._root = root.rstrip("/")
        protocols = self._fs.protocol if isinstance(self._fs.protocol, tuple) else (self._fs.protocol,)
        self.multi_host = not {"memory", "file", "local"} & set(protocols)
        self._last_seq = 0

    async def open(self) -> None:
        """Create the root folder where the filesystem has folders."""
        await self._call(self._fs.makedirs, self._root, exist_ok=True)

    async def close(self) -> None:
        """Nothing to release: every call opens what it needs."""

    def clone(self) -> Self:
        """Return a store on the same root (fsspec shares its filesystem objects)."""
        return type(self)(self._url, storage_options=self._options)

    async def now(self) -> datetime:
        """Return this process's clock (the store has none of its own)."""
        return datetime.now(_UTC)

    async def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run a blocking filesystem call on a thread; its errors become one-line ``StorageError``s."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except (OSError, ValueError) as exc:
            raise StorageError(f"the result store {self.url} failed: {type(exc).__name__}: {exc}") from None

    def _path(self, *parts: str) -> str:
        return "/".join([self._root, *parts])

    def _names(self, folder: str) -> builtins.list[str]:
        """Return the names in ``folder`` (none when it does not exist), sorted, never from a cached listing.

        Object-store filesystems (s3fs, gcsfs, ...) keep listings until told otherwise, and
        other processes write here.
        """
        path = self._path(folder)
        self._fs.invalidate_cache(path)
        try:
            found = self._fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted(str(path).rstrip("/").rsplit("/", 1)[-1] for path in found)

    def _result_path(self, task_id: str, token: str) -> str:
        return self._path("results", path_part(task_id), path_part(token))

    def _read(self, paths: Sequence[str]) -> dict[str, bytes]:
        """Read whole objects; one that is not there is left out, any other failure raises."""
        found = self._fs.cat(builtins.list(paths), on_error="return") if paths else {}
        blobs: dict[str, bytes] = {}
        for path, blob in found.items():
            if isinstance(blob, FileNotFoundError):
                continue
            if isinstance(blob, BaseException):
                raise blob
            blobs[path] = bytes(blob)
        return blobs

    def _write(self, objects: Mapping[str, bytes]) -> None:
        """Write each object whole: a reader sees it complete or not at all (a temporary name, then a move)."""
        for path, data in objects.items():
            target = self._fs.open(path, "wb", autocommit=False)
            with target:
                target.write(data)
            target.commit()

    def _remove(self, paths: Sequence[str]) -> None:
        if paths:
            with contextlib.suppress(FileNotFoundError):  # another process purged them first
                self._fs.rm(builtins.list(paths))
