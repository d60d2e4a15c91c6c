"""omniq_nb's cloudpickle: code keeps its file name and a cell's source; plain functions are reused.

``dumps`` pickles as ``cloudpickle.dumps`` does (functions defined in ``__main__`` or a
notebook travel by value), except that a code object keeps its file name, and a notebook
cell's source (up to ``MAX_SHIPPED_SOURCE`` characters) travels with it, so a traceback in
another process or on another machine shows the cell's lines. ``load_callable`` unpickles a
call's callable, reusing a plain function already unpickled from the same bytes.
``omniq_nb.serialization`` wraps these bytes in its blobs; nothing here signs or checks.

``Pickler`` subclasses ``cloudpickle.Pickler``, which has no type information (mypy sees
``Any``): pyproject.toml allows subclassing ``Any`` in this module alone
(``disallow_subclassing_any = false``) rather than ignoring the error on the line.

Example:
    >>> import cloudpickle
    >>> scale = 3
    >>> def triple(x):
    ...     return scale * x
    >>> copy = cloudpickle.loads(dumps(triple))
    >>> copy(2), copy.__code__.co_filename == triple.__code__.co_filename
    (6, True)

"""

from __future__ import annotations

import io
import linecache
import threading
import types
from collections import ChainMap
from collections.abc import Callable
from typing import Any, ClassVar

import cloudpickle

PICKLE_PROTOCOL = 5
"""The pickle protocol of every pickle omniq_nb writes (out-of-band buffers, Python 3.8 on)."""

MAX_SHIPPED_SOURCE = 32 * 1024
"""Characters: a notebook cell's source longer than this stays behind (its code still travels)."""

_CACHED_CALLABLES = 128  # unpickled callables kept for reuse
_MAX_CACHED_CALLABLE = 64 * 1024  # bytes: a function pickled larger (big defaults or globals) is not kept
_CLOUDPICKLE_CODE = cloudpickle.Pickler.dispatch_table[types.CodeType]


def reduce_code(code: types.CodeType) -> tuple[Callable[..., types.CodeType], tuple[Any, ...]]:
    """Reduce a code object as cloudpickle does, but keep its file name and a cell's source.

    cloudpickle (3.1.3 on) writes every code object's file name as ``<dynamic-code>``, so a
    traceback through a notebook function showed no file and no source line; the file name
    lets the traceback find the cell's source (``linecache``) where the notebook runs. Code
    whose "file" lives only in ``linecache`` (a notebook cell: no modification time) takes
    those lines along, up to ``MAX_SHIPPED_SOURCE`` characters, so a child process or another
    machine shows them too; pickle writes one cell's lines once, however many functions use it.

    Args:
        code: the code object to reduce.

    Returns:
        ``(named_code, args)``: what ``named_code(*args)`` rebuilds the code object from.

    """
    rebuild, args = _CLOUDPICKLE_CODE(code)
    entry = linecache.cache.get(code.co_filename)
    if entry is None or len(entry) != 4 or entry[1] is not None or entry[0] > MAX_SHIPPED_SOURCE:
        return named_code, (rebuild, args, code.co_filename)
    return named_code, (rebuild, args, code.co_filename, entry[2])


def named_code(
    rebuild: Callable[..., types.CodeType], args: tuple[Any, ...], filename: str, lines: list[str] | None = None
) -> types.CodeType:
    """Rebuild a code object reduced by ``reduce_code``, with its own file name.

    Args:
        rebuild: cloudpickle's code constructor.
        args: its arguments.
        filename: the code's own file name.
        lines: a cell's source, registered in ``linecache`` unless the file name is known here.

    Returns:
        The code object.

    """
    if lines is not None and filename not in linecache.cache:
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
    return rebuild(*args).replace(co_filename=filename)


class Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler, keeping each code object's file name (see ``reduce_code``)."""

    dispatch_table: ClassVar[ChainMap[Any, Any]] = ChainMap(
        {types.CodeType: reduce_code}, cloudpickle.Pickler.dispatch_table
    )


def dumps(value: Any) -> bytes:
    """Return ``value`` pickled by value where needed, as ``cloudpickle.dumps`` does, with ``Pickler``.

    Args:
        value: anything cloudpickle can pickle.

    Returns:
        The pickle, protocol ``PICKLE_PROTOCOL``.

    Raises:
        Exception: whatever pickling ``value`` raised (``pickle.PicklingError``, ``TypeError``, ...).

    """
    out = io.BytesIO()
    Pickler(out, protocol=PICKLE_PROTOCOL).dump(value)
    return out.getvalue()


_callables: dict[bytes, Any] = {}  # pickled body -> function, oldest first
_callables_lock = threading.Lock()


def load_callable(body: bytes) -> Any:
    """Unpickle a call's callable, reusing a plain function already unpickled from the same bytes.

    Only stateless callables are shared (functions without closure cells, and builtins), so
    no task sees state that an earlier task bound into its callable. Unpickling runs code:
    the caller verifies ``body`` first.

    Args:
        body: the callable as ``dumps`` pickled it.

    Returns:
        The callable (or whatever ``body`` held: the caller checks).

    Example:
        >>> load_callable(dumps(len)) is load_callable(dumps(len)) is len
        True

    """
    with _callables_lock:
        fn = _callables.get(body)
    if fn is not None:
        return fn
    fn = cloudpickle.loads(body)
    shareable = isinstance(fn, types.BuiltinFunctionType) or (
        isinstance(fn, types.FunctionType) and fn.__closure__ is None
    )
    if shareable and len(body) <= _MAX_CACHED_CALLABLE:
        with _callables_lock:
            if len(_callables) >= _CACHED_CALLABLES:
                del _callables[next(iter(_callables))]
            _callables[body] = fn
    return fn
