"""Result cache keys: one digest of a call's code, the globals its code reads, and its arguments.

A task submitted with ``cache=True`` stores ``call_key(...)`` as its ``cache_key``; a later
submission with the same key reuses the stored result. The function travels through the
same cloudpickle that builds payloads (a notebook function by value: its code, defaults,
closure and the values of the globals it reads; an importable one by name, with its code
added here), with what differs between two kernels for the same code left out:

- a code object is reduced to what it computes: no file name, no line numbers (a cell's
  file name changes with every kernel; moving a function down a cell changes nothing);
- a class pickled by value loses cloudpickle's tracker id (a random one per process), and
  a function its module's ``__file__`` (a script's path, not its code);
- every set and frozenset (arguments, globals, code constants) is written as its items'
  pickles in sorted order (the order of a set of strings changes with each process's hash seed).

And what cloudpickle writes by name is followed where the user's code may change it: a
function of a module of the user's own (not the standard library, not an installed
package) is written by value, with the globals it reads; a wrapper such as
``functools.cache`` by its ``__wrapped__`` function. Library code is keyed by name only.

Arguments are pickled after handles became placeholders (``omniq_nb.inputs``): a
dependency counts as its task id.

Example:
    >>> def area(w, h):
    ...     return w * h
    >>> call_key(area, (2, 3), {}) == call_key(area, (2, 3), {})
    True
    >>> call_key(area, (2, 3), {}) == call_key(area, (3, 2), {})
    False

"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import sys
import sysconfig
import types
from collections import ChainMap
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import cloudpickle

from omniq_nb import pickling

__all__ = ["KEY_VERSION", "call_key", "function_digest"]

KEY_VERSION = b"omniq-cache-key-2"
"""Mixed into every key: a new way of computing keys gets new keys, never false hits."""

_SKELETONS = {  # cloudpickle's class rebuilders -> the position of the tracker id in their arguments
    getattr(cloudpickle.cloudpickle, "_make_skeleton_class", None): 4,
    getattr(cloudpickle.cloudpickle, "_make_skeleton_enum", None): 5,
}
_MAKE_FUNCTION = getattr(cloudpickle.cloudpickle, "_make_function", None)  # its 2nd argument: the module's names


def call_key(
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    key: Callable[..., Any] | None = None,
    fn_digest: bytes | None = None,
    context: Any = None,
) -> str:
    """Return the cache key of ``fn(*args, **kwargs)``: a hex digest.

    Args:
        fn: the task's callable.
        args: its positional arguments (handles already placeholders).
        kwargs: its keyword arguments.
        key: ``cache_key=``: called with the arguments, its value stands for them in the key.
        fn_digest: ``function_digest(fn)`` when the caller has it (one per batch).
        context: anything else the result depends on (the task's name, ``after=`` ids, ``run_on``).

    Raises:
        Exception: the function, the arguments or the key's value cannot be pickled, or
            ``key`` raised (the caller then submits without the cache).

    """
    digest = hashlib.blake2b(KEY_VERSION, digest_size=20)
    digest.update(fn_digest if fn_digest is not None else function_digest(fn))
    value = key(*args, **kwargs) if key is not None else (tuple(args), dict(kwargs))
    _KeyPickler(_Hashing(digest), protocol=pickling.PICKLE_PROTOCOL).dump((context, value))
    return digest.hexdigest()


def function_digest(fn: Callable[..., Any]) -> bytes:
    """Return the digest of a callable as keys see it: its pickle, plus its code.

    Raises:
        Exception: the callable cannot be pickled.

    """
    digest = hashlib.blake2b(digest_size=20)
    code = getattr(getattr(fn, "func", fn), "__code__", None)  # functools.partial: its function's code
    _KeyPickler(_Hashing(digest), protocol=pickling.PICKLE_PROTOCOL).dump((fn, code))
    return digest.digest()


class _Hashing:
    """A file-like sink that feeds what a pickler writes into a hash (nothing is kept)."""

    def __init__(self, digest: Any) -> None:
        self.write = digest.update


def _code_identity(code: types.CodeType) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """Reduce a code object to what it computes: no file name, no line numbers, constants in order."""
    return _never_rebuilt, (
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
        code.co_code,
        code.co_consts,
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
        code.co_name,
        getattr(code, "co_qualname", code.co_name),
        getattr(code, "co_exceptiontable", b""),
    )


def _never_rebuilt(*_: Any) -> None:
    """Stand in for a code constructor in key pickles, which are hashed and never loaded."""
    raise TypeError("a cache key pickle is never unpickled")


def _item_order(item: Any) -> bytes:
    """Return a set item's place in the set's fixed order: its pickle (plain values) or its key digest."""
    if type(item) in _PLAIN:
        return pickle.dumps(item, pickling.PICKLE_PROTOCOL)
    digest = hashlib.blake2b(digest_size=16)
    _KeyPickler(_Hashing(digest), protocol=pickling.PICKLE_PROTOCOL).dump(item)
    return b"\xff" + digest.digest()


_NOT_WRAPPERS = (type, types.FunctionType, types.MethodType, functools.partial)
"""Callables with a ``__wrapped__`` that cloudpickle already writes with what they hold."""
_PLAIN = frozenset({str, bytes, int, float, bool, type(None)})
"""Types whose standard pickle is the same in every process (a set of them is ordered by it)."""


@functools.lru_cache(maxsize=256)
def _users_module(name: str) -> bool:
    """Return whether module ``name`` is the user's own code: not built in, not the standard library, not installed."""
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if not path or name.partition(".")[0] == "omniq_nb":
        return False
    folder = os.path.realpath(path)
    if any(part in ("site-packages", "dist-packages") for part in folder.split(os.sep)):
        return False
    library = {os.path.realpath(sysconfig.get_paths()[kind]) for kind in ("stdlib", "platstdlib")}
    return not any(folder.startswith(place + os.sep) for place in library)


class _KeyPickler(pickling.Pickler):
    """omniq_nb's cloudpickle with code reduced to what it computes and no per-process class ids."""

    dispatch_table: ClassVar[ChainMap[Any, Any]] = ChainMap(
        {types.CodeType: _code_identity}, cloudpickle.Pickler.dispatch_table
    )

    def persistent_id(self, obj: Any) -> Any:
        """Write a set in a fixed order, and a wrapper by what it wraps (pickle sees every object here first)."""
        kind = type(obj)
        if kind is set or kind is frozenset:
            return (kind.__name__, tuple(sorted(map(_item_order, obj))))
        wrapped = getattr(obj, "__wrapped__", None) if not isinstance(obj, _NOT_WRAPPERS) and callable(obj) else None
        if wrapped is not None:  # functools.cache, lru_cache: pickled by name, whatever they wrap
            return ("wrapper", kind.__qualname__, wrapped)
        return None

    def reducer_override(self, obj: Any) -> Any:
        """Reduce as cloudpickle does, without a class's random tracker id or a function module's ``__file__``.

        A function of the user's own module is reduced by value, as a notebook function is.
        """
        if isinstance(obj, types.FunctionType) and _users_module(getattr(obj, "__module__", None) or ""):
            reduced = self._dynamic_function_reduce(obj)
        else:
            reduced = super().reducer_override(obj)
        if not (isinstance(reduced, tuple) and len(reduced) > 1 and isinstance(reduced[1], tuple)):
            return reduced
        rebuild, args = reduced[0], reduced[1]
        at = _SKELETONS.get(rebuild)
        if at is not None and len(args) > at:
            return (rebuild, (*args[:at], None, *args[at + 1 :]), *reduced[2:])
        if rebuild is _MAKE_FUNCTION and len(args) > 1 and isinstance(args[1], dict) and "__file__" in args[1]:
            names = {k: v for k, v in args[1].items() if k != "__file__"}
            return (rebuild, (args[0], names, *args[2:]), *reduced[2:])
        return reduced
