"""Turn calls and results into self-describing blobs, and back, with optional HMAC signing.

Plain data is written with msgpack (msgspec), everything else with cloudpickle (functions
defined in ``__main__`` or a notebook travel by value); ``omniq_nb.blob_format`` is the
layout, and what a worker reads from a header before it loads a call. With a secret, every
blob is signed when written and its signature is checked *before* the body is decoded, so a
tampered or unsigned payload is never unpickled.

The callable of a call is pickled apart from its arguments, so a worker unpickles each plain
function once and reuses it for every task that calls it (as dask's workers do): a function
sent by value then keeps its module-level state between tasks in one worker, as an imported
function always does. Callables that carry state of their own (closures, bound methods,
``functools.partial``, callable objects) are unpickled afresh for every task. How cloudpickle
is used (code keeps its file name, a cell's source travels, the reuse) is ``omniq_nb.pickling``.

The calls of one batch (``enqueue_many``, ``.map()``) share their callable: ``share_callable``
pickles it once, the store keeps those bytes once under their SHA-256 digest, and each call's
blob names that digest; ``load_call`` takes the kept bytes and refuses them unless they hash
to the digest, which the blob's signature covers.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import cloudpickle
import msgspec

from omniq_nb import pickling
from omniq_nb.blob_format import (
    CALL,
    COROUTINE_CALL,
    DIGEST_SIZE,
    FORMATS,
    HEADER_SIZE,
    MAGIC,
    MSGPACK,
    PICKLE,
    SHARED_CALL,
    SHARED_COROUTINE_CALL,
    SHARED_FORMATS,
    SIGNATURE_SIZE,
    SIGNED,
    UNSIGNED,
    VERSION,
)
from omniq_nb.errors import CallableMissing, SerializationError, SignatureError
from omniq_nb.inputs import Input, substitute
from omniq_nb.unpicklable import blame, cannot, describe

KEPT_RESULT_MARK = b"ORkept:"
"""How a result kept in a separate result store is marked in its queue's row (never a blob: not ``OQ``)."""
_MAX_PLAIN_DEPTH = 64
_PLAIN_SCALARS = (type(None), bool, int, float, str, bytes)
_MAX_MSGPACK_INT = 2**64

_msgpack_encoder = msgspec.msgpack.Encoder()
_msgpack_decoder = msgspec.msgpack.Decoder()


