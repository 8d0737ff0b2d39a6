"""The import direction of docs/architecture.md, checked on every run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "KEPT" in result.stdout and "BROKEN" not in result.stdout


def test_importing_the_science_does_not_import_torch_or_gui():
    code = (
        "import sys, importlib, pkgutil\n"
        "import napari_brainorg\n"
        "for m in ['io', 'features', 'sparse', 'encoding', 'networks', 'analyses', 'pipeline', 'cli']:\n"
        "    importlib.import_module('napari_brainorg.' + m)\n"
        "heavy = [m for m in ('torch', 'transformers', 'napari', 'qtpy', 'PyQt5', 'magicgui') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at package import time: {out.stdout.strip()}"
