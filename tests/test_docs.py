"""The documentation: the tutorial's code runs as written, and the site builds without warnings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"

pytestmark = pytest.mark.slow


def _python_blocks(rst: str) -> list[str]:
    blocks, lines, i = [], rst.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() == ".. code-block:: python":
            i += 1
            body = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("   ")):
                body.append(lines[i][3:])
                i += 1
            blocks.append("\n".join(body).strip("\n"))
        else:
            i += 1
    return blocks


def test_tutorial_runs_as_written(quick_result, tmp_path, monkeypatch, capsys):
    # the tutorial's folder is a copy of the session's quick demo (its run is reused step by step)
    shutil.copytree(quick_result.path, tmp_path / "demo-quick", symlinks=True)
    monkeypatch.chdir(tmp_path)
    blocks = _python_blocks((DOCS / "tutorial.rst").read_text())
    assert len(blocks) >= 6
    namespace: dict = {}
    for n, code in enumerate(blocks):
        exec(compile(code, f"tutorial.rst block {n}", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "z score" in out
    assert re.search(r"^3$", out, flags=re.M)  # the sparse fit finds the atom the voxel was built from


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(DOCS.parent / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    html = (tmp_path / "html" / "api.html").read_text()
    assert "CVRidgeEncoder" in html and "ResultFolder" in html  # the API reference came from docstrings
    architecture = (tmp_path / "html" / "architecture.html").read_text()
    assert "steps/" in architecture and "StepContext" in architecture  # the layout page is part of the site
