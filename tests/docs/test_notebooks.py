"""Every demo in notebooks/ runs top to bottom on a real kernel, with its key outputs checked."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import venv
from pathlib import Path
from typing import Any

import nbformat
import pytest
import tomllib
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
QUICKSTART = "01-quickstart.ipynb"  # what the Binder badge opens
_BINDER_LINK = re.compile(r"https://mybinder\.org/v2/gh/[^\s)\"'<>]+")


def execute(path: Path, workdir: Path, **client: Any) -> nbformat.NotebookNode:
    shutil.copy(path, workdir / path.name)
    notebook = nbformat.read(workdir / path.name, as_version=4)
    NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(workdir)}}, **client).execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    return notebook


def texts(notebook: nbformat.NotebookNode) -> list[str]:
    """Return each code cell's text output (results and streams), in order."""
    shown = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        parts = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output["text"])
            elif "data" in output:
                parts.append(output["data"].get("text/plain", ""))
        shown.append("".join(parts))
    return shown


EXPECTED = {
    "01-quickstart.ipynb": ["9", "16", "16", "16", "failed with ZeroDivisionError", "'ZeroDivisionError'"],
    "02-cell-magic.ipynb": ["45", "STATUS", "omniq dashboard"],
    "03-retries-and-schedules.ipynb": [
        "'succeeded on attempt 3'",
        "timed out",
        "CANCELLED",
        "runs so far:",
        "expired",
    ],
    "04-cpu-bound-and-fan-out.ipynb": ["True", "332833500"],
    "05-beyond-the-kernel.ipynb": ["42", "(True,", "file store: ['pending']"],
    "06-pipelines-and-cache.ipynb": [
        "49500 ran: ['compare', 'fit', 'fit', 'fit', 'load']",
        "[True, True, True, True, True] 49500 ran: []",
        "49501 ran: ['compare', 'fit', 'fit', 'fit']",
        "forgot 1",
    ],
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_shows_its_key_outputs(path: Path, tmp_path: Path) -> None:
    notebook = execute(path, tmp_path)
    shown = "\n".join(texts(notebook))
    for expected in EXPECTED[path.name]:
        assert expected in shown, f"{path.name}: {expected!r} not in the outputs"


def test_every_notebook_has_expectations() -> None:
    assert {p.name for p in NOTEBOOKS} == set(EXPECTED)


def test_binder_python_satisfies_requires_python() -> None:
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    required = re.search(r'^requires-python = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert required is not None
    assert runtime.startswith("python-")
    assert SpecifierSet(required[1]).contains(runtime.removeprefix("python-") + ".0"), (runtime, required[1])


def test_binder_badge_is_built_from_the_repository_url() -> None:
    """The repository's address is written once, in pyproject.toml; the badge and binder/ follow it."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    url = pyproject["project"]["urls"]["Repository"]
    repository = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+)", url)
    assert repository is not None, f"[project.urls] Repository should be a GitHub repository's address, not {url!r}"
    owner, name = repository.groups()
    badge = f"https://mybinder.org/v2/gh/{owner}/{name}/HEAD?labpath=notebooks%2F{QUICKSTART}"
    readme = (ROOT / "README.md").read_text()
    assert f"[![Binder](https://mybinder.org/badge_logo.svg)]({badge})" in readme

    sources = [ROOT / "README.md", *sorted((ROOT / "binder").iterdir()), *NOTEBOOKS]
    for source in sources:
        for link in _BINDER_LINK.findall(source.read_text()):
            assert link.startswith(f"https://mybinder.org/v2/gh/{owner}/{name}/"), f"{source.name}: {link}"
            labpath = re.search(r"labpath=([^&]+)", link)
            if labpath is not None:
                opened = ROOT / labpath[1].replace("%2F", "/")
                assert opened.is_file(), f"{source.name}: Binder would open {opened.name}, which is not there"
    # Binder installs this checkout (not a copy fetched from some address) with every dependency pinned
    assert "pip install --no-cache-dir .\n" in (ROOT / "binder" / "postBuild").read_text()
    lines = (ROOT / "binder" / "requirements.txt").read_text().splitlines()
    pinned = {r.name: r for r in (Requirement(line) for line in lines if line and not line.startswith("#"))}
    for dependency in map(Requirement, pyproject["project"]["dependencies"]):
        assert dependency.name in pinned, f"binder/requirements.txt does not pin {dependency.name}"
        version = str(pinned[dependency.name].specifier).removeprefix("==")
        assert dependency.specifier.contains(version), f"binder pins {dependency.name}=={version}: not {dependency}"


def test_binder_environment_runs_the_quickstart(tmp_path: Path) -> None:
    """What Binder does: install binder/requirements.txt, run postBuild, open the quickstart."""
    env_dir = tmp_path / "binder-env"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(ROOT / "binder" / "requirements.txt")], check=True, timeout=900)
    environment = {**os.environ, "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", str(ROOT / "binder" / "postBuild")], cwd=ROOT, env=environment, check=True, timeout=900)
    spec_dir = tmp_path / "kernels"
    subprocess.run(
        [str(python), "-m", "ipykernel", "install", "--name", "binder", "--prefix", str(spec_dir)],
        check=True,
        timeout=120,
    )
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir / "share" / "jupyter" / "kernels")])
    workdir = tmp_path / "work"
    workdir.mkdir()
    kernel = KernelManager(kernel_name="binder", kernel_spec_manager=specs)
    assert kernel.kernel_spec is not None and kernel.kernel_spec.argv[0] == str(python)
    notebook = execute(ROOT / "notebooks" / "01-quickstart.ipynb", workdir, km=kernel)
    assert "16" in "\n".join(texts(notebook))
