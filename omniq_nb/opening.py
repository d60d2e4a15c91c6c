"""``async with`` for every object that is opened and closed: stores and queues.

Example:
    >>> import asyncio
    >>> class Door(OpensAndCloses):
    ...     async def open(self) -> None:
    ...         print("open")
    ...     async def close(self) -> None:
    ...         print("closed")
    >>> async def visit() -> None:
    ...     async with Door():
    ...         print("inside")
    >>> asyncio.run(visit())
    open
    inside
    closed

"""

from __future__ import annotations

from types import TracebackType
from typing import Self


class OpensAndCloses:
    """Base of objects with ``async open()`` and ``async close()``: ``async with`` calls both."""

    async def open(self) -> None:
        """Acquire what the object needs (connections, files)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what ``open`` acquired."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        """Open, and return the object itself."""
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close, whatever happened inside the block."""
        await self.close()
