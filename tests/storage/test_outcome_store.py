"""The ``OutcomeStore`` role on every backend that keeps a queue's results or events for it.

Results are kept under (task id, lease token) for their ``result_ttl``; appended events get
increasing seqs that a cursor reads in order, and go with their task's purge time.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from nats_server import NATS_URL, nats_prefix
from postgres_server import POSTGRES_URL, postgres_schema
from redis_server import REDIS_URL, redis_prefix

from omniq_nb.models import EventKind, TaskEvent, TaskResult, TaskStatus
from omniq_nb.storage import open_outcome_store
from omniq_nb.storage.base import OutcomeStore
from omniq_nb.storage.lifecycle import KEPT_RESULT_MARGIN

pytestmark = pytest.mark.anyio

_UTC = timezone.utc
_PAST = datetime(2020, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("nats", marks=pytest.mark.nats),
        "fsspec-memory",
        "fsspec-file",
    ],
)
def outcome_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every kind of store a queue's results and events can live in (fsspec ones read events at once: lag=0)."""
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'outcomes.db'}"
    elif request.param == "redis":
        with redis_prefix() as prefix:
            yield f"{REDIS_URL}?prefix={prefix}"
    elif request.param == "nats":
        with nats_prefix() as prefix:
            yield f"{NATS_URL}?prefix={prefix}"
    elif request.param == "fsspec-memory":
        yield f"fsspec+memory://omniq-test-{uuid.uuid4().hex}?lag=0"
    elif request.param == "fsspec-file":
        yield f"file://{tmp_path / 'outcomes'}?lag=0"
    else:
        with postgres_schema() as schema:
            yield f"{POSTGRES_URL}?schema={schema}"


@pytest.fixture
async def outcomes(outcome_url: str) -> AsyncIterator[OutcomeStore]:
    store = open_outcome_store(outcome_url)
    assert isinstance(store, OutcomeStore)
    async with store:
        yield store


def _result(task_id: str, token: str, blob: bytes, ttl: float | None = None) -> TaskResult:
    return TaskResult(task_id=task_id, lease_token=token, status=TaskStatus.SUCCEEDED, result=blob, result_ttl=ttl)


def _event(task_id: str, kind: EventKind, status: TaskStatus, **fields: Any) -> TaskEvent:
    return TaskEvent(seq=0, task_id=task_id, kind=kind, at=datetime.now(_UTC), status=status, **fields)


async def test_a_result_is_read_back_only_under_its_own_token(outcomes: OutcomeStore) -> None:
    await outcomes.keep_results([_result("t1", "mine", b"right"), _result("t1", "stale", b"wrong")])

    assert await outcomes.kept_results([("t1", "mine")]) == {("t1", "mine"): b"right"}
    assert await outcomes.kept_results([("t1", "other"), ("t2", "mine")]) == {}


async def test_writing_a_key_again_replaces_it_and_many_keys_are_read_at_once(outcomes: OutcomeStore) -> None:
    await outcomes.keep_results([_result("t", "k", b"first")])
    await outcomes.keep_results([_result("t", "k", b"second")])
    many = [_result(f"task{n}", f"token{n}", f"value{n}".encode()) for n in range(1_000)]
    await outcomes.keep_results(many)

    found = await outcomes.kept_results([("t", "k"), *((r.task_id, r.lease_token) for r in many)])

    assert found.pop(("t", "k")) == b"second"
    assert found == {(r.task_id, r.lease_token): r.result for r in many}


