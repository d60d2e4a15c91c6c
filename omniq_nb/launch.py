"""What must happen before anything else is imported: gevent's patching for ``omniq-nb worker --kind gevent``.

``omniq_nb/__init__.py`` calls ``patch_if_gevent_worker()`` first, so the check runs before
asyncio, aiosqlite or psycopg are imported, whichever way the command was started: the
``omniq-nb`` console script (which imports ``omniq_nb.cli``, hence this package, first) or
``python -m omniq_nb`` (this package is imported before its ``__main__``). It reads only
``sys.orig_argv`` and ``OMNIQ_DEFAULT_WORKER``, and imports nothing else of the package.

The patch is ``patch_all(thread=False, queue=False)``: sockets, ``time.sleep``, ``select``,
DNS, ``ssl`` and ``subprocess`` cooperate with gevent, but threads stay native threads and
``queue.SimpleQueue`` stays the thread-safe one. The pool's asyncio loop, aiosqlite's
connection thread, psycopg and the lease keeper thread all rely on real threads and blocking
queues; and every asyncio loop of the process gets the unpatched selector back (the event
loop policy below), so asyncio never waits inside a gevent hub. Task greenlets run on a gevent
hub of their own, in one native thread (``worker/greenlets.py``).

A process that did not patch here (a notebook kernel, a script, pytest) is refused a gevent
pool: patching after asyncio code is imported leaves half the process unpatched.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

_PROGRAM = "omniq-nb"
_MODULE = "omniq_nb"
_KIND_FLAG = "--kind"
_VALUED_OPTIONS = ("-X", "-W", "--check-hash-based-pycs")

_patched = False


def gevent_patched() -> bool:
    """Return True when this process was patched by gevent at start, for ``omniq-nb worker --kind gevent``."""
    return _patched


def asks_for_gevent_worker(argv: Sequence[str], default_worker: str | None = None) -> bool:
    """Return True when ``argv`` (the interpreter's, as in ``sys.orig_argv``) runs ``omniq-nb worker --kind gevent``.

    Args:
        argv: the process's full command line: the interpreter, its options, then either the
            ``omniq-nb`` script or ``-m omniq_nb``, then the command's arguments.
        default_worker: ``OMNIQ_DEFAULT_WORKER``, the kind when ``--kind`` is not given.

    Example:
        >>> asks_for_gevent_worker(["python", "-m", "omniq_nb", "worker", "--kind", "gevent"])
        True
        >>> asks_for_gevent_worker(["/venv/bin/python", "/venv/bin/omniq-nb", "worker", "--kind=thread"])
        False
        >>> asks_for_gevent_worker(["python", "/venv/bin/omniq-nb", "worker"], default_worker="gevent")
        True
        >>> asks_for_gevent_worker(["python", "-m", "ipykernel_launcher", "-f", "kernel.json"])
        False
    """
    arguments = _command_arguments(list(argv))
    if arguments is None or "worker" not in arguments:
        return False
    kind = default_worker
    for position, argument in enumerate(arguments):
        name, equals, value = argument.partition("=")
        if len(name) < 3 or not _KIND_FLAG.startswith(name):  # argparse takes "--ki" for "--kind"
            continue
        if equals:
            kind = value
        elif position + 1 < len(arguments):
            kind = arguments[position + 1]
    return kind == "gevent"


def patch_if_gevent_worker() -> None:
    """Patch the process with gevent when it was started as ``omniq-nb worker --kind gevent``.

    Does nothing otherwise, nor when it already ran, nor when gevent is not installed (the
    worker then says which extra to install when it starts its pool).
    """
    global _patched
    if _patched or not asks_for_gevent_worker(sys.orig_argv, os.environ.get("OMNIQ_DEFAULT_WORKER")):
        return
    if "asyncio" in sys.modules:  # too late to patch cleanly: the pool will refuse the kind
        return
    try:
        from gevent import monkey
    except ImportError:
        return
    monkey.patch_all(thread=False, queue=False)
    _unpatched_asyncio_loops(monkey.get_original("selectors", "DefaultSelector"))
    _patched = True


def _command_arguments(argv: list[str]) -> list[str] | None:
    """Return the arguments after ``omniq-nb`` or ``-m omniq_nb`` in ``argv``, or ``None`` for another program."""
    skip = False
    for position, argument in enumerate(argv[1:], start=1):
        if skip or argument in _VALUED_OPTIONS:  # an interpreter option's value is no script
            skip = not skip
            continue
        if argument == "-m":
            following = argv[position + 1 : position + 2]
            return argv[position + 2 :] if following == [_MODULE] else None
        if argument.startswith("-m"):
            return argv[position + 1 :] if argument[2:] == _MODULE else None
        if not argument.startswith("-"):  # the script
            return argv[position + 1 :] if os.path.basename(argument) == _PROGRAM else None
    return None


def _unpatched_asyncio_loops(selector: type) -> None:
    """Make every new asyncio loop of the process use ``selector`` (the one gevent replaced)."""
    import asyncio

    class _Policy(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            return asyncio.SelectorEventLoop(selector())

    asyncio.set_event_loop_policy(_Policy())


patch_if_gevent_worker()  # on import: ``omniq_nb/__init__.py`` imports this module first
