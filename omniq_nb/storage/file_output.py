"""The file store's ``TaskOutputStore`` role: a log file per task, appended under the store lock.

A task's output lives in ``output/<id>/``:

- ``log``: the chunks, each a frame (a header of ``seq``, text bytes, lines and stream
  length, then the stream name and the text, UTF-8), appended with ``O_APPEND``;
- ``index``: the ``seq`` to hand out next and each kept frame's sizes, so an append decides
  what to trim without reading any text, and the log file it describes (inode and length).

An append holds the store lock (as every change does: two writers never hand out one
``seq``, and purge cannot run between the check that the task exists and the write). When
the kept output is over its limits the log is rewritten without its oldest frames (a new
file moved into place), and ``seq`` goes on counting from the index. An index that does not
describe the log (a writer died between the two) is rebuilt from the frames' headers, a
half-written last frame cut off. Readers take no lock: they parse the log and stop at a
frame that is not whole yet. Output is not fsync'd (like progress).
"""

from __future__ import annotations

import builtins
import contextlib
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import msgspec

from omniq_nb.models import OutputChunk, TaskOutput
from omniq_nb.storage import lifecycle
from omniq_nb.storage.file_base import check_task_id
from omniq_nb.storage.file_results import FileResults

__all__ = ["FileOutput"]

_HEADER = struct.Struct("<QIIH")
"""A frame's header: its ``seq``, the text's UTF-8 bytes, its lines (``chunk_size``), the stream name's bytes."""


class _Index(msgspec.Struct, array_like=True):
    """What ``index`` holds: the log it describes, the next ``seq``, and per kept frame (length, bytes, lines)."""

    inode: int
    length: int
    next_seq: int
    frames: builtins.list[tuple[int, int, int]]


_encode_index = msgspec.msgpack.Encoder().encode
_decode_index = msgspec.msgpack.Decoder(_Index).decode


def _frames(data: bytes) -> builtins.list[tuple[int, int, int, int, str, bytes]]:
    """Return a log's whole frames as ``(seq, frame length, bytes, lines, stream, text)``, without a torn tail.

    The text stays UTF-8 bytes: only the frames a reader keeps are decoded.
    """
    found, at = [], 0
    while at + _HEADER.size <= len(data):
        seq, size, lines, stream_size = _HEADER.unpack_from(data, at)
        start = at + _HEADER.size
        end = start + stream_size + size
        if end > len(data):
            break
        stream = data[start : start + stream_size].decode()
        text = data[start + stream_size : end]
        found.append((seq, end - at, size, lines, stream, text))
        at = end
    return found


class FileOutput(FileResults):
    """``TaskOutputStore``: each task's output in ``output/<id>/`` (see the module docstring)."""

    async def append_output(
        self, task_id: str, chunks: Sequence[tuple[str, str]], *, limit_bytes: int, limit_lines: int
    ) -> None:
        """Append the chunks of a task the store has, then trim its oldest chunks to the limits."""
        if chunks:
            await self._run(self._append_output, task_id, builtins.list(chunks), limit_bytes, limit_lines)

    def _append_output(
        self, task_id: str, chunks: Sequence[tuple[str, str]], limit_bytes: int, limit_lines: int
    ) -> None:
        folder = self._layout.output / task_id
        with self._layout.locked():
            if self._layout.read(task_id) is None:
                return
            folder.mkdir(mode=0o700, exist_ok=True)
            index = self._index(folder)
            blob = bytearray()
            for stream, text in chunks:
                size, lines = lifecycle.chunk_size(stream, text)
                name = stream.encode()
                frame = _HEADER.pack(index.next_seq, size, lines, len(name)) + name
                frame += text.encode("utf-8", "surrogatepass")
                blob += frame
                index.frames.append((len(frame), size, lines))
                index.next_seq += 1
            fd = os.open(folder / "log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view) :]
                written = os.fstat(fd)
                index.inode, index.length = written.st_ino, written.st_size
            finally:
                os.close(fd)
            sizes = [(size, lines) for _, size, lines in index.frames]
            dropped = lifecycle.trimmed_head(sizes, limit_bytes=limit_bytes, limit_lines=limit_lines)
            if dropped:
                self._trim(folder, index, dropped)
            self._layout.write(folder / "index", _encode_index(index), durable=False)

    def _trim(self, folder: Path, index: _Index, dropped: int) -> None:
        """Rewrite the log without its ``dropped`` oldest frames (a new file moved into place)."""
        with open(folder / "log", "rb") as log:
            log.seek(sum(length for length, _, _ in index.frames[:dropped]))
            kept = log.read()
        self._layout.write(folder / "log", kept, durable=False)
        index.frames = index.frames[dropped:]
        index.inode, index.length = os.stat(folder / "log").st_ino, len(kept)

    @staticmethod
    def _index(folder: Path) -> _Index:
        """Return the index of a task's log; rebuild it from the log when it does not describe that log."""
        try:
            found = os.stat(folder / "log")
        except FileNotFoundError:
            return _Index(0, 0, 1, [])
        index = None
        with contextlib.suppress(FileNotFoundError, msgspec.DecodeError):
            index = _decode_index((folder / "index").read_bytes())
        if index is not None and (index.inode, index.length) == (found.st_ino, found.st_size):
            return index
        frames = _frames((folder / "log").read_bytes())
        whole = sum(frame[1] for frame in frames)
        if whole != found.st_size:  # a writer died half way through a frame: cut it off
            os.truncate(folder / "log", whole)
        next_seq = max(frames[-1][0] + 1 if frames else 1, index.next_seq if index is not None else 1)
        return _Index(found.st_ino, whole, next_seq, [(length, size, lines) for _, length, size, lines, _, _ in frames])

    async def output(self, task_id: str, *, after: int = 0, limit: int = 1000) -> TaskOutput:
        """Return up to ``limit`` kept chunks with ``seq > after``, oldest first (none for an unknown task)."""
        return await self._run(self._output, task_id, after, limit)

    def _output(self, task_id: str, after: int, limit: int) -> TaskOutput:
        try:
            check_task_id(task_id)
            data = (self._layout.output / task_id / "log").read_bytes()
        except (ValueError, FileNotFoundError, NotADirectoryError):
            return TaskOutput(chunks=[])
        frames = _frames(data)
        kept = [frame for frame in frames if frame[0] > after][:limit]
        chunks = [
            OutputChunk(seq=seq, stream=stream, text=text.decode("utf-8", "surrogatepass"))
            for seq, *_, stream, text in kept
        ]
        return TaskOutput(chunks=chunks, dropped=bool(frames) and frames[0][0] > 1)
