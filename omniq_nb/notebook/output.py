"""Route what a task prints or displays to the cell that launched it, not the one running now.

ipykernel 7 sends a thread's output to the cell executing at the moment, 6.x to the cell
that started the thread (for a pool, the cell that started the pool): neither is the cell
that launched the task. So each cell's parent message is remembered when it starts, each
task records its origin cell at enqueue (the text is made and read by
``omniq_nb.notebook.origin``), and while a task runs, ``sys.stdout``,
``sys.stderr`` (``omniq_nb.worker.capture``) and the display publisher hand what it writes to a sink that sends it with
the launching cell's parent header. Child processes send their output to the pool, which
uses the same sink.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

from omniq_nb.context import OutputSink, current
from omniq_nb.notebook.origin import Origin, kernel_place, parse
from omniq_nb.worker.capture import route_streams, unroute_streams

_REMEMBERED_CELLS = 2000  # launching cells whose parent header is kept for routing


class CellOutputs:
    """Remember the cells that ran, and give tasks launched from them a sink to write to.

    Args:
        shell: the kernel's IPython shell.
    """

    def __init__(self, shell: Any) -> None:
        self._shell = shell
        self._kernel = getattr(shell, "kernel", None)
        session = getattr(self._kernel, "session", None)
        self._session_id: str = getattr(session, "session", "") or ""
        self.kernel: str | None = self._session_id or None
        """The kernel's session id (new at every kernel start), or ``None`` outside a kernel."""
        directory, notebook = kernel_place(getattr(shell, "user_ns", {}))
        self.here = Origin(self._session_id, "", directory, notebook)
        """This kernel's origin, without a cell: its session, working directory and notebook."""
        self._parents: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def remember_current_cell(self) -> str | None:
        """Remember the executing cell's parent message; return the origin tasks enqueued now get."""
        parent = getattr(self._shell, "parent_header", None) or {}
        msg_id = parent.get("header", {}).get("msg_id")
        if self._kernel is None or not msg_id:
            return None
        self._parents[msg_id] = parent
        self._parents.move_to_end(msg_id)
        while len(self._parents) > _REMEMBERED_CELLS:
            self._parents.popitem(last=False)
        return dataclasses.replace(self.here, cell=msg_id).text()

    def sink_for(self, origin: str | None) -> OutputSink | None:
        """Return a sink that writes into the cell ``origin`` names, if it ran in this kernel."""
        launched = parse(origin)
        if launched is None or self._kernel is None or launched.kernel != self._session_id:
            return None
        parent = self._parents.get(launched.cell)
        if parent is None:
            return None
        return CellSink(self._kernel, parent)


class CellSink:
    """Write one task's output into one cell's output area (thread-safe, batched by ipykernel)."""

    def __init__(self, kernel: Any, parent: dict[str, Any]) -> None:
        self._kernel, self._parent = kernel, parent
        self._streams: dict[str, Any] = {}

    def __call__(self, kind: str, payload: Any) -> None:
        """Send ``("stdout" | "stderr", text)`` or ``("display", (data, metadata))`` to the cell."""
        if kind == "display":
            data, metadata = payload
            content = {"data": data, "metadata": metadata, "transient": {}}
            self._kernel.session.send(self._kernel.iopub_socket, "display_data", content, parent=self._parent)
            return
        self._stream(kind).write(payload)

    def _stream(self, name: str) -> Any:
        stream = self._streams.get(name)
        if stream is None:
            from ipykernel import iostream

            out_stream: Any = iostream.OutStream
            stream = out_stream(self._kernel.session, self._kernel.iopub_thread, name, watchfd=False)
            stream.set_parent(self._parent)
            self._streams[name] = stream
        return stream


def install_routing(shell: Any) -> None:
    """Put the routing stand-ins in place of ``sys.stdout``, ``sys.stderr`` and ``display``."""
    publisher: Any = getattr(shell, "display_pub", None)
    if publisher is not None and hasattr(publisher, "_omniq_original_publish"):
        return  # installed already
    route_streams()
    if publisher is None:
        return
    original = publisher.publish

    def publish(data: Any, metadata: Any = None, *args: Any, **kwargs: Any) -> Any:
        context = current()
        if context is not None and context.captures_output and context.output("display", (data, metadata or {})):
            return None  # a sink took it; else it is shown here as before (and kept all the same)
        return original(data, metadata, *args, **kwargs)

    publisher._omniq_original_publish = original
    publisher.publish = publish


def remove_routing(shell: Any) -> None:
    """Undo ``install_routing``."""
    publisher: Any = getattr(shell, "display_pub", None)
    original = getattr(publisher, "_omniq_original_publish", None)
    if publisher is None or original is not None:
        unroute_streams()
    if original is not None:
        publisher.publish = original
        del publisher._omniq_original_publish
