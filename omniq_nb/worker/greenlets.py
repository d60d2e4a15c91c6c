"""gevent workers: sync calls run as greenlets on a gevent hub of their own, in one native thread.

How gevent and the pool's asyncio loop share one process. The pool (claim loop, outcome
writer, maintenance) runs on an asyncio loop; the stores use aiosqlite (a native thread per
connection, fed through a blocking ``queue.SimpleQueue``) and psycopg (libpq's socket watched
by the asyncio loop); the lease keeper is a native thread with a loop of its own. A full
``patch_all()`` would turn those threads into greenlets of the main thread's hub: aiosqlite's
blocking sqlite calls and queue waits would then block the hub, and the asyncio loop, which
never yields to the hub, would starve them. So:

- ``omniq_nb/launch.py`` patches with ``patch_all(thread=False, queue=False)`` at the very
  start of ``omniq-nb worker --kind gevent``: sockets, ``time.sleep``, ``select``, DNS, ``ssl``
  and ``subprocess`` cooperate; threads, locks and ``queue.SimpleQueue`` stay native, and
  every asyncio loop gets back the unpatched selector (``epoll``), so asyncio never waits
  inside a gevent hub.
- Greenlets run on a hub in a native thread of their own (``GreenletHub``), not on the main
  thread beside asyncio: one busy loop cannot stall the other (bar the GIL), and neither
  depends on the other yielding. Calls reach the hub through ``run_callback_threadsafe``;
  outcomes go back through ``loop.call_soon_threadsafe``.

What was tried, with a real ``omniq-nb worker --kind gevent`` and 200 tasks of 0.2 s each, on
SQLite and on PostgreSQL: a full ``patch_all()`` runs the tasks, but the lease keeper "thread"
becomes a greenlet of the main thread, sees the pool's running loop and dies (``asyncio.run()
cannot be called from a running event loop``): no lease is ever renewed. ``patch_all(thread=False)``
alone patches ``queue.SimpleQueue``: on SQLite aiosqlite's native connection thread waits on a
gevent queue and dies with ``LoopExit`` (the worker never starts); on PostgreSQL the loop's
executor threads do the same. ``patch_all(thread=False, queue=False)``, unpatched asyncio
selectors and this hub thread: all 200 tasks overlap (0.25 s on SQLite, 0.3 s on PostgreSQL),
and the tests in ``tests/worker/test_gevent_worker.py`` pass on both stores.

The same time-out, cancel and progress rules as the thread
kind, but a greenlet can be stopped: on a time-out ``gevent.Timeout`` fires inside it at its
next wait; on a cancel or a lost lease it is killed (``GreenletExit``) at its next wait. Until
it has ended, it keeps its slot (as a thread does). A greenlet that computes without waiting
blocks every other greenlet: this kind is for I/O-bound tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import threading
from collections.abc import Callable
from typing import Any

from omniq_nb.context import TaskContext, enter, leave
from omniq_nb.errors import ConfigError
from omniq_nb.launch import gevent_patched
from omniq_nb.serialization import BlobSerializer
from omniq_nb.worker.calls import RESULT_LABEL, Call, Outcome, Slot, failed, timed_out

logger = logging.getLogger(__name__)

GEVENT_COMMAND = "omniq-nb worker --kind gevent"
"""The command that runs gevent tasks."""
_TIMEOUT_GRACE = 1.0  # seconds past a time-out before the loop stops waiting for a greenlet that never waits
_CLOSE_WAIT = 10.0  # seconds the hub's thread lets its last greenlets (killed or not) end


def check_gevent_allowed() -> None:
    """Raise unless this process was patched by gevent at start (``omniq-nb worker --kind gevent``).

    Raises:
        ConfigError: it was not (a notebook kernel, a script, a test process), or gevent is
            not installed.
    """
    if gevent_patched():
        return
    if importlib.util.find_spec("gevent") is None:
        raise ConfigError(
            "kind='gevent' needs gevent; install the extra with pip install 'omniq-nb[gevent]' "
            f"and run the tasks with {GEVENT_COMMAND}"
        )
    raise ConfigError(
        "kind='gevent' runs only in a worker process patched by gevent at its start, never in a notebook "
        f"kernel or a process that imported asyncio code first; run {GEVENT_COMMAND} (for example in a "
        "terminal) instead, with --kind gevent on its command line or OMNIQ_DEFAULT_WORKER=gevent in its "
        "environment (a kind read from omniq.yaml comes too late to patch). Tasks submitted with "
        "kind='gevent' wait in the queue for that worker."
    )


class GreenletHub:
    """A native thread running a gevent hub, where calls run as greenlets.

    Args:
        loop: the asyncio loop whose futures the calls resolve.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready = threading.Event()
        self._hub: Any = None
        self._greenlets: set[Any] = set()  # touched only in the hub's thread
        self._done: Any = None  # a gevent Event of the hub's thread: set to let the thread end
        self._thread = threading.Thread(target=self._main, name="omniq-gevent-hub", daemon=True)
        self._thread.start()
        self._ready.wait()

    def submit(self, call: Callable[[], Outcome], on_return: Callable[[], None]) -> tuple[asyncio.Future[Outcome], Any]:
        """Start ``call`` as a greenlet (call on the loop); return its future and a handle to kill it.

        Args:
            call: what the greenlet runs; it returns an outcome and never raises.
            on_return: called on the loop once the greenlet has ended, killed or not.
        """
        future: asyncio.Future[Outcome] = self._loop.create_future()
        started: list[Any] = []

        def spawn() -> None:
            import gevent

            greenlet = gevent.spawn(self._serve, call, future, on_return)
            self._greenlets.add(greenlet)
            greenlet.link(self._greenlets.discard)
            started.append(greenlet)

        self._hub.loop.run_callback_threadsafe(spawn)
        return future, started

    def kill(self, started: list[Any]) -> None:
        """Kill the greenlet of a ``submit`` (raises ``GreenletExit`` in it at its next wait), from any thread."""

        def kill() -> None:
            for greenlet in started:
                greenlet.kill(block=False)

        self._hub.loop.run_callback_threadsafe(kill)

    def close(self) -> None:
        """Let the hub's thread end once its greenlets have (they are not waited for)."""
        self._hub.loop.run_callback_threadsafe(self._done.set)

    def _main(self) -> None:
        import gevent
        import gevent.event

        self._hub = gevent.get_hub()
        self._done = gevent.event.Event()
        alive = self._hub.loop.async_()  # without a watcher the idle hub would "block forever" (LoopExit)
        alive.start(_nothing)
        self._ready.set()
        self._done.wait()
        alive.stop()
        gevent.joinall(list(self._greenlets), timeout=_CLOSE_WAIT)

    def _serve(
        self, call: Callable[[], Outcome], future: asyncio.Future[Outcome], on_return: Callable[[], None]
    ) -> None:
        outcome = call()
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            self._loop.call_soon_threadsafe(_hand_back, future, outcome, on_return)


