"""A notebook cell as a task: the code, the names it reads (captured by value), its last value.

Importable without IPython, so a worker process can run cell tasks.
"""

from __future__ import annotations

import ast
import linecache
import re
from collections.abc import Mapping
from typing import Any

# IPython's own history names (_, __, _i, _ii, _3, _i3, _oh, ...) and helpers, never captured
_IPYTHON_NAMES = re.compile(r"^_(_{0,2}|i{1,3}|\d+|i\d+|oh|ih|dh)$")
_IPYTHON_HELPERS = frozenset({"In", "Out", "get_ipython", "exit", "quit"})


def names_read(source: str) -> set[str]:
    """Return every name the cell's code reads (a superset is fine: only existing ones are captured).

    Raises:
        SyntaxError: the code does not parse.
    """
    return {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}


def capture(source: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """Return the values of the names ``source`` reads from ``namespace`` (IPython's own left out)."""
    return {
        name: namespace[name]
        for name in names_read(source)
        if name in namespace and name not in _IPYTHON_HELPERS and not _IPYTHON_NAMES.match(name)
    }


def cell_key(source: str, filename: str, namespace: Mapping[str, Any]) -> tuple[str, list[tuple[str, Any]]]:
    """Return what a cell task's cache key is made of: its code and the values it read, not its file name.

    The file name counts the kernel's executions, so the same cell run again gets a new one;
    the values go by name, in name order (``capture`` follows a set's order, which changes
    with every process's hash seed).
    """
    return source, sorted(namespace.items())


def run_cell(source: str, filename: str, namespace: dict[str, Any]) -> Any:
    """Run a cell's code in ``namespace``; return the value of its last expression, if any.

    The source is registered under ``filename`` so tracebacks show the cell's own lines.

    Args:
        source: the cell's code (plain Python: no magics).
        filename: the name tracebacks give the cell.
        namespace: the captured names; the code's assignments land here too.
    """
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    tree = ast.parse(source, filename)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    assert last is None or isinstance(last, ast.Expr)
    namespace.setdefault("__name__", "__omniq_cell__")
    exec(compile(tree, filename, "exec"), namespace)  # the user's own cell, run as their task
    if last is None:
        return None
    return eval(compile(ast.Expression(last.value), filename, "eval"), namespace)
