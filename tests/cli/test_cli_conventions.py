"""Conventions every ``brainorg`` command follows: logging options, config printing and
checking, and one-line errors for a missing optional dependency."""

from __future__ import annotations

import json
import subprocess
import sys


def test_view_without_a_qt_binding_says_how_to_install_one(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"models": [], "tr": 1.5, "n_volumes": 10}))
    # every Qt binding made unimportable, as in an environment that has none
    code = (
        "import sys\n"
        "for m in ('PyQt6', 'PySide6', 'PyQt5', 'PySide2'): sys.modules[m] = None\n"
        "from napari_brainorg.cli import main\n"
        f"sys.exit(main(['view', {str(tmp_path)!r}]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr  # one line, no traceback
    assert "Qt binding" in lines[0] and 'pip install "napari-brainorg[qt]"' in lines[0]
