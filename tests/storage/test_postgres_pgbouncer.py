"""The PostgreSQL store's URL options for poolers and naming: ``pgbouncer=1``, ``listen_url=``, ``application_name``.

The contract suite runs through a private PgBouncer in transaction mode too (the
``postgres-pgbouncer`` backend of ``conftest.BACKENDS``); these tests cover what it cannot
see: wake-ups through a pooler, polling without a direct URL, the option parsing, secrets
in the listen URL, and the name connections show in ``pg_stat_activity``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote

import psycopg
import pytest
from postgres_server import POSTGRES_URL, postgres_schema

from omniq_nb.config import Settings
from omniq_nb.errors import StorageError
from omniq_nb.models import Task
from omniq_nb.storage import open_storage
from omniq_nb.storage.postgres_url import connect_options, parse_url

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

MakeTask = Callable[..., Task]
DIRECT = quote(POSTGRES_URL, safe="")


@pytest.fixture
def schema() -> Iterator[str]:
    with postgres_schema() as name:
        yield name


def test_the_options_are_read_and_kept_from_the_driver() -> None:
    target = parse_url(f"postgresql://u@pool:6432/db?schema=s&pgbouncer=true&listen_url={DIRECT}&sslmode=prefer")
    assert (target.dsn, target.schema, target.pgbouncer) == ("postgresql://u@pool:6432/db?sslmode=prefer", "s", True)
    assert target.listen_dsn == POSTGRES_URL and target.app_name == "omniq-nb/s"
    direct = parse_url("postgresql://u@db/q?application_name=mine")
    assert (direct.pgbouncer, direct.listen_dsn, direct.app_name) == (False, direct.dsn, None)
    assert direct.dsn == "postgresql://u@db/q?application_name=mine"
    assert parse_url("postgresql://u@pool/q?pgbouncer=1").listen_dsn is None  # no LISTEN through the pooler
    with pytest.raises(StorageError, match="pgbouncer='maybe'"):
        parse_url("postgresql://u@pool/q?pgbouncer=maybe")
    with pytest.raises(StorageError, match="listen_url"):
        parse_url("postgresql://u@pool/q?listen_url=redis%3A%2F%2Fx")


def test_connections_give_up_on_a_silent_network_unless_the_url_says_otherwise() -> None:
    options = connect_options(parse_url("postgresql://u@db/q"), events=True)
    assert options["tcp_user_timeout"] == 10_000 and options["keepalives_idle"] == 10  # seconds, not 15 minutes
    own = connect_options(parse_url("postgresql://u@db/q?tcp_user_timeout=60000&keepalives=0"), events=True)
    assert "tcp_user_timeout" not in own and "keepalives" not in own  # the URL's own values reach libpq


async def test_the_listen_urls_password_never_shows() -> None:
    listen = quote("postgresql://postgres:s3cr3t@127.0.0.1:1/test", safe="")
    store = open_storage(f"postgresql://postgres:hunter2@127.0.0.1:1/test?schema=x&listen_url={listen}")
    assert "s3cr3t" not in store.url and "hunter2" not in store.url
    with pytest.raises(StorageError) as caught:
        await store.open()
    assert "s3cr3t" not in str(caught.value) and "hunter2" not in str(caught.value)
    await store.close()


async def test_through_the_pooler_a_notify_wakes_a_waiter_listening_directly(
    pgbouncer_url: str, schema: str, make_task: MakeTask
) -> None:
    url = f"{pgbouncer_url}?schema={schema}&pgbouncer=1&listen_url={DIRECT}"
    async with open_storage(url) as waiter, open_storage(url) as writer:
        assert waiter.supports_notify
        await waiter.wait_for_tasks(0.01)  # starts listening
        started = time.monotonic()
        await asyncio.gather(waiter.wait_for_tasks(30), _after(0.2, writer.insert([make_task()])))
        assert time.monotonic() - started < 5


async def test_through_the_pooler_without_a_listen_url_idle_workers_poll(pgbouncer_url: str, schema: str) -> None:
    async with open_storage(f"{pgbouncer_url}?schema={schema}&pgbouncer=1") as store:
        assert not store.supports_notify
        started = time.monotonic()
        await store.wait_for_tasks(0.3)
        assert 0.25 < time.monotonic() - started < 5
        assert await store.list() == []


async def test_events_off_through_the_pooler_silences_only_that_store(
    pgbouncer_url: str, schema: str, make_task: MakeTask
) -> None:
    url = f"{pgbouncer_url}?schema={schema}&pgbouncer=1"
    async with open_storage(url, settings=Settings(events=False)) as quiet, open_storage(url) as loud:
        silent, heard = make_task(), make_task()
        for _ in range(3):  # the pooler lends the same server sessions to both
            await quiet.insert([make_task()])
            await loud.insert([make_task()])
        await quiet.insert([silent])
        await loud.insert([heard])
        assert await loud.events(task_id=silent.id) == []
        assert len(await quiet.events(task_id=heard.id)) == 1


async def test_connections_are_named_after_the_schema(schema: str) -> None:
    async with open_storage(f"{POSTGRES_URL}?schema={schema}") as store:
        await store.list()
        with psycopg.connect(POSTGRES_URL) as conn:
            names = conn.execute(
                "SELECT DISTINCT application_name FROM pg_stat_activity WHERE application_name LIKE %s",
                (f"%{schema}",),
            ).fetchall()
    assert names == [(f"omniq-nb/{schema}",)]


async def _after(seconds: float, job: object) -> None:
    await asyncio.sleep(seconds)
    await job  # type: ignore[misc]