def _nothing() -> None:
    """Do nothing (the keep-alive watcher's callback)."""


def _hand_back(future: asyncio.Future[Outcome], outcome: Outcome, on_return: Callable[[], None]) -> None:
    if not future.done():
        future.set_result(outcome)
    on_return()


class GeventExecutor:
    """Run sync functions as greenlets (``kind="gevent"``), in a process patched at start.

    Args:
        serializer: verifies and loads payloads, serializes results.
        hub: the hub to run greenlets on.
    """

    def __init__(self, serializer: BlobSerializer, hub: GreenletHub) -> None:
        self._serializer = serializer
        self._hub = hub

    async def run(self, call: Call, context: TaskContext, slot: Slot) -> Outcome:
        """Run ``call`` as a greenlet (see ``Executor.run``); a timed-out or cancelled greenlet is killed."""
        try:
            fn, args, kwargs = self._serializer.load_call(call.payload, call.inputs, call.stored)
        except Exception as exc:
            return failed(exc, call.attempt)

        def work() -> Outcome:
            import gevent

            token = enter(context)
            timer = gevent.Timeout(call.timeout)  # a BaseException: a task's "except Exception" lets it through
            try:
                with timer:
                    value = fn(*args, **kwargs)
                return Outcome(result=self._serializer.dumps(value, label=RESULT_LABEL))
            except gevent.Timeout as exc:
                if exc is not timer:  # a gevent.Timeout of the task's own
                    return failed(exc, call.attempt)
                context.cancel()
                return timed_out(call)
            except gevent.GreenletExit:
                return timed_out(call)  # killed: the run was abandoned, nobody reads this
            except BaseException as exc:  # SystemExit too: a greenlet has no process to end
                return failed(exc, call.attempt)
            finally:
                leave(token)

        running, greenlet = self._hub.submit(work, slot.keep())
        try:
            if call.timeout is None:
                return await running
            done, _ = await asyncio.wait({running}, timeout=call.timeout + _TIMEOUT_GRACE)
            if not done:  # the greenlet never waited (it computes): fail it as the thread kind does
                context.cancel()
                self._hub.kill(greenlet)
                return timed_out(call)
            return running.result()
        except asyncio.CancelledError:
            context.cancel()
            self._hub.kill(greenlet)
            raise

    def close(self) -> None:
        """Let the hub's thread end once its greenlets have (call on the loop)."""
        self._hub.close()
