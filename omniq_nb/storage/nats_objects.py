"""The NATS store's large values: arguments and results too large for a bucket entry, kept in an object store.

A bucket entry travels as one message, at most the server's ``max_payload`` (1 MB by
default), and the mirror of every store object keeps every entry in memory. So a payload or
a result larger than ``LARGE`` bytes goes to the prefix's object store bucket (its stream
``OBJ_omniq_PREFIX``, made at the first such value), and the entry keeps a reference in its
place: ``REF`` and the object's name. The store reads the objects back before it returns a
task from a read or a claim (``_filled``); the tasks a transition returns (a settle, cancel,
release...) get their results back but keep large arguments as references: their payload is
never read (handles drop it), and a transition that landed must not fail on a read after it.

Names are ``ID.p.NONCE`` (a payload) and ``ID.r.NONCE`` (a result), new for every write: an
object is written before the entry that names it, so a write that loses (an insert of an id
that exists, an outcome whose lease was lost) deletes its own object and never another's.
A task's objects go when the task is purged. A process killed between writing an object and
its entry leaves that object behind, until ``purge(everything=True)`` empties the bucket.

A batch's pickled callable (``insert_many``'s ``kept``) is the object ``fn.DIGEST``, written
once before the batch's entries; it stays until that purge too. With no transaction, a
``purge(everything=True)`` that runs between the two leaves the batch's tasks naming a gone
callable: they fail, as tasks whose large argument was purged that way are handed back.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import secrets
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TypeGuard

import msgspec
import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.object_store import ObjectStore

from omniq_nb.errors import StorageError
from omniq_nb.models import Task, TaskResult
from omniq_nb.storage.nats_codec import token
from omniq_nb.storage.nats_mirror import NATSMirror

__all__ = ["LARGE", "REF", "NATSObjects", "is_ref"]

logger = logging.getLogger(__name__)

LARGE = 256 * 1024
"""Bytes above which a payload or result is kept in the object store, not in the task's entry."""
REF = b"\x00omniq-nats-object:"
"""The start of a reference to an object (never the start of a serialized value)."""


