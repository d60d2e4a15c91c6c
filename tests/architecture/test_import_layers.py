"""The package's imports run one way: from the notebook and the CLI down to models and errors.

Every ``import`` in ``omniq_nb`` (at module level or inside a function) is read with ``ast``
and checked against the layer table of docs/architecture.md: a module may import its own
layer and the layers below it, never one above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import omniq_nb

PACKAGE = Path(omniq_nb.__file__).parent

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("models", ("errors", "models", "opening", "urls", "tracebacks")),
    (
        "config, formats and rules",
        (
            "config",
            "serialization",
            "blob_format",
            "unpicklable",
            "pickling",
            "schedule",
            "policy",
            "options",
            "context",
            "terminal",
            "launch",
            "estimates",
            "inputs",
            "cache_keys",
            "jobs",
        ),
    ),
    ("storage", ("storage",)),
    (
        "queue",
        (
            "bridge",
            "events",
            "following",
            "waiters",
            "handles",
            "building",
            "results",
            "history",
            "graph",
            "caching",
            "admin",
            "async_queue",
            "sync_queue",
            "core",
            "task",
        ),
    ),
    ("workers", ("worker",)),
    ("notebook", ("notebook",)),
    ("entry points", ("cli", "__main__", "__init__")),
]


def layer_of(module: str) -> int:
    """Return the index in ``LAYERS`` of ``omniq_nb.<module>``."""
    head = module.split(".")[0] or "__init__"
    for index, (_, names) in enumerate(LAYERS):
        if head in names:
            return index
    raise AssertionError(f"omniq_nb.{module} is in no layer of LAYERS: add it where it belongs")


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Return ``(line, module)`` for every import of an ``omniq_nb`` module in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "omniq_nb":  # a submodule by name, or a name the package's __init__ exports
                found += [(node.lineno, _submodule_or_init(alias.name)) for alias in node.names]
            elif node.module.startswith("omniq_nb."):
                found.append((node.lineno, node.module.removeprefix("omniq_nb.")))
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name.removeprefix("omniq_nb.")) for a in node.names if a.name.startswith("omniq_nb.")
            ]
    return found


def _submodule_or_init(name: str) -> str:
    is_module = (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()
    return name if is_module else "__init__"


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_go_down(path: Path) -> None:
    """A module imports from its own layer or a lower one."""
    here = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    own = layer_of(here)
    upward = [
        f"line {line}: {name} ({LAYERS[layer_of(name)][0]})" for line, name in imports_of(path) if layer_of(name) > own
    ]
    assert not upward, f"omniq_nb.{here} ({LAYERS[own][0]}) imports upward: " + "; ".join(upward)


def test_an_upward_import_is_seen(tmp_path: Path) -> None:
    """The walk finds imports at module level and inside functions, in every spelling."""
    module = tmp_path / "module.py"
    module.write_text(
        "from omniq_nb.models import Task\n"
        "import omniq_nb.worker.pool\n"
        "def f():\n"
        "    from omniq_nb import cli, AsyncOmniQ\n"
        "from . import relative\n"
    )
    assert imports_of(module) == [(1, "models"), (2, "worker.pool"), (4, "cli"), (4, "__init__")]
    assert layer_of("models") < layer_of("storage.sqlite") < layer_of("async_queue") < layer_of("worker.pool")
    assert layer_of("worker.pool") < layer_of("notebook.magics") < layer_of("cli") == layer_of("__init__")
    with pytest.raises(AssertionError, match="no layer"):
        layer_of("unheard_of")
