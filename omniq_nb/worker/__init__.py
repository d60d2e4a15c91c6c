"""Worker pools: claim ready tasks, run them on the loop, threads or child processes, store outcomes.

- ``pool``: ``AsyncWorkerPool`` (claim loop, stop and hand-back); ``sync``: ``WorkerPool``.
- ``runs``: the runs going on and their slots; ``outcomes``: batched outcome and progress writes.
- ``executors``: ``run(call, context, slot) -> Outcome`` on the loop, threads or processes
  (``child``: the child processes; ``threads``: the threads); ``calls``: what they take and give.
- ``lease``: the lease keeper thread and registry heartbeat; ``maintenance``: rescue, expiry,
  purge, checkpoint; ``signals``: ``serve_until_signal``; ``host``: ``PoolHost``, what a pool
  needs of its queue.
"""

from omniq_nb.worker.host import PoolHost
from omniq_nb.worker.maintenance import Maintenance
from omniq_nb.worker.pool import AsyncWorkerPool
from omniq_nb.worker.signals import serve_until_signal
from omniq_nb.worker.sync import WorkerPool

__all__ = ["AsyncWorkerPool", "Maintenance", "PoolHost", "WorkerPool", "serve_until_signal"]
