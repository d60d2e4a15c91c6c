"""Every module of ``omniq_nb`` can be read in one sitting: a few hundred lines, small classes.

A module that outgrows ``MAX_LINES`` or a class body with more than ``MAX_METHODS`` methods
is a sign that it does two jobs: split it by job (docs/architecture.md names them).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import omniq_nb

PACKAGE = Path(omniq_nb.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 400
MAX_METHODS = 20


def _name(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_module_is_short(path: Path) -> None:
    """No module is longer than ``MAX_LINES`` lines."""
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{_name(path)} has {lines} lines (at most {MAX_LINES}): split it by job"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_classes_are_small(path: Path) -> None:
    """No class body defines more than ``MAX_METHODS`` methods."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    large = {
        node.name: count
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and (count := sum(isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) for item in node.body)) > MAX_METHODS
    }
    assert not large, f"{_name(path)}: classes with more than {MAX_METHODS} methods: {large}"
