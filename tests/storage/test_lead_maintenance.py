"""The maintenance election (``lead_maintenance``): at most one runner per store holds the turn.

A store shared by many machines (``multi_host``: PostgreSQL) elects one runner at a time: the
holder keeps the turn by calling again, another caller gets it only once the holder's term
has run out. A store of one machine or one process (memory, SQLite) lets every caller lead:
its pools are few and their scans cheap, and every rescue is fenced on its lease anyway; the
tests check that instead, so a backend cannot silently change its answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from omniq_nb.storage import Storage

pytestmark = pytest.mark.anyio

Eventually = Callable[..., Awaitable[Any]]


async def test_the_first_caller_leads_and_keeps_the_turn_by_calling_again(store: Storage) -> None:
    assert await store.lead_maintenance("a", term=30)
    assert await store.lead_maintenance("a", term=30)
    assert await store.lead_maintenance("a", term=30)


async def test_a_second_runner_leads_only_on_a_store_of_one_machine(store: Storage) -> None:
    assert await store.lead_maintenance("a", term=30)
    second = await store.lead_maintenance("b", term=30)
    assert second is (not store.multi_host), f"{store.url}: runner b {'led' if second else 'did not lead'}"
    assert await store.lead_maintenance("a", term=30)  # the holder keeps its turn either way


async def test_the_turn_passes_once_the_holders_term_runs_out(store: Storage, eventually: Eventually) -> None:
    assert await store.lead_maintenance("a", term=0.5)  # a then dies: it never calls again

    async def b_leads() -> bool:
        return await store.lead_maintenance("b", term=30)

    await eventually(b_leads, what="runner b to take the turn after a's term", within=15)
    assert await store.lead_maintenance("a", term=30) is (not store.multi_host)  # a came back too late


async def test_many_runners_asking_at_once_elect_one(store: Storage) -> None:
    answers = await asyncio.gather(*(store.lead_maintenance(f"r{n}", term=30) for n in range(8)))
    assert sum(answers) == (1 if store.multi_host else 8), answers
