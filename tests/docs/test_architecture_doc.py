"""docs/architecture.md stays true: every file it names exists, and it names every module."""

from __future__ import annotations

import re
from pathlib import Path

import omniq_nb

PACKAGE = Path(omniq_nb.__file__).parent
DOC = PACKAGE.parent / "docs" / "architecture.md"
NAMED = re.compile(r"`?([\w/*]+\.py)")


def _named_files() -> set[str]:
    return set(NAMED.findall(DOC.read_text(encoding="utf-8")))


def _matches(pattern: str) -> list[Path]:
    """The files a name in the page stands for (``storage/sqlite*.py`` stands for several).

    A name is relative to the package, or to the repository when it starts with a top folder.
    """
    root = PACKAGE.parent
    if pattern.startswith(("omniq_nb/", "tests/", "benchmarks/")):
        return sorted(root.glob(pattern))
    return [path for path in PACKAGE.rglob("*.py") if path.relative_to(PACKAGE).match(pattern)]


def test_every_file_named_exists() -> None:
    missing = sorted(name for name in _named_files() if not _matches(name))
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_every_module_is_named() -> None:
    named = {path for pattern in _named_files() for path in _matches(pattern)}
    unnamed = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p not in named)
    unnamed = [name for name in unnamed if not name.endswith(("__init__.py", "__main__.py"))]
    assert not unnamed, f"docs/architecture.md does not say where these modules belong: {unnamed}"
