"""The PostgreSQL peers for bench_backends.py: SAQ and procrastinate on the database at $BENCH_PEERS_URL.

Their workers import this module by name (``saq peers_app.saq_settings``,
``procrastinate --app=peers_app.proc_app worker``), as their documentation shows, with
their default worker settings (SAQ: 10 concurrent jobs; procrastinate: concurrency 1,
LISTEN/NOTIFY on, 5 s polling as a fallback).
"""

import os
import time
from typing import Any

import procrastinate
from saq import Queue

URL = os.environ["BENCH_PEERS_URL"]


async def noop(ctx: dict[str, Any], *, i: int) -> int:
    return i


async def started_at(ctx: dict[str, Any]) -> float:
    return time.monotonic()


def saq_queue() -> Queue:
    return Queue.from_url(URL)


def saq_settings() -> dict[str, Any]:
    return {"queue": saq_queue(), "functions": [noop, started_at]}


proc_app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=URL))


@proc_app.task(name="noop")
async def proc_noop(i: int) -> int:
    return i