class NATSObjects(NATSMirror):
    """Keep large payloads and results in the prefix's object store; read them back into tasks."""

    _objects: ObjectStore | None = None

    async def close(self) -> None:
        """Forget the object store (it belongs to the connection that closes), then close."""
        self._objects = None
        await super().close()

    async def _kept_apart(self, tasks: Sequence[Task]) -> builtins.list[Task]:
        """Return ``tasks`` as their entries keep them: each large payload or result written as an object first."""
        if not any(_is_large(task.payload) or _is_large(task.result) for task in tasks):
            return builtins.list(tasks)
        return await asyncio.gather(*map(self._keep_apart, tasks))

    async def _keep_apart(self, task: Task) -> Task:
        payload = await self._put_object(task.id, "p", task.payload) if _is_large(task.payload) else task.payload
        result = await self._put_object(task.id, "r", task.result) if _is_large(task.result) else task.result
        if payload is task.payload and result is task.result:
            return task
        return msgspec.structs.replace(task, payload=payload, result=result)

    async def _kept_apart_results(self, results: Sequence[TaskResult]) -> builtins.list[TaskResult]:
        """Return ``results`` with each large result written as an object first, a reference in its place."""

        async def keep(result: TaskResult) -> TaskResult:
            if not _is_large(result.result):
                return result
            return msgspec.structs.replace(result, result=await self._put_object(result.task_id, "r", result.result))

        if not any(_is_large(result.result) for result in results):
            return builtins.list(results)
        return await asyncio.gather(*map(keep, results))

    async def _applied(
        self,
        results: Sequence[TaskResult],
        kept: Sequence[TaskResult],
        changes: Sequence[tuple[Task | None, bool] | BaseException],
    ) -> builtins.list[Task]:
        """Return the tasks the outcomes changed, with their results' bytes; delete the objects of the refused.

        ``kept`` are ``results`` as written (``_kept_apart_results``), ``changes`` what each write
        did (an exception: unknown, so its object stays). Large arguments stay references: whoever
        gets a settled task (the pool, its handles) never reads its payload.
        """
        refused = [
            k.result for k, c in zip(kept, changes, strict=True) if not isinstance(c, BaseException) and not c[1]
        ]
        await self._drop_objects(refused)
        known = {k.result: r.result or b"" for k, r in zip(kept, results, strict=True) if is_ref(k.result)}
        return [
            _with_values(c[0], known) for c in changes if not isinstance(c, BaseException) and c[1] and c[0] is not None
        ]

    async def _put_object(self, task_id: str, part: str, value: bytes) -> bytes:
        """Write ``value`` as a new object of the task; return the reference its entry keeps."""
        name = f"{token(task_id)}.{part}.{secrets.token_hex(6)}"
        async with self._errors():
            store = await self._made_object_store()
            await store.put(name, value)
        return REF + name.encode()

    async def _keep_callable(self, kept: tuple[str, bytes] | None) -> None:
        """Keep a batch's pickled callable (if any) as the object ``fn.DIGEST`` (written once), before its tasks."""
        if kept is None:
            return
        digest, body = kept
        name = f"fn.{digest}"
        async with self._errors():
            store = await self._made_object_store()
            with contextlib.suppress(nats.js.errors.NotFoundError, nats.js.errors.ObjectDeletedError):
                await store.get_info(name)
                return
            await store.put(name, body)

    async def kept_callables(self, digests: Collection[str]) -> dict[str, bytes]:
        """Return the kept callables of these digests (those not kept are left out)."""
        wanted = builtins.list(digests)

        async def read(store: ObjectStore, digest: str) -> bytes | None:
            with contextlib.suppress(nats.js.errors.NotFoundError, nats.js.errors.ObjectDeletedError):
                return (await store.get(f"fn.{digest}")).data or b""
            return None

        async with self._errors():
            store = await self._object_store()
            if store is None:
                return {}
            found = await asyncio.gather(*(read(store, digest) for digest in wanted))
        return {digest: body for digest, body in zip(wanted, found, strict=True) if body is not None}

    async def _filled(
        self, tasks: Sequence[Task], known: Mapping[bytes, bytes] = {}, *, payloads: bool = True
    ) -> builtins.list[Task]:
        """Return ``tasks`` with every reference replaced by its object's bytes (``known`` ones not read).

        With ``payloads=False`` large arguments stay references: for the tasks a transition
        returns, whose payload nobody reads (handles drop it).

        Raises:
            StorageError: an object a task names is gone (its task was purged meanwhile).

        """
        refs = {value for task in tasks for value in (task.payload if payloads else None, task.result) if is_ref(value)}
        if not refs:
            return builtins.list(tasks)
        values = {ref: known[ref] for ref in refs if ref in known}
        unread = [ref for ref in refs if ref not in values]
        if unread:
            async with self._errors():
                store = await self._object_store()
                found = await asyncio.gather(*(self._get_object(store, ref) for ref in unread))
            values.update(zip(unread, found, strict=True))
        return [_with_values(task, values) for task in tasks]

    async def _filled_each(self, tasks: Sequence[Task]) -> tuple[builtins.list[Task], builtins.list[Task]]:
        """Return ``(tasks filled, tasks whose objects could not be read now)``: each read on its own."""
        if not any(is_ref(task.payload) or is_ref(task.result) for task in tasks):
            return builtins.list(tasks), []
        usable: builtins.list[Task] = []
        unread: builtins.list[Task] = []
        filled = await asyncio.gather(*(self._filled([task]) for task in tasks), return_exceptions=True)
        for task, got in zip(tasks, filled, strict=True):
            if isinstance(got, BaseException):
                logger.warning("NATS store %s: task %s: %s", self.url, task.id, got)
                unread.append(task)
            else:
                usable += got
        return usable, unread

    async def _filled_one(self, task: Task | None) -> Task | None:
        """Return a task a transition returned (or ``None``) with its result's bytes (``_filled``, no payload)."""
        return None if task is None else (await self._filled([task], payloads=False))[0]

    async def _get_object(self, store: ObjectStore | None, ref: bytes) -> bytes:
        name = ref[len(REF) :].decode()
        try:
            if store is None:
                raise nats.js.errors.ObjectNotFoundError
            return (await store.get(name)).data or b""
        except nats.js.errors.NotFoundError:
            raise StorageError(f"the NATS store {self.url} has no object {name} (its task was purged)") from None

    async def _drop_objects(self, values: Iterable[bytes | None]) -> None:
        """Delete the objects these references name (best effort: one left behind only takes space)."""
        names = {value[len(REF) :].decode() for value in values if is_ref(value)}
        if not names:
            return
        with contextlib.suppress(nats.errors.Error, OSError, asyncio.TimeoutError):
            store = await self._object_store()
            if store is not None:
                await asyncio.gather(*(store.delete(name) for name in names), return_exceptions=True)

    async def _object_store(self) -> ObjectStore | None:
        """Return the prefix's object store, or ``None`` when it has none (no large value yet)."""
        if self._objects is None:
            with contextlib.suppress(nats.js.errors.BucketNotFoundError):
                self._objects = await self._jet.object_store(self.bucket)
        return self._objects

    async def _made_object_store(self) -> ObjectStore:
        """Return the prefix's object store, made if it has none."""
        if (store := await self._object_store()) is not None:
            return store
        config = api.ObjectStoreConfig(storage=api.StorageType.FILE)
        self._objects = await self._jet.create_object_store(self.bucket, config=config)
        return self._objects

    async def _drop_all_objects(self) -> None:
        """Empty the object store, if the prefix has one."""
        if await self._object_store() is not None:
            await self._jet.purge_stream(f"OBJ_{self.bucket}")


def is_ref(value: bytes | None) -> TypeGuard[bytes]:
    """Return whether a payload or result is a reference to an object."""
    return value is not None and value.startswith(REF)


def _is_large(value: bytes | None) -> TypeGuard[bytes]:
    return value is not None and len(value) > LARGE


def _with_values(task: Task, values: Mapping[bytes, bytes]) -> Task:
    payload = values.get(task.payload, task.payload)
    result = values.get(task.result, task.result) if task.result is not None else None
    if payload is task.payload and result is task.result:
        return task
    return msgspec.structs.replace(task, payload=payload, result=result)
