"""omniq_nb: a task runner for Jupyter and an async-first task queue.

Import the names below from here (``import omniq_nb as omniq``). Importing this package
imports neither ipywidgets nor any database driver.
"""

# First of all: ``omniq-nb worker --kind gevent`` patches the process before anything else is imported.
from omniq_nb import launch as _launch
from omniq_nb.config import Settings
from omniq_nb.context import TaskContext, current, progress, track
from omniq_nb.core import AsyncOmniQ, OmniQ
from omniq_nb.errors import (
    CacheWarning,
    CallableMissing,
    ConfigError,
    DependencyFailed,
    InvalidTransition,
    NotSupported,
    OmniQError,
    PayloadRejected,
    RecordTooLarge,
    SerializationError,
    SignatureError,
    StorageError,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskNotFound,
    TaskTimeout,
    WorkerLost,
)
from omniq_nb.estimates import TaskStats
from omniq_nb.handles import GroupHandle, TaskHandle, gather
from omniq_nb.models import (
    EventKind,
    Schedule,
    StoreHealth,
    Task,
    TaskError,
    TaskEvent,
    TaskResult,
    TaskStatus,
    WorkerInfo,
)
from omniq_nb.options import DEFAULT
from omniq_nb.serialization import BlobSerializer, Serializer
from omniq_nb.storage import Storage, open_storage
from omniq_nb.task import TaskFunction, cache_clear, default_queue, get, stats, task
from omniq_nb.worker import AsyncWorkerPool, WorkerPool

__version__ = "0.1.0"


def load_ipython_extension(ipython: object) -> None:
    """Load the notebook extension (``%load_ext omniq_nb``); see ``omniq_nb.notebook``."""
    from omniq_nb.notebook import load_ipython_extension as load

    load(ipython)


def dashboard() -> object:
    """Return a live dashboard of the notebook's queue (``%omniq dashboard`` does the same)."""
    from omniq_nb.notebook import dashboard as make

    return make()


def unload_ipython_extension(ipython: object) -> None:
    """Unload the notebook extension (``%unload_ext omniq_nb``)."""
    from omniq_nb.notebook import unload_ipython_extension as unload

    unload(ipython)


__all__ = [
    "AsyncOmniQ",
    "AsyncWorkerPool",
    "BlobSerializer",
    "CacheWarning",
    "CallableMissing",
    "ConfigError",
    "DEFAULT",
    "DependencyFailed",
    "EventKind",
    "GroupHandle",
    "InvalidTransition",
    "NotSupported",
    "OmniQ",
    "OmniQError",
    "PayloadRejected",
    "RecordTooLarge",
    "Schedule",
    "SerializationError",
    "Serializer",
    "Settings",
    "SignatureError",
    "Storage",
    "StorageError",
    "StoreHealth",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskError",
    "TaskEvent",
    "TaskExpired",
    "TaskFailed",
    "TaskFunction",
    "TaskHandle",
    "TaskNotFound",
    "TaskResult",
    "TaskStats",
    "TaskStatus",
    "TaskTimeout",
    "WorkerInfo",
    "WorkerLost",
    "WorkerPool",
    "__version__",
    "cache_clear",
    "current",
    "dashboard",
    "default_queue",
    "gather",
    "get",
    "load_ipython_extension",
    "open_storage",
    "progress",
    "stats",
    "task",
    "track",
    "unload_ipython_extension",
]

del _launch
