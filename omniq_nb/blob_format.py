"""The layout of an omniq_nb blob, and what can be read from its header without unpickling.

A blob is ``b"OQ" + version + format + flag [+ 32-byte HMAC-SHA256] + body``. The format
says how the body was written (msgpack, a pickle, a call) and, for a call, whether its
callable is a coroutine function and whether the call carries its callable or names a kept
one by its SHA-256 digest (the digest then starts the body). ``omniq_nb.serialization``
writes and reads blobs; the readers here look at the header alone and check nothing.
"""

from __future__ import annotations

__all__ = ["callable_digest", "is_coroutine_call"]

MAGIC = b"OQ"
VERSION = 1
MSGPACK = ord("m")  # plain data, msgpack
PICKLE = ord("p")  # anything else, a pickle
CALL = ord("c")  # a pickled call whose callable is not a coroutine function
COROUTINE_CALL = ord("a")  # a pickled call whose callable is a coroutine function
SHARED_CALL = ord("C")  # a call whose callable is kept apart under its digest (not a coroutine function)
SHARED_COROUTINE_CALL = ord("A")  # the same, for a coroutine function
SHARED_FORMATS = (SHARED_CALL, SHARED_COROUTINE_CALL)
FORMATS = (MSGPACK, PICKLE, CALL, COROUTINE_CALL, *SHARED_FORMATS)
DIGEST_SIZE = 32
SIGNED = ord("s")
UNSIGNED = ord("-")
HEADER_SIZE = 5
SIGNATURE_SIZE = 32


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
        >>> from omniq_nb.serialization import BlobSerializer
        >>> async def fetch() -> None: ...
        >>> s = BlobSerializer()
        >>> is_coroutine_call(s.dump_call(fetch, (), {})), is_coroutine_call(s.dump_call(len, ([],), {}))
        (True, False)
        >>> is_coroutine_call(s.dumps([1])) is None
        True

    """
    fmt = _format(blob)
    return True if fmt in (COROUTINE_CALL, SHARED_COROUTINE_CALL) else False if fmt in (CALL, SHARED_CALL) else None


def callable_digest(blob: bytes) -> str | None:
    """Return the digest of the kept callable a call blob names, read from the blob without unpickling.

    Nothing is checked here: ``load_call`` checks the signature, and that the kept bytes hash
    to the digest, before it unpickles them.

    Args:
        blob: a payload.

    Returns:
        The SHA-256 digest in hex, or ``None`` when the blob carries its callable (or is not a call).

    Example:
        >>> from omniq_nb.serialization import BlobSerializer
        >>> s = BlobSerializer(secret="k")
        >>> shared = s.share_callable(len)
        >>> [blob] = s.dump_calls(len, [(([1],), {})], shared)
        >>> callable_digest(blob) == shared.digest, callable_digest(s.dump_call(len, ([1],), {}))
        (True, None)

    """
    if _format(blob) not in SHARED_FORMATS:
        return None
    start = HEADER_SIZE + (SIGNATURE_SIZE if blob[4] == SIGNED else 0)
    digest = blob[start : start + DIGEST_SIZE]
    return digest.hex() if len(digest) == DIGEST_SIZE else None


def _format(blob: bytes) -> int | None:
    """Return a blob's format byte, or ``None`` when it has no omniq_nb header of this version."""
    if len(blob) < HEADER_SIZE or blob[:2] != MAGIC or blob[2] != VERSION:
        return None
    return blob[3]
