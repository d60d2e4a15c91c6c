"""Shared by the kernel fixtures of ``tests/notebook`` and ``tests/widgets``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Closable(Protocol):
    def close(self) -> None: ...


def close_all(kernels: Sequence[Closable]) -> None:
    """Shut every kernel down, newest first, then raise the first error any of them raised."""
    errors = []
    for kernel in reversed(kernels):
        try:
            kernel.close()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
