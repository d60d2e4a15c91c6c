"""Jupyter integration: ``%load_ext omniq_nb`` registers the magics and starts the kernel's pool.

Loading twice is harmless. ``OMNIQ_AUTOSTART=0`` opens the kernel's queue without starting
a pool (start one later with ``%omniq workers start``).
"""

from __future__ import annotations

from typing import Any

from omniq_nb.config import Settings


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%omniq`` / ``%%omniq`` and start the in-kernel worker pool (unless disabled).

    Args:
        ipython: the kernel's IPython shell.
    """
    from omniq_nb.notebook.magics import OmniQMagics
    from omniq_nb.notebook.runner import KernelRunner

    if KernelRunner.current is not None:
        return
    settings = Settings.from_env()
    runner = KernelRunner(ipython, settings)
    ipython.register_magics(OmniQMagics(ipython, runner))
    if settings.autostart:
        runner.start_pool()


def unload_ipython_extension(ipython: Any) -> None:
    """Stop the kernel's pool, close its queue and undo the output routing.

    Args:
        ipython: the kernel's IPython shell.
    """
    from omniq_nb.notebook.runner import KernelRunner

    runner = KernelRunner.current
    if runner is not None:
        runner.close()


def dashboard() -> Any:
    """Return a live dashboard of the kernel's queue (display it, or leave it as a cell's last value).

    Raises:
        RuntimeError: the extension is not loaded in this kernel.
    """
    from omniq_nb.notebook.runner import KernelRunner

    runner = KernelRunner.current
    if runner is None:
        raise RuntimeError("the omniq_nb extension is not loaded here: run %load_ext omniq_nb first")
    return runner.dashboard()