class SharedCallable(NamedTuple):
    """A batch's callable pickled once: the bytes a store keeps, and the digest its calls name."""

    digest: str
    """SHA-256 of ``body``, in hex: the key the store keeps ``body`` under."""
    body: bytes
    """The callable as ``omniq_nb.pickling.dumps`` pickled it."""


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
            return self._seal(MSGPACK, _msgpack_encoder.encode(value))
        try:
            body = pickling.dumps(value)
        except Exception as exc:
            raise SerializationError(cannot(label, value, exc)) from exc
        return self._seal(PICKLE, body)

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
        return _decode(*self._open(blob))

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

    def share_callable(self, fn: Callable[..., Any]) -> SharedCallable:
        """Pickle a batch's callable once, for a store to keep apart from its calls (see ``dump_calls``).

        Args:
            fn: the callable.

        Returns:
            Its pickled bytes and their SHA-256 digest.

        Raises:
            SerializationError: the callable cannot be pickled.

        """
        body = _callable_body(fn)
        return SharedCallable(hashlib.sha256(body).hexdigest(), body)

    def dump_calls(
        self,
        fn: Callable[..., Any],
        calls: Iterable[tuple[Sequence[Any], Mapping[str, Any]]],
        shared: SharedCallable | None = None,
    ) -> Iterator[bytes]:
        """Serialize many calls of one callable, pickling the callable only once.

        Arguments made only of plain values (numbers, strings, bytes, lists, tuples, dicts)
        take the fast standard pickler; anything else goes through cloudpickle.

        Args:
            fn: the callable.
            calls: ``(args, kwargs)`` pairs.
            shared: ``share_callable(fn)``: each blob then names the callable by its digest
                instead of carrying it, and whoever loads it passes the kept bytes.

        Returns:
            One blob per call, in order, each made as it is reached (a large batch need not be
            held whole): an argument that cannot be pickled raises when its call is reached.

        Raises:
            SerializationError: the callable (at once) or an argument cannot be pickled.

        """
        coroutine = inspect.iscoroutinefunction(fn)
        if shared is None:
            return self._dump_each(fn, COROUTINE_CALL if coroutine else CALL, _callable_body(fn), calls)
        return self._dump_each(fn, SHARED_COROUTINE_CALL if coroutine else SHARED_CALL, shared.digest, calls)

    def _dump_each(
        self,
        fn: Callable[..., Any],
        fmt: int,
        callable_part: bytes | str,
        calls: Iterable[tuple[Sequence[Any], Mapping[str, Any]]],
    ) -> Iterator[bytes]:
        """Yield each call's blob: ``(body, args, kwargs)`` pickled; for a digest, it then ``(args, kwargs)``."""
        prefix = bytes.fromhex(callable_part) if isinstance(callable_part, str) else b""
        for args, kwargs in calls:
            arguments = (tuple(args), dict(kwargs))
            call = arguments if prefix else (callable_part, *arguments)
            simple = _is_simple(arguments[0], 0) and _is_simple(arguments[1], 0)
            try:
                body = pickle.dumps(call, pickling.PICKLE_PROTOCOL) if simple else pickling.dumps(call)
            except Exception as exc:
                raise SerializationError(blame(fn, args, kwargs, exc)) from exc
            yield self._seal(fmt, prefix + body if prefix else body)

    def load_call(
        self, blob: bytes, inputs: Mapping[str, Input] | None = None, stored: bytes | None = None
    ) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        """Verify and decode a blob made by ``dump_call`` or ``dump_calls``.

        Args:
            blob: the task's payload.
            inputs: its dependencies' results (serialized) or errors, by task id: they take the
                places of the placeholders in its arguments (see ``omniq_nb.inputs``).
            stored: the callable's bytes, kept apart by the store, when the blob names them by
                digest (``callable_digest``).

        Returns:
            ``(fn, args, kwargs)``.

        Raises:
            SignatureError: see ``loads``; or ``stored`` does not hash to the blob's digest.
            SerializationError: the blob does not hold a call, or names a callable by digest
                and ``stored`` is missing.

        """
        fmt, body = self._open(blob)
        if fmt in SHARED_FORMATS:
            fn_body = _checked_callable(body[:DIGEST_SIZE], stored)
            arguments = _decode(PICKLE, body[DIGEST_SIZE:])
            call = (fn_body, *arguments) if isinstance(arguments, tuple) and len(arguments) == 2 else None
        else:
            call = _decode(fmt, body)
        if not (isinstance(call, tuple) and len(call) == 3 and isinstance(call[0], bytes)):
            raise SerializationError("the payload does not hold a call (fn, args, kwargs)")
        fn = pickling.load_callable(call[0])
        if not callable(fn):
            raise SerializationError(f"the payload's callable is not callable: {describe(fn)}")
        if inputs is None:
            return fn, call[1], call[2]
        return (fn, *substitute(call[1], call[2], _Loaded(self, inputs)))

    def _seal(self, fmt: int, body: bytes) -> bytes:
        if self._key is None:
            return bytes((*MAGIC, VERSION, fmt, UNSIGNED)) + body
        header = bytes((*MAGIC, VERSION, fmt, SIGNED))
        return header + hmac.digest(self._key, header + body, hashlib.sha256) + body

    def _open(self, blob: bytes) -> tuple[int, memoryview]:
        view = memoryview(blob)
        if blob.startswith(KEPT_RESULT_MARK):
            raise SerializationError(
                "this result is kept in a separate result store, which this queue was not opened with: "
                "set result_url (OMNIQ_RESULT_URL, --result-url) as the workers do"
            )
        if len(view) < HEADER_SIZE or view[:2] != MAGIC or view[2] != VERSION:
            raise SerializationError("not an omniq_nb blob (bad header); was it written by another program?")
        fmt, flag = view[3], view[4]
        if fmt not in FORMATS:
            raise SerializationError(f"unknown blob format {fmt!r}")
        if flag == UNSIGNED:
            if self._key is not None:
                raise SignatureError(
                    "payload signature missing: OMNIQ_SECRET is set here but the payload was "
                    "written unsigned; it was not unpickled"
                )
            return fmt, view[HEADER_SIZE:]
        body = view[HEADER_SIZE + SIGNATURE_SIZE :]
        if self._key is None:
            raise SignatureError(
                "payload signature cannot be checked: it was signed but OMNIQ_SECRET is not set "
                "in this process; set the same OMNIQ_SECRET everywhere"
            )
        expected = hmac.digest(self._key, bytes(view[:HEADER_SIZE]) + bytes(body), hashlib.sha256)
        if not hmac.compare_digest(expected, bytes(view[HEADER_SIZE : HEADER_SIZE + SIGNATURE_SIZE])):
            raise SignatureError(
                "payload signature mismatch: the payload was altered or signed with another "
                "OMNIQ_SECRET; it was not unpickled"
            )
        return fmt, body


def _callable_body(fn: Callable[..., Any]) -> bytes:
    """Return ``fn`` pickled for a call (see ``omniq_nb.pickling``), or raise ``SerializationError``."""
    try:
        return pickling.dumps(fn)
    except Exception as exc:
        raise SerializationError(blame(fn, (), {}, exc)) from exc


def _checked_callable(digest: memoryview, stored: bytes | None) -> bytes:
    """Return ``stored`` once it hashes to ``digest``; raise when it is missing or does not."""
    if stored is None:
        raise CallableMissing(
            f"the call names its function by digest {bytes(digest).hex()} and the store does not keep it "
            "(was the store purged of everything since?)"
        )
    if not hmac.compare_digest(hashlib.sha256(stored).digest(), bytes(digest)):
        raise SignatureError(
            "the function the store keeps for this call does not match the digest its payload names: "
            "it was altered; it was not unpickled"
        )
    return stored


def _decode(fmt: int, body: memoryview | bytes) -> Any:
    """Decode a blob's body written in format ``fmt`` (msgpack, else a pickle)."""
    try:
        return _msgpack_decoder.decode(body) if fmt == MSGPACK else cloudpickle.loads(body)
    except (msgspec.DecodeError, pickle.UnpicklingError, EOFError) as exc:
        raise SerializationError(f"corrupt omniq_nb blob: {type(exc).__name__}: {exc}") from exc


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
