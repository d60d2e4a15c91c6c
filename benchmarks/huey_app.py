"""The huey peer for bench_pool.py: a SqliteHuey at $HUEY_DB with the same two tasks."""

import os
import time

from huey import SqliteHuey

huey = SqliteHuey(filename=os.environ["HUEY_DB"])


@huey.task()
def noop() -> int:
    return 1


@huey.task()
def started_at() -> float:
    return time.monotonic()