async def test_appended_events_get_increasing_seqs_that_a_cursor_follows(outcomes: OutcomeStore) -> None:
    start = await outcomes.last_event_seq()
    await outcomes.append_events(
        [
            _event("a", EventKind.ENQUEUED, TaskStatus.PENDING),
            _event("a", EventKind.STARTED, TaskStatus.RUNNING, attempt=1, run_id="r1"),
            _event("a", EventKind.PROGRESS, TaskStatus.RUNNING, attempt=1, progress=0.5, message="half", run_id="r1"),
        ]
    )
    await outcomes.append_events([_event("b", EventKind.ENQUEUED, TaskStatus.PENDING)])

    every = await outcomes.events(since=start)
    assert [(e.task_id, e.kind) for e in every] == [
        ("a", EventKind.ENQUEUED),
        ("a", EventKind.STARTED),
        ("a", EventKind.PROGRESS),
        ("b", EventKind.ENQUEUED),
    ]
    assert [e.seq for e in every] == sorted({e.seq for e in every})
    assert (every[2].progress, every[2].message, every[2].run_id, every[2].attempt) == (0.5, "half", "r1", 1)
    assert await outcomes.last_event_seq() == every[-1].seq
    assert [e.kind for e in await outcomes.events(since=every[1].seq)] == [EventKind.PROGRESS, EventKind.ENQUEUED]
    assert [e.task_id for e in await outcomes.events(task_id="b")] == ["b"]


async def test_results_and_events_go_when_their_time_comes(outcomes: OutcomeStore) -> None:
    past = datetime.now(_UTC) - timedelta(seconds=1)
    due_now = -KEPT_RESULT_MARGIN  # a result outlives its result_ttl by the margin: this one is due now
    await outcomes.keep_results([_result("due", "k", b"x", ttl=due_now), _result("kept", "k", b"y", ttl=0.0)])
    await outcomes.keep_results([_result("forever", "k", b"z")])
    finished = _event("due", EventKind.SUCCEEDED, TaskStatus.SUCCEEDED)
    await outcomes.append_events(
        [_event("due", EventKind.ENQUEUED, TaskStatus.PENDING), finished], purge_at={"due": past}
    )
    requeued = _event("again", EventKind.FAILED, TaskStatus.FAILED)
    await outcomes.append_events([requeued], purge_at={"again": past})
    await outcomes.append_events([_event("again", EventKind.RETRIED, TaskStatus.PENDING)])  # it lives on

    assert await outcomes.forget_outcomes() == 1

    keys = [("due", "k"), ("kept", "k"), ("forever", "k")]
    assert set(await outcomes.kept_results(keys)) == {("kept", "k"), ("forever", "k")}
    assert await outcomes.events(task_id="due") == []
    assert [e.kind for e in await outcomes.events(task_id="again")] == [EventKind.FAILED, EventKind.RETRIED]


async def test_nothing_goes_before_its_time_and_everything_empties_it(outcomes: OutcomeStore) -> None:
    await outcomes.append_events([_event("old", EventKind.ENQUEUED, TaskStatus.PENDING)])
    await outcomes.keep_results([_result("t", "k", b"x")])
    newest = await outcomes.last_event_seq()

    assert await outcomes.forget_outcomes() == 0  # nothing is due: no time on the result, no purge mark
    assert [e.task_id for e in await outcomes.events()] == ["old"]

    assert await outcomes.forget_outcomes(everything=True) == 1
    assert await outcomes.kept_results([("t", "k")]) == {}
    await outcomes.append_events([_event("new", EventKind.ENQUEUED, TaskStatus.PENDING)])
    [again] = await outcomes.events()
    assert again.seq > newest  # a cursor that saw the old events still sees the new one


async def test_ids_with_any_character_are_kept_and_forgotten(outcomes: OutcomeStore) -> None:
    odd = "a~b/c d%~"
    await outcomes.keep_results([_result(odd, "t~k", b"v", ttl=-KEPT_RESULT_MARGIN)])
    await outcomes.append_events([_event(odd, EventKind.SUCCEEDED, TaskStatus.SUCCEEDED)], purge_at={odd: _PAST})
    assert [e.task_id for e in await outcomes.events(task_id=odd)] == [odd]

    assert await outcomes.forget_outcomes() == 1
    assert await outcomes.kept_results([(odd, "t~k")]) == {}
    assert await outcomes.events(task_id=odd) == []
