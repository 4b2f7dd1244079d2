"""`make install` after a first install: a different TORCH reinstalls torch from it, the same TORCH does
nothing, an edited pyproject.toml reinstalls the package alone. Run for real in a temporary copy of the
Makefile whose venv holds a fake pip that only logs its arguments: nothing is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CUDA = "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu130"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make on PATH")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The Makefile and pyproject.toml, with a venv whose python and pip are scripts logging to pip.log."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("python", "pip"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{tmp_path}/pip.log"\n')
        (bin_dir / tool).chmod(0o755)
    return tmp_path


def make(project: Path, *args: str, torch: str | None = None) -> tuple[str, list[str]]:
    """Runs `make install` there; returns its output and the pip calls it made."""
    log = project / "pip.log"
    log.unlink(missing_ok=True)
    extra = [f"TORCH={torch}"] if torch else []
    proc = subprocess.run(["make", "-C", str(project), "--no-print-directory", "VENV=venv", "PYTHON=false", *args,
                           *extra, "install"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, log.read_text().splitlines() if log.exists() else []


def test_a_changed_torch_reinstalls_torch_and_the_same_one_does_nothing(project):
    _, calls = make(project)
    assert calls == ["pip install -q torch==2.13.0", 'pip install -q -e .[dev]']
    out, calls = make(project)
    assert calls == [] and "Nothing to be done" in out
    # the GPU recipe after a CPU install: the old build goes, the new one comes from the given index
    _, calls = make(project, torch=CUDA)
    assert calls == ["pip uninstall -q -y torch", f"pip install -q {CUDA}", 'pip install -q -e .[dev]']
    assert len(list((project / "venv").glob(".torch-*"))) == 1
    assert make(project, torch=CUDA)[1] == []
    # back to the default: reinstalled again
    assert make(project)[1][:2] == ["pip uninstall -q -y torch", "pip install -q torch==2.13.0"]


def test_an_edited_pyproject_reinstalls_the_package_alone(project):
    make(project)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "\n")
    subprocess.run(["touch", "-d", "+2 seconds", str(pyproject)], check=True)
    assert make(project)[1] == ['pip install -q -e .[dev]']


def test_make_n_shows_the_torch_reinstall_without_running_it(project):
    make(project)
    (project / "pip.log").unlink()
    proc = subprocess.run(["make", "-C", str(project), "-n", "VENV=venv", f"TORCH={CUDA}", "install"],
                          capture_output=True, text=True, timeout=60)
    assert f"venv/bin/pip install -q {CUDA}" in proc.stdout and "uninstall -q -y torch" in proc.stdout
    assert not (project / "pip.log").exists()
