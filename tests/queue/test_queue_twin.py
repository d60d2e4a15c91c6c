"""``OmniQ`` is ``AsyncOmniQ``'s blocking twin: the same methods, parameters and handle behaviour.

Every public method of ``AsyncOmniQ`` has a twin on ``OmniQ`` with the same parameters (names,
kinds, defaults), and the other way round, except the members listed below with the reason.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from omniq_nb import AsyncOmniQ, GroupHandle, OmniQ, TaskCancelled, TaskHandle
from omniq_nb.bridge import SameLoopBridge, ThreadBridge

# Public members of AsyncOmniQ without a twin on OmniQ, and why.
ASYNC_ONLY = {
    "open": "OmniQ opens its store in __init__, through its bridge",
    "loop": "property: the loop the async core runs on (q.core.loop from a twin)",
    "bridge": "property: how code off the loop runs the core's coroutines (q.core.bridge from a twin)",
    "on_local_write": "in-process hook for pools on the core's own loop (not thread-safe)",
    "publish": "idem: called by writers on the core's loop",
    "follow_closely": "idem: handles call it when a live view observes them",
    "serializer": "attribute of the core: q.core.serializer",
    "storage": "attribute of the core: q.core.storage",
}
# Public members of OmniQ without a namesake on AsyncOmniQ, and why.
SYNC_ONLY = {
    "attached": "wraps an open AsyncOmniQ and the blocking bridge it was built with (the notebook's queue)",
    "core": "property: the AsyncOmniQ the twin drives",
}
# Methods that are plain (not coroutine) functions on both classes.
SYNC_ON_BOTH = {"from_env", "on_event"}
# Twin methods that are more than one call through the bridge: they build, close or subscribe.
NOT_ONE_CALL = {"from_env", "close", "on_event"}


def _public(cls: type) -> set[str]:
    names = {name for name in dir(cls) if not name.startswith("_")}
    if cls is AsyncOmniQ:  # instance attributes set in __init__
        names |= {"settings", "storage", "serializer"}
    return names


def _methods(cls: type) -> dict[str, Callable[..., Any]]:
    return {
        name: getattr(cls, name)
        for name in _public(cls)
        if hasattr(cls, name)
        and not isinstance(inspect.getattr_static(cls, name), property)
        and callable(getattr(cls, name))
    }


def _parameters(fn: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """Return each parameter's name, kind and default (annotations aside), ``self`` / ``cls`` left out."""
    parameters = list(inspect.signature(fn).parameters.values())
    if parameters and parameters[0].name in ("self", "cls"):
        parameters = parameters[1:]
    return [(p.name, p.kind, p.default) for p in parameters]


def test_every_async_member_has_a_twin_and_every_twin_an_async_member() -> None:
    async_names, sync_names = _public(AsyncOmniQ), _public(OmniQ)
    untwinned = async_names - set(ASYNC_ONLY) - sync_names
    assert not untwinned, f"OmniQ lacks {sorted(untwinned)} (or list them in ASYNC_ONLY with the reason)"
    unmatched = sync_names - set(SYNC_ONLY) - async_names
    assert not unmatched, f"AsyncOmniQ lacks {sorted(unmatched)} (or list them in SYNC_ONLY with the reason)"
    assert not set(ASYNC_ONLY) & sync_names, "a member listed as async-only has a twin: drop it from ASYNC_ONLY"
    assert not set(SYNC_ONLY) & async_names, "a member listed as sync-only is on AsyncOmniQ: drop it from SYNC_ONLY"


@pytest.mark.parametrize("name", sorted(set(_methods(AsyncOmniQ)) - set(ASYNC_ONLY)))
def test_twin_takes_the_same_parameters(name: str) -> None:
    async_method, sync_method = getattr(AsyncOmniQ, name), getattr(OmniQ, name)
    assert _parameters(sync_method) == _parameters(async_method)
    assert inspect.iscoroutinefunction(async_method) == (name not in SYNC_ON_BOTH)
    assert not inspect.iscoroutinefunction(sync_method)
    assert inspect.getdoc(sync_method), f"OmniQ.{name} has no docstring"


