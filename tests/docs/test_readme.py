"""Every code block of README.md runs as written (issue 13: its first cell failed when pasted).

The ```python and ```ipython blocks of the "In a notebook" section are notebook cells: they
run in order, one cell each, in one real kernel (ipykernel of this Python) started in a fresh
folder, so magics and top-level ``await`` work. The other ```python blocks are the library
"outside notebooks": they run in order in one Python subprocess, in a fresh folder, sharing
their names, an ``await`` at top level run by ``asyncio.run`` as ``python -m asyncio`` would.
In a library block, a ``print(...)  # value`` line promises that output, in order. Shell
blocks run when every command is a quick, complete ``omniq-nb`` or ``python`` one (not
``make``, not the long-running ``worker``, nothing with a placeholder), in a fresh folder of
their own; the plain block after ``omniq-nb check`` is the output that command prints.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_driver import Kernel, start_kernel, write_kernel_spec

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent
CELL_TIMEOUT = 120.0
_BLOCK = re.compile(r"^```([\w-]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_NOTEBOOK_SECTION = "## In a notebook\n"
_LIBRARY_RUNNER = """\
import ast, asyncio, json, sys
namespace = {"__name__": "__main__"}
for index, code in enumerate(json.load(sys.stdin)):
    print(f"--- block {index}", flush=True)
    compiled = compile(code, f"<README block {index}>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(compiled, namespace)
    if asyncio.iscoroutine(result):
        asyncio.run(result)
"""
_PROMISE = re.compile(r"^\s*print\(.*\)\s+# (.+?)(?:\s{2,}.*)?$")
_PLACEHOLDER = re.compile(r"\[|\.\.\.|\bID\b|\bworker\b")


def blocks() -> list[tuple[str, str]]:
    """Return ``(language, text)`` of every fenced block of the README, in order."""
    return _BLOCK.findall(README.read_text())


def notebook_and_library_blocks() -> tuple[list[str], list[str]]:
    """Return the README's notebook cells (its "In a notebook" section) and its other Python blocks."""
    text = README.read_text()
    start = text.index(_NOTEBOOK_SECTION)
    end = text.index("\n## ", start + len(_NOTEBOOK_SECTION))
    notebook = [code for lang, code in _BLOCK.findall(text[start:end]) if lang in ("python", "ipython")]
    rest = text[:start] + text[end:]
    assert [lang for lang, _ in _BLOCK.findall(rest) if lang == "ipython"] == [], "notebook cells outside the section"
    return notebook, [code for lang, code in _BLOCK.findall(rest) if lang == "python"]


def promised_output(code: str) -> list[str]:
    """Return the outputs that ``print(...)  # value`` lines of ``code`` promise."""
    return [match.group(1).strip() for line in code.splitlines() if (match := _PROMISE.match(line))]


def runnable_shell(code: str) -> bool:
    """Return whether every command of a shell block is quick and complete as written."""
    commands = [line.split("#")[0].strip() for line in code.splitlines() if line.strip()]
    return all(c.startswith(("omniq-nb ", "python ")) and not _PLACEHOLDER.search(c) for c in commands)


@pytest.fixture
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    """A kernel of this Python in a fresh folder, with no ``OMNIQ_*`` setting."""
    specs = write_kernel_spec(tmp_path_factory.mktemp("readme-kernel"), "readme")
    kernel = start_kernel(specs, "readme", tmp_path_factory.mktemp("readme-cells"), {})
    try:
        yield kernel
    finally:
        kernel.close()


def test_the_readme_has_the_blocks_this_test_runs() -> None:
    found = blocks()
    code = [text for lang, text in found if lang in ("python", "ipython")]
    assert any(text.startswith("%%omniq enqueue") for text in code)
    assert any("%load_ext omniq_nb" in text for text in code)
    assert any(lang == "bash" and runnable_shell(text) for lang, text in found)
    for lang, text in found:  # a notebook cell must say so, or this test would skip it
        assert lang or not text.lstrip().startswith("%"), f"label this block ```ipython:\n{text}"
        if lang in ("python", "ipython"):
            magics = [line for line in text.splitlines() if line.lstrip().startswith("%") and "#" in line]
            assert magics == [], f"IPython passes a comment after a magic on as arguments: {magics}"


def test_notebook_blocks_run_in_order_in_a_kernel(kernel: Kernel) -> None:
    notebook, _ = notebook_and_library_blocks()
    assert len(notebook) >= 2
    for code in notebook:
        kernel.run(code, CELL_TIMEOUT)  # fails with what the cell showed if it raised
    # the cell task's result is what its last expression says: job.result() == total
    assert kernel.run("print(job.result(timeout=60) == sum(data))", CELL_TIMEOUT).stdout == "True\n"


def test_library_blocks_run_in_order_and_print_what_they_promise(tmp_path: Path) -> None:
    _, library = notebook_and_library_blocks()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    done = subprocess.run(
        [sys.executable, "-c", _LIBRARY_RUNNER],
        input=json.dumps(library),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=CELL_TIMEOUT,
    )
    assert done.returncode == 0, f"a README library block failed:\n{done.stdout}\n{done.stderr}"
    printed = re.split(r"^--- block \d+\n", done.stdout, flags=re.MULTILINE)[1:]
    assert len(printed) == len(library)
    for code, output in zip(library, printed, strict=True):
        promised = promised_output(code)
        if promised:
            assert output.splitlines() == promised, f"README block printed {output!r}:\n{code}"


def test_quick_shell_blocks_run_and_print_what_the_readme_shows(tmp_path: Path) -> None:
    found = blocks()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    ran = 0
    for index, (lang, code) in enumerate(found):
        if lang != "bash" or not runnable_shell(code):
            continue
        folder = tmp_path / f"block-{index}"
        folder.mkdir()
        for line in filter(None, (line.split("  #")[0].strip() for line in code.splitlines())):
            done = subprocess.run(
                ["bash", "-c", line], cwd=folder, env=env, capture_output=True, text=True, timeout=CELL_TIMEOUT
            )
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
            ran += 1
            if line.startswith("omniq-nb check") and "--json" not in line:
                shown_lang, shown = found[index + 1]
                assert shown_lang == "", "the README shows what omniq-nb check prints after the command"
                assert done.stdout == shown, f"omniq-nb check printed:\n{done.stdout}"
            elif "--json" in line:
                assert json.loads(done.stdout)["ok"] is True
    assert ran >= 3
