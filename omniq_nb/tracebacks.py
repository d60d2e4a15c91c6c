"""A failed task's traceback as its user wants to read it: their frames, not the machinery's.

Between the worker and the user's code sit frames of omniq_nb itself, asyncio,
``concurrent.futures``, ``threading``, nest_asyncio2 and ipykernel / IPython. Each run of
such library frames is shown as one line saying how many were hidden; the user's frames keep
their source lines, and the exception's type and message lines are untouched. A stack without
a single user frame (an error inside omniq_nb, such as a payload that cannot be loaded) is
shown whole: there is nothing else to show.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib.util
import itertools
import os
import threading
import traceback
from typing import Any

_LIBRARY_PACKAGES = ("nest_asyncio2", "ipykernel", "IPython")  # found without importing them
_LIBRARY_MODULES = (asyncio, concurrent.futures)


def format_task_traceback(exc: BaseException) -> str:
    """Return the traceback text of ``exc`` with runs of library frames collapsed to one line.

    Chained exceptions (``raise ... from``, an error while handling another) are collapsed
    the same way, each stack on its own.

    Example:
        A task whose cell function divides by zero, run on a thread of the kernel's pool::

            Traceback (most recent call last):
              [... 1 library frame hidden ...]
              File "/tmp/ipykernel_1234/2094202483.py", line 3, in divide
                ratio = a / b
                        ~~^~~
            ZeroDivisionError: division by zero
    """
    shown = traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True)
    pending, seen = [shown], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if any(not _is_library(frame.filename) for frame in current.stack):
            current.stack = _UserStack(current.stack)
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
        pending += getattr(current, "exceptions", None) or []  # an exception group's members
    return "".join(shown.format())


class _UserStack(traceback.StackSummary):
    """A stack that formats each run of library frames as one "hidden" line."""

    def format(self, **kwargs: Any) -> list[str]:
        """Return the formatted frames, each run of library frames replaced by one line."""
        lines: list[str] = []
        for library, group in itertools.groupby(self, key=lambda frame: _is_library(frame.filename)):
            frames = list(group)
            if library:
                lines.append(f"  [... {len(frames)} library frame{'s' if len(frames) > 1 else ''} hidden ...]\n")
            else:
                lines += traceback.StackSummary.from_list(frames).format(**kwargs)
        return lines


def _is_library(filename: str) -> bool:
    """Return True when ``filename`` belongs to omniq_nb or the machinery that runs tasks."""
    if not os.path.isabs(filename):
        return False  # "<omniq cell 3>", "<string>": the user's code
    path = os.path.realpath(filename)
    return any(path == place or path.startswith(place + os.sep) for place in _library_places())


@functools.cache
def _library_places() -> tuple[str, ...]:
    """Return the real paths of the library packages' folders and of the library single modules."""
    files = [module.__file__ for module in _LIBRARY_MODULES if module.__file__]
    places = [os.path.dirname(__file__), *(os.path.dirname(file) for file in files), threading.__file__]
    for name in _LIBRARY_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            places.append(os.path.dirname(spec.origin) if spec.submodule_search_locations else spec.origin)
    return tuple(os.path.realpath(place) for place in places)
