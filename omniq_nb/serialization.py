"""Turn calls and results into self-describing blobs, and back, with optional HMAC signing.

A blob is ``b"OQ" + version + format + flag [+ 32-byte HMAC-SHA256] + body``. The format
byte says how the body was written: msgpack (msgspec) for plain data, cloudpickle for
everything else (functions defined in ``__main__`` or a notebook travel by value). A call's
format byte also says whether its callable is a coroutine function (``is_coroutine_call``
reads it without unpickling anything), so a worker knows where the call runs before it
loads it; calls written before that byte existed use the plain pickle format. With a
secret, every blob is signed when written and its signature is checked *before* the body is
decoded, so a tampered or unsigned payload is never unpickled.

The callable of a call is pickled apart from its arguments, so a worker unpickles each plain
function once and reuses it for every task that calls it (as dask's workers do): a function
sent by value then keeps its module-level state between tasks in one worker, as an imported
function always does. Callables that carry state of their own (closures, bound methods,
``functools.partial``, callable objects) are unpickled afresh for every task. How cloudpickle
is used (code keeps its file name, a cell's source travels, the reuse) is ``omniq_nb.pickling``.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import pickle
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import cloudpickle
import msgspec

from omniq_nb import pickling
from omniq_nb.errors import SerializationError, SignatureError
from omniq_nb.inputs import Input, substitute

_MAGIC = b"OQ"
KEPT_RESULT_MARK = b"ORkept:"
"""How a result kept in a separate result store is marked in its queue's row (never a blob: not ``OQ``)."""
_VERSION = 1
_MSGPACK = ord("m")
_PICKLE = ord("p")
_CALL = ord("c")  # a pickled call whose callable is not a coroutine function
_COROUTINE_CALL = ord("a")  # a pickled call whose callable is a coroutine function
_FORMATS = (_MSGPACK, _PICKLE, _CALL, _COROUTINE_CALL)
_SIGNED = ord("s")
_UNSIGNED = ord("-")
_HEADER_SIZE = 5
_SIGNATURE_SIZE = 32
_MAX_PLAIN_DEPTH = 64
_PLAIN_SCALARS = (type(None), bool, int, float, str, bytes)
_MAX_MSGPACK_INT = 2**64

_msgpack_encoder = msgspec.msgpack.Encoder()
_msgpack_decoder = msgspec.msgpack.Decoder()


class Serializer(Protocol):
    """Anything that turns a value into bytes and back."""

    def dumps(self, value: Any) -> bytes:
        """Return ``value`` as bytes."""
        ...

    def loads(self, blob: bytes) -> Any:
        """Return the value that ``dumps`` turned into ``blob``."""
        ...


