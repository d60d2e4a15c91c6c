"""Where a notebook task was launched from: the text kept in ``Task.origin``, made and read here.

The text is versioned, so stores need no new field. Version 1 is a URL query behind a
``omniq-origin:1?`` mark: the kernel session, the launching cell's message id, the kernel's
working directory, the notebook's path (``JPY_SESSION_NAME``, which jupyter_server 2 sets, or
VS Code's ``__vsc_ipynb_file__``) and the ``--as NAME`` of ``%%omniq enqueue``. A later kernel
of the same notebook finds its tasks by directory and notebook (``%omniq attach``); the
kernel session and cell route output to the launching cell. Older tasks say
``"{kernel session}:{cell msg id}"``; they still parse, with no notebook.

Example:
    >>> here = Origin(kernel="k1", cell="m7", directory="/work", notebook="a b.ipynb", name="job")
    >>> here.text()
    'omniq-origin:1?kernel=k1&cell=m7&dir=%2Fwork&notebook=a+b.ipynb&as=job'
    >>> parse(here.text()) == here
    True
    >>> parse("4f2c-9a:61be_12_3")  # the format before version 1
    Origin(kernel='4f2c-9a', cell='61be_12_3', directory=None, notebook=None, name=None)
    >>> parse(None), parse("kernel-1/cell-2")
    (None, None)
    >>> parse("omniq-origin:1?kernel=k2&cell=m1&dir=%2Fwork&notebook=a+b.ipynb").same_notebook(here)
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode

from omniq_nb.context import origin, set_origin

_MARK = "omniq-origin:1?"
_FIELDS = (("kernel", "kernel"), ("cell", "cell"), ("directory", "dir"), ("notebook", "notebook"), ("name", "as"))


@dataclass(frozen=True)
class Origin:
    """Where one task was launched: kernel session, cell, notebook and the name it was bound to.

    Attributes:
        kernel: the kernel's session id (new at every kernel start).
        cell: the launching cell's message id (output goes back to that cell).
        directory: the kernel's working directory when the extension loaded (``None`` in the
            format before version 1).
        notebook: the notebook's path as the frontend gave it, if it did.
        name: the NAME of ``%%omniq enqueue --as NAME``.
    """

    kernel: str
    cell: str
    directory: str | None = None
    notebook: str | None = None
    name: str | None = None

    def text(self) -> str:
        """Return the text stored in ``Task.origin`` (version 1)."""
        fields = {key: getattr(self, attr) for attr, key in _FIELDS if getattr(self, attr) is not None}
        return _MARK + urlencode(fields)

    def same_notebook(self, other: Origin) -> bool:
        """Return whether both were launched by kernels of one notebook (same directory and path)."""
        return self.directory is not None and (self.directory, self.notebook) == (other.directory, other.notebook)

    @property
    def label(self) -> str:
        """Return how a person names the notebook: its file name, else the notebooks of its directory.

        Example:
            >>> Origin("k", "c", "/work", "lab/a.ipynb").label, Origin("k", "c", "/work").label
            ('a.ipynb', 'notebooks in /work')
        """
        return os.path.basename(self.notebook or "") or f"notebooks in {self.directory or os.getcwd()}"


def parse(text: str | None) -> Origin | None:
    """Return the ``Origin`` that ``text`` (a ``Task.origin``) holds, or ``None`` if it names no kernel cell."""
    if not text:
        return None
    if text.startswith(_MARK):
        found = {key: values[-1] for key, values in parse_qs(text[len(_MARK) :]).items()}
        values = {attr: found.get(key) for attr, key in _FIELDS}
        kernel, cell = values.pop("kernel"), values.pop("cell")
        return Origin(kernel, cell, **values) if kernel and cell else None
    kernel, colon, cell = text.rpartition(":")
    return Origin(kernel, cell) if colon and kernel and cell else None


def kernel_place(namespace: Mapping[str, Any]) -> tuple[str, str | None]:
    """Return this kernel's working directory and its notebook's path, if the frontend said it.

    Args:
        namespace: the user's namespace (VS Code puts ``__vsc_ipynb_file__`` there).
    """
    notebook = os.environ.get("JPY_SESSION_NAME") or namespace.get("__vsc_ipynb_file__")
    return os.getcwd(), notebook if isinstance(notebook, str) and notebook else None


@contextlib.contextmanager
def bound_to(name: str) -> Iterator[None]:
    """Within the block, tasks launched from this cell record ``name`` (``%%omniq enqueue --as name``)."""
    launched = parse(origin())
    if launched is None:
        yield
        return
    token = set_origin(dataclasses.replace(launched, name=name).text())
    try:
        yield
    finally:
        token.var.reset(token)
