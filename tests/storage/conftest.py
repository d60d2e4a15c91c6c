"""Fixtures of the storage contract suite: every test here runs once per backend.

Test modules name no backend: they get a ``store`` (opened, emptied), a ``make_task``
factory, a ``twin`` (a second store object on the same URL, for races across
connections) and ``eventually`` (a bounded poll for lease expiry and etas).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import anyio
import pytest
from nats_server import NATS_URL, nats_prefix
from pgbouncer import pgbouncer
from postgres_server import POSTGRES_URL, postgres_schema
from redis_server import REDIS_URL, redis_prefix
from store_spec import SPLIT_SPEC, open_spec

from omniq_nb.core import new_task_id
from omniq_nb.models import Task
from omniq_nb.storage import Storage

T = TypeVar("T")

BACKENDS = [
    pytest.param("memory://", id="memory"),
    pytest.param("sqlite:///{tmp}/omniq.db", id="sqlite"),  # tmp_path is absolute: four slashes
    pytest.param("file://{tmp}/queue", id="file"),  # tmp_path is absolute: file:///...
    pytest.param(POSTGRES_URL + "?schema={schema}", id="postgres", marks=pytest.mark.postgres),
    # through PgBouncer in transaction mode (a private one, see tests/pgbouncer.py), LISTEN direct
    pytest.param(
        "{pgbouncer}?schema={schema}&pgbouncer=1&listen_url={direct}",
        id="postgres-pgbouncer",
        marks=pytest.mark.postgres,
    ),
    pytest.param(SPLIT_SPEC, id="split"),
    pytest.param(REDIS_URL + "?prefix={prefix}", id="redis", marks=pytest.mark.redis),
    pytest.param(NATS_URL + "?prefix={nats_prefix}", id="nats", marks=pytest.mark.nats),
]

_POLL_SECONDS = 0.02


@pytest.fixture(scope="session")
def pgbouncer_url() -> Iterator[str]:
    """The URL of a private PgBouncer in transaction mode in front of the test server (one per session)."""
    with pgbouncer() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of this run's backend (not redacted, so a second store can open it), or a split spec."""
    url = str(request.param)
    if "{nats_prefix}" in url:
        with nats_prefix() as prefix:
            yield url.format(nats_prefix=prefix)
        return
    if "{prefix}" in url:
        with redis_prefix() as prefix:
            yield url.format(prefix=prefix)
        return
    if "{schema}" not in url:
        yield url.format(tmp=tmp_path)
        return
    bouncer = request.getfixturevalue("pgbouncer_url") if "{pgbouncer}" in url else ""
    with postgres_schema() as schema:
        yield url.format(schema=schema, pgbouncer=bouncer, direct=quote(POSTGRES_URL, safe=""))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Storage]:
    async with open_spec(store_url) as backend:
        await backend.purge(everything=True)  # each test starts from an empty store
        yield backend


@pytest.fixture
async def twin(store: Storage, store_url: str, make_task: Callable[..., Task]) -> AsyncIterator[Storage]:
    """A second, separately connected store object on the same URL as ``store``.

    Skips when two objects on one URL do not share their tasks (an in-process store):
    there is then nothing to race across connections.
    """
    async with open_spec(store_url) as other:
        probe = make_task()
        await store.insert([probe])
        shared = await other.get(probe.id) is not None
        await store.purge(everything=True)
        if not shared:
            pytest.skip(f"two store objects on {store.url} do not share tasks")
        yield other


@pytest.fixture
async def twin_or_store(store: Storage, store_url: str) -> AsyncIterator[Storage]:
    """A second store object on ``store``'s URL where two objects share tasks, else ``store`` itself."""
    async with open_spec(store_url) as other:
        probe = _task()
        await store.insert([probe])
        shared = await other.get(probe.id) is not None
        await store.purge(everything=True)
        yield other if shared else store


def _task(**overrides: Any) -> Task:
    now = datetime.now(timezone.utc)
    fields: dict[str, Any] = {"id": new_task_id(), "name": "tests.job", "payload": b"x", "eta": now, "created_at": now}
    fields.update(overrides)
    return Task(**fields)


@pytest.fixture
def make_task() -> Callable[..., Task]:
    """Return ``make_task(**overrides)``: a pending task, ready now, on queue ``default``."""
    return _task


async def _eventually(probe: Callable[[], Awaitable[T]], *, what: str, within: float = 15.0) -> T:
    """Await ``probe()`` until it returns something truthy and return that; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        outcome = await probe()
        if outcome:
            return outcome
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting after {within} s for {what}; last probe returned {outcome!r}")
        await anyio.sleep(_POLL_SECONDS)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[Any]]:
    """Return the bounded async poll: ``await eventually(probe, what="...")`` returns the probe's value."""
    return _eventually


@pytest.fixture
def lease_lapsed(store: Storage, eventually: Callable[..., Awaitable[Any]]) -> Callable[[str], Awaitable[Task]]:
    """Return ``await lease_lapsed(task_id)``: wait until the store lists that task's lease as expired."""

    async def wait(task_id: str) -> Task:
        async def probe() -> Task | None:
            return next((t for t in await store.expired_leases(limit=1000) if t.id == task_id), None)

        found: Task = await eventually(probe, what=f"the lease of task {task_id} to run out")
        return found

    return wait


@pytest.fixture
def clock_passes(
    store: Storage, eventually: Callable[..., Awaitable[Any]]
) -> Callable[[datetime], Awaitable[datetime]]:
    """Return ``await clock_passes(moment)``: wait until the store's clock is past ``moment``; return its time."""

    async def wait(moment: datetime) -> datetime:
        async def probe() -> datetime | None:
            now = await store.now()
            return now if now > moment else None

        passed: datetime = await eventually(probe, what=f"the store's clock to pass {moment.isoformat()}")
        return passed

    return wait


def later(seconds: float) -> datetime:
    """Return this process's clock plus ``seconds`` (UTC)."""
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


@pytest.fixture
def at() -> Callable[[float], datetime]:
    """Return ``at(seconds)``: now plus ``seconds`` (negative for the past), UTC."""
    return later


@pytest.fixture(
    params=[
        "sqlite",
        "file",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("nats", marks=pytest.mark.nats),
        "split",
    ]
)
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store that several processes share: a SQLite file, a file store's folder, a fresh PostgreSQL
    schema, Redis or NATS prefix, a split spec."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared' / 'omniq.db'}"
        return
    if request.param == "file":
        yield f"file://{tmp_path / 'shared' / 'queue'}"
        return
    if request.param == "split":
        yield SPLIT_SPEC.format(tmp=tmp_path)
        return
    if request.param == "redis":
        with redis_prefix() as prefix:
            yield f"{REDIS_URL}?prefix={prefix}"
        return
    if request.param == "nats":
        with nats_prefix() as prefix:
            yield f"{NATS_URL}?prefix={prefix}"
        return
    with postgres_schema() as schema:
        yield f"{POSTGRES_URL}?schema={schema}"
