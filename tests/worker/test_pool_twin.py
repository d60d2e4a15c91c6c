"""``WorkerPool`` is the blocking twin of ``AsyncWorkerPool``: the same public members, the same parameters."""

from __future__ import annotations

import inspect
from typing import Any

from omniq_nb.worker import AsyncWorkerPool, WorkerPool

_TWIN_DUNDERS = {"__init__": "__init__", "__aenter__": "__enter__", "__aexit__": "__exit__"}


def _public(cls: type) -> dict[str, Any]:
    return {name: member for name, member in vars(cls).items() if not name.startswith("_")}


def _parameters(fn: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in list(inspect.signature(fn).parameters.values())[1:]]


def test_every_public_member_of_the_async_pool_has_a_sync_twin_with_the_same_parameters() -> None:
    async_members, sync_members = _public(AsyncWorkerPool), _public(WorkerPool)
    assert async_members, "nothing compared"
    for name, member in async_members.items():
        assert name in sync_members, f"WorkerPool lacks {name}"
        twin = sync_members[name]
        if isinstance(member, property):
            assert isinstance(twin, property), f"WorkerPool.{name} is not a property"
            continue
        assert not inspect.iscoroutinefunction(twin), f"WorkerPool.{name} must block"
        assert _parameters(member) == _parameters(twin), f"WorkerPool.{name} takes other parameters"


def test_the_sync_pool_adds_no_public_method_of_its_own() -> None:
    extra = {name for name, member in _public(WorkerPool).items() if callable(member) or isinstance(member, property)}
    assert extra <= set(_public(AsyncWorkerPool))


def test_construction_and_context_managers_take_the_same_parameters() -> None:
    for async_name, sync_name in _TWIN_DUNDERS.items():
        async_params = _parameters(getattr(AsyncWorkerPool, async_name))
        sync_params = _parameters(getattr(WorkerPool, sync_name))
        assert [p[1:] for p in async_params] == [p[1:] for p in sync_params]
        assert [p[0] for p in async_params] == [p[0] for p in sync_params]
