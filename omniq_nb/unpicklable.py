"""Error messages for values that cannot be pickled: which part of a call, which type, and why.

Example:
    >>> import threading
    >>> blame(len, (threading.Lock(),), {}, TypeError("cannot pickle"))[:47]
    'cannot serialize argument 0 of len(): <unlocked'

"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from omniq_nb import pickling

__all__ = ["blame", "cannot", "describe"]


def describe(value: Any) -> str:
    """Return a short repr of ``value`` and its type, for an error message (a failing repr is named so)."""
    try:
        text = repr(value)
    except Exception:  # a repr that fails (or recurses too deeply) must not hide the real error
        text = "<unrepresentable>"
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} (a {type(value).__module__}.{type(value).__qualname__})"


def cannot(label: str, value: Any, exc: BaseException) -> str:
    """Return the one-line message for ``value`` (``label``) that pickling failed with ``exc``."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, RecursionError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        return (
            f"cannot serialize {label}: it is too deeply nested to pickle (more levels than Python's "
            f"recursion limit of {sys.getrecursionlimit()} allows); pass a flatter structure"
        )
    return f"cannot serialize {label}: {describe(value)}: {type(exc).__name__}: {exc}"


def blame(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any], exc: Exception) -> str:
    """Name the first part of a call that cloudpickle cannot serialize."""
    name = getattr(fn, "__qualname__", repr(fn))
    suspects: list[tuple[str, Any]] = [(f"the callable {name}", fn)]
    suspects += [(f"argument {i} of {name}()", arg) for i, arg in enumerate(args)]
    suspects += [(f"keyword argument {key!r} of {name}()", arg) for key, arg in kwargs.items()]
    for label, suspect in suspects:
        try:
            pickling.dumps(suspect)
        except Exception as inner:
            return cannot(label, suspect, inner)
    return cannot(f"the call to {name}()", (tuple(args), dict(kwargs)), exc)