class BlobSerializer:
    """The default serializer: msgpack for plain data, cloudpickle otherwise, HMAC when keyed.

    Args:
        secret: the HMAC key (``OMNIQ_SECRET``); ``None`` writes unsigned blobs and refuses
            signed ones it cannot check.

    Example:
        >>> s = BlobSerializer(secret="k")
        >>> s.loads(s.dumps({"a": [1, 2.5]}))
        {'a': [1, 2.5]}

    """

    def __init__(self, secret: str | bytes | None = None) -> None:
        self._key = secret.encode() if isinstance(secret, str) else secret

    def dumps(self, value: Any, *, label: str = "the value") -> bytes:
        """Serialize ``value``: msgpack when it is plain data that round-trips exactly, else cloudpickle.

        Args:
            value: any value cloudpickle can handle.
            label: what the value is, for the error message (``"the task's result"``).

        Returns:
            A self-describing (and, with a secret, signed) blob.

        Raises:
            SerializationError: the value cannot be pickled, or is nested too deeply; the
                message names ``label`` and the value's type.

        """
        if _is_plain(value, 0):
            return self._seal(_MSGPACK, _msgpack_encoder.encode(value))
        try:
            body = pickling.dumps(value)
        except Exception as exc:
            raise SerializationError(_cannot(label, value, exc)) from exc
        return self._seal(_PICKLE, body)

    def loads(self, blob: bytes) -> Any:
        """Check the signature of ``blob`` (when a secret is set), then decode it.

        Args:
            blob: bytes made by ``dumps``.

        Returns:
            The value.

        Raises:
            SignatureError: the signature is missing, wrong, or cannot be checked.
            SerializationError: ``blob`` is not an omniq blob.

        """
        fmt, body = self._open(blob)
        try:
            return _msgpack_decoder.decode(body) if fmt == _MSGPACK else cloudpickle.loads(body)
        except (msgspec.DecodeError, pickle.UnpicklingError, EOFError) as exc:
            raise SerializationError(f"corrupt omniq_nb blob: {type(exc).__name__}: {exc}") from exc

    def dump_call(self, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
        """Serialize a call ``fn(*args, **kwargs)`` as one pickled blob.

        Args:
            fn: the callable (a notebook or ``__main__`` function travels by value).
            args: positional arguments.
            kwargs: keyword arguments.

        Returns:
            The blob.

        Raises:
            SerializationError: the callable or an argument cannot be pickled; the message
                names which one and its type.

        """
        return next(self.dump_calls(fn, [(args, kwargs)]))

    def dump_calls(
        self, fn: Callable[..., Any], calls: Iterable[tuple[Sequence[Any], Mapping[str, Any]]]
    ) -> Iterator[bytes]:
        """Serialize many calls of one callable, pickling the callable only once.

        Arguments made only of plain values (numbers, strings, bytes, lists, tuples, dicts)
        take the fast standard pickler; anything else goes through cloudpickle.

        Args:
            fn: the callable.
            calls: ``(args, kwargs)`` pairs.

        Returns:
            One blob per call, in order, each made as it is reached (a large batch need not be
            held whole): an argument that cannot be pickled raises when its call is reached.

        Raises:
            SerializationError: the callable (at once) or an argument cannot be pickled.

        """
        try:
            fn_body = pickling.dumps(fn)
        except Exception as exc:
            raise SerializationError(_blame(fn, (), {}, exc)) from exc
        return self._dump_each(fn, fn_body, calls)

    def _dump_each(
        self, fn: Callable[..., Any], fn_body: bytes, calls: Iterable[tuple[Sequence[Any], Mapping[str, Any]]]
    ) -> Iterator[bytes]:
        fmt = _COROUTINE_CALL if inspect.iscoroutinefunction(fn) else _CALL
        for args, kwargs in calls:
            call = (fn_body, tuple(args), dict(kwargs))
            simple = _is_simple(call[1], 0) and _is_simple(call[2], 0)
            try:
                body = pickle.dumps(call, pickling.PICKLE_PROTOCOL) if simple else pickling.dumps(call)
            except Exception as exc:
                raise SerializationError(_blame(fn, args, kwargs, exc)) from exc
            yield self._seal(fmt, body)

    def load_call(
        self, blob: bytes, inputs: Mapping[str, Input] | None = None
    ) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        """Verify and decode a blob made by ``dump_call``.

        Args:
            blob: the task's payload.
            inputs: its dependencies' results (serialized) or errors, by task id: they take the
                places of the placeholders in its arguments (see ``omniq_nb.inputs``).

        Returns:
            ``(fn, args, kwargs)``.

        Raises:
            SignatureError: see ``loads``.
            SerializationError: the blob does not hold a call.

        """
        call = self.loads(blob)
        if not (isinstance(call, tuple) and len(call) == 3 and isinstance(call[0], bytes)):
            raise SerializationError("the payload does not hold a call (fn, args, kwargs)")
        fn = pickling.load_callable(call[0])
        if not callable(fn):
            raise SerializationError(f"the payload's callable is not callable: {_describe(fn)}")
        if inputs is None:
            return fn, call[1], call[2]
        return (fn, *substitute(call[1], call[2], _Loaded(self, inputs)))

    def _seal(self, fmt: int, body: bytes) -> bytes:
        if self._key is None:
            return bytes((*_MAGIC, _VERSION, fmt, _UNSIGNED)) + body
        header = bytes((*_MAGIC, _VERSION, fmt, _SIGNED))
        return header + hmac.digest(self._key, header + body, hashlib.sha256) + body

    def _open(self, blob: bytes) -> tuple[int, memoryview]:
        view = memoryview(blob)
        if blob.startswith(KEPT_RESULT_MARK):
            raise SerializationError(
                "this result is kept in a separate result store, which this queue was not opened with: "
                "set result_url (OMNIQ_RESULT_URL, --result-url) as the workers do"
            )
        if len(view) < _HEADER_SIZE or view[:2] != _MAGIC or view[2] != _VERSION:
            raise SerializationError("not an omniq_nb blob (bad header); was it written by another program?")
        fmt, flag = view[3], view[4]
        if fmt not in _FORMATS:
            raise SerializationError(f"unknown blob format {fmt!r}")
        if flag == _UNSIGNED:
            if self._key is not None:
                raise SignatureError(
                    "payload signature missing: OMNIQ_SECRET is set here but the payload was "
                    "written unsigned; it was not unpickled"
                )
            return fmt, view[_HEADER_SIZE:]
        body = view[_HEADER_SIZE + _SIGNATURE_SIZE :]
        if self._key is None:
            raise SignatureError(
                "payload signature cannot be checked: it was signed but OMNIQ_SECRET is not set "
                "in this process; set the same OMNIQ_SECRET everywhere"
            )
        expected = hmac.digest(self._key, bytes(view[:_HEADER_SIZE]) + bytes(body), hashlib.sha256)
        if not hmac.compare_digest(expected, bytes(view[_HEADER_SIZE : _HEADER_SIZE + _SIGNATURE_SIZE])):
            raise SignatureError(
                "payload signature mismatch: the payload was altered or signed with another "
                "OMNIQ_SECRET; it was not unpickled"
            )
        return fmt, body


def is_coroutine_call(blob: bytes) -> bool | None:
    """Return whether a call blob's callable is a coroutine function, from its header alone.

    Nothing is unpickled and the signature is not checked: the answer only says where the
    call should run; whoever loads the call checks its signature first, so a forged header
    can misroute a call but never gets it unpickled.

    Args:
        blob: a payload made by ``BlobSerializer.dump_call`` or ``dump_calls``.

    Returns:
        True or False as recorded at enqueue; ``None`` when the blob does not say (written
        before the flag existed, or not a call blob): then only loading the call tells.

    Example:
        >>> async def fetch() -> None: ...
        >>> s = BlobSerializer()
        >>> is_coroutine_call(s.dump_call(fetch, (), {})), is_coroutine_call(s.dump_call(len, ([],), {}))
        (True, False)
        >>> is_coroutine_call(s.dumps([1])) is None
        True

    """
    if len(blob) < _HEADER_SIZE or blob[:2] != _MAGIC or blob[2] != _VERSION:
        return None
    fmt = blob[3]
    return True if fmt == _COROUTINE_CALL else False if fmt == _CALL else None


def _is_plain(value: Any, depth: int) -> bool:
    """Return True when msgpack reproduces ``value`` with exactly the same types."""
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return kind is not int or -_MAX_MSGPACK_INT // 2 <= value < _MAX_MSGPACK_INT
    if depth >= _MAX_PLAIN_DEPTH:
        return False
    if kind is list:
        return all(_is_plain(item, depth + 1) for item in value)
    if kind is dict:
        return all(type(k) is str and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def _is_simple(value: Any, depth: int) -> bool:
    """Return True when the standard pickler writes ``value`` by value (no class or function)."""
    kind = type(value)
    if kind in _PLAIN_SCALARS or kind is complex:
        return True
    if depth >= _MAX_PLAIN_DEPTH:
        return False
    if kind is tuple or kind is list:
        for item in value:  # a plain loop: this runs once per task of a batch
            if type(item) not in _PLAIN_SCALARS and not _is_simple(item, depth + 1):
                return False
        return True
    if kind is dict:
        for key, item in value.items():
            if not (_is_simple(key, depth + 1) and _is_simple(item, depth + 1)):
                return False
        return True
    return False


def _describe(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a repr that fails (or recurses too deeply) must not hide the real error
        text = "<unrepresentable>"
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} (a {type(value).__module__}.{type(value).__qualname__})"


def _cannot(label: str, value: Any, exc: BaseException) -> str:
    """Return the one-line message for ``value`` (``label``) that pickling failed with ``exc``."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, RecursionError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        return (
            f"cannot serialize {label}: it is too deeply nested to pickle (more levels than Python's "
            f"recursion limit of {sys.getrecursionlimit()} allows); pass a flatter structure"
        )
    return f"cannot serialize {label}: {_describe(value)}: {type(exc).__name__}: {exc}"


def _blame(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any], exc: Exception) -> str:
    """Name the first part of a call that cloudpickle cannot serialize."""
    name = getattr(fn, "__qualname__", repr(fn))
    suspects: list[tuple[str, Any]] = [(f"the callable {name}", fn)]
    suspects += [(f"argument {i} of {name}()", arg) for i, arg in enumerate(args)]
    suspects += [(f"keyword argument {key!r} of {name}()", arg) for key, arg in kwargs.items()]
    for label, suspect in suspects:
        try:
            pickling.dumps(suspect)
        except Exception as inner:
            return _cannot(label, suspect, inner)
    return _cannot(f"the call to {name}()", (tuple(args), dict(kwargs)), exc)


# pickles written before omniq_nb.pickling existed name the code rebuilder by this path: keep it loadable
_named_code = pickling.named_code


class _Loaded(Mapping[str, Any]):
    """Dependencies' inputs by task id, each result unpickled when an argument first asks for it.

    A dependency named only in ``after=`` is never unpickled (its class may not even be
    importable here).
    """

    def __init__(self, serializer: BlobSerializer, inputs: Mapping[str, Input]) -> None:
        self._serializer, self._inputs = serializer, inputs
        self._values: dict[str, Any] = {}

    def __getitem__(self, task_id: str) -> Any:
        if task_id not in self._values:
            value = self._inputs[task_id]
            self._values[task_id] = self._serializer.loads(value) if isinstance(value, bytes) else value
        return self._values[task_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._inputs)

    def __len__(self) -> int:
        return len(self._inputs)
