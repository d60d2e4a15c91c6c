"""A tour of omniq_nb on the embedded SQLite store (./.omniq/omniq.db): no server needed.

Run: ``python examples/demo.py`` (or ``make demo`` on a fresh machine).
"""

from __future__ import annotations

import time

import omniq_nb as omniq


def slow_square(x: int) -> int:
    """Square ``x`` slowly, reporting progress as it goes."""
    for _ in omniq.track(range(5)):
        time.sleep(0.02)
    return x * x


def flaky() -> str:
    """Fail on the first attempt, succeed on the next one."""
    context = omniq.current()
    assert context is not None
    if context.attempt == 1:
        raise ConnectionError("the network blinked")
    return f"succeeded on attempt {context.attempt}"


def broken() -> None:
    """Always fail, to show how a remote error comes back."""
    raise ValueError("bad input: -1")


def main() -> None:
    """Enqueue tasks, run them with an in-process pool, and show what the store recorded."""
    with omniq.OmniQ(retry_backoff=0.1) as q, omniq.WorkerPool(q, concurrency=4, kind="thread"):
        print(f"store: {q.settings.db_url}")
        h = q.enqueue(slow_square, 7)
        print(f"enqueued {h.id} -> {h.status}")
        print(f"slow_square(7) = {h.result(timeout=30)}  (attempts: {h.attempt}, progress: {h.progress:.0%})")

        group = q.enqueue_many(slow_square, [(i,) for i in range(10)])
        print(f"map over 10 inputs -> {group.result(timeout=60)}")

        retried = q.enqueue_call(flaky, retries=2)
        print(f"flaky -> {retried.result(timeout=30)!r}")

        failing = q.enqueue(broken)
        try:
            failing.result(timeout=30)
        except omniq.TaskFailed as exc:
            print(f"broken -> {exc.error.type}: {exc.error.message}")

        kinds = [event.kind.value for event in q.events(task_id=retried.id)]
        print(f"events of the flaky task: {', '.join(kinds)}")
        print(f"tasks in the store: {len(q.list(limit=1000))}; results survive this process.")


if __name__ == "__main__":
    main()