def test_constructors_take_the_same_keywords_but_the_bridge() -> None:
    async_parameters = [p for p in _parameters(AsyncOmniQ.__init__) if p[0] != "bridge"]
    assert _parameters(OmniQ.__init__) == async_parameters
    assert [p.name for p in inspect.signature(AsyncOmniQ.__init__).parameters.values()][-1] == "overrides"


def test_context_managers_are_twins() -> None:
    assert _parameters(OmniQ.__enter__) == _parameters(AsyncOmniQ.__aenter__)
    assert _parameters(OmniQ.__exit__) == _parameters(AsyncOmniQ.__aexit__)


@pytest.mark.parametrize("name", sorted(set(_methods(OmniQ)) - set(SYNC_ONLY) - NOT_ONE_CALL))
def test_twin_method_is_one_call_through_the_bridge(name: str) -> None:
    source = textwrap.dedent(inspect.getsource(getattr(OmniQ, name)))
    [function] = ast.parse(source).body
    assert isinstance(function, ast.FunctionDef)
    body = function.body[1:]  # the docstring first
    assert len(body) == 1 and isinstance(body[0], ast.Return), f"OmniQ.{name} holds logic of its own"
    call = body[0].value
    assert isinstance(call, ast.Call)
    assert ast.unparse(call.func) == "self._bridge.call"
    assert ast.unparse(call.args[0]) == f"self._core.{name}"
    assert (inspect.getdoc(getattr(OmniQ, name)) or "").startswith(f"Blocking version of ``AsyncOmniQ.{name}``")


def test_each_facade_has_its_bridge() -> None:
    assert isinstance(AsyncOmniQ(db_url="memory://").bridge, SameLoopBridge)
    with OmniQ(db_url="memory://") as q:
        assert isinstance(q.core.bridge, ThreadBridge)


def slow(x: int) -> int:
    return x


@pytest.mark.anyio
async def test_async_handles_hand_back_awaitables() -> None:
    async with AsyncOmniQ(db_url="memory://") as q:
        h = await q.enqueue(slow, 1)
        group = await q.enqueue_many(slow, [(1,), (2,)])
        outcomes = await _handle_outcomes(h, group, settle=_awaited)
    assert outcomes == _EXPECTED


def test_sync_handles_block_and_return_the_same() -> None:
    with OmniQ(db_url="memory://") as q:
        h = q.enqueue(slow, 1)
        group = q.enqueue_many(slow, [(1,), (2,)])
        outcomes = _handle_outcomes_sync(h, group)
    assert outcomes == _EXPECTED


@pytest.mark.anyio
async def test_awaiting_a_sync_handle_works_too() -> None:
    with OmniQ(db_url="memory://") as q:
        h = q.enqueue(slow, 1)
        assert h.cancel() is True
        with pytest.raises(TaskCancelled):
            await h  # awaited from another loop than the twin's: runs on the queue's loop
        group = q.enqueue_many(slow, [(1,)])
        group[0].cancel()
        with pytest.raises(TaskCancelled):
            await group


_EXPECTED = [True, "pending", ["TaskCancelled", "TaskCancelled"], "TaskCancelled"]


async def _awaited(value: Any) -> Any:
    assert inspect.isawaitable(value), f"{value!r}: an AsyncOmniQ handle's call hands back an awaitable"
    return await value


async def _handle_outcomes(h: TaskHandle, group: GroupHandle, settle: Callable[[Any], Any]) -> list[Any]:
    cancelled = await settle(h.cancel())
    again = await settle(h.retry())
    for member in group:
        await settle(member.cancel())
    failures = await settle(group.result(timeout=5, return_exceptions=True))
    try:
        await settle(group[0].result(timeout=5))
    except TaskCancelled as exc:
        single = type(exc).__name__
    return [cancelled, again.status.value, [type(f).__name__ for f in failures], single]


def _handle_outcomes_sync(h: TaskHandle, group: GroupHandle) -> list[Any]:
    cancelled = h.cancel()
    again = h.retry()
    assert isinstance(again, TaskHandle)
    for member in group:
        assert member.cancel() is True
    failures = group.result(timeout=5, return_exceptions=True)
    try:
        group[0].result(timeout=5)
    except TaskCancelled as exc:
        single = type(exc).__name__
    return [cancelled, again.status.value, [type(f).__name__ for f in failures], single]
