"""A test's store as one string: a store URL, or a queue URL with ``result_url=`` / ``events_url=`` beside it.

``"sqlite:///q.db result_url=sqlite:///r.db events_url=memory://"`` opens the queue in
``q.db`` with results and events in stores of their own (``open_stores``), so the contract
suite runs unchanged on a split store. Plain URLs open as ``open_storage`` opens them.
"""

from __future__ import annotations

import msgspec

from omniq_nb.config import Settings
from omniq_nb.storage import Storage, open_stores

SPLIT_SPEC = "sqlite:///{tmp}/queue.db result_url=sqlite:///{tmp}/results.db events_url=sqlite:///{tmp}/events.db"
"""A queue in one SQLite file with its results and its events in two others (format ``tmp``)."""


def open_spec(spec: str, settings: Settings | None = None) -> Storage:
    """Return the (unopened) store that ``spec`` names, with ``settings`` for what it leaves out."""
    db_url, *parts = spec.split(" ")
    urls = dict(part.split("=", 1) for part in parts)
    return open_stores(msgspec.structs.replace(settings or Settings(), db_url=db_url, **urls))
