"""Closing the viewer while the plugin's workers run never aborts the process.

In one subprocess (an abort would kill pytest itself), 20 times in a row: open a result
through the reader, dock every widget of the plugin, take a screenshot and close the
viewer at once, while the explorer is still loading the result in its thread.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("napari")

pytestmark = pytest.mark.gui

SCRIPT = textwrap.dedent("""
    import sys, time
    import napari
    from qtpy.QtWidgets import QApplication

    path = sys.argv[1]
    app = QApplication.instance() or QApplication([])
    for i in range(20):
        viewer = napari.Viewer(show=True)
        viewer.open(path, plugin="napari-brainorg")
        for name in ("Atom explorer", "Brain networks", "Run pipeline", "Ortho views"):
            viewer.window.add_plugin_dock_widget("napari-brainorg", name, tabify=True)
        viewer.screenshot(canvas_only=False, flash=False)
        viewer.close()
        app.processEvents()
    # let the threads started by the closed viewers finish and deliver
    end = time.monotonic() + 5
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)
    print("closed 20 viewers")
""")


def test_closing_at_once_twenty_times_never_aborts(tiny_result, tmp_path):
    path, _ = tiny_result
    script = tmp_path / "close_twenty.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    proc = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True,
                          timeout=300, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"exit code {proc.returncode}:\n{output[-4000:]}"
    assert "closed 20 viewers" in proc.stdout
    for bad in ("Traceback", "RuntimeError", "has been deleted", "Aborted", "Fatal Python error"):
        assert bad not in output, f"{bad!r} in the output:\n{output[-4000:]}"
