"""The workspace at 1366 x 768: one tabbed column of panels on every route, and the explorer's
tools for finding and reading a map (go to peak, thresholds, colours, the run's verdict)."""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_brainorg._napari import layers as L  # noqa: E402

pytestmark = pytest.mark.gui

#: a laptop's 768 px screen less the system's bars: what the window may ask for at least
MAX_MIN_HEIGHT = 740


def _manifest_widget_commands() -> list[str]:
    npe2 = pytest.importorskip("npe2")
    from importlib.resources import files

    manifest = npe2.PluginManifest.from_file(files("napari_brainorg") / "napari.yaml")
    return [w.command for w in manifest.contributions.widgets]


def _open_from_plugins_menu(command: str) -> None:
    """What Plugins ▸ napari-brainorg ▸ <widget> does: the widget's action, then napari docks it."""
    from napari._app_model import get_app_model

    get_app_model().commands.execute_command(command).result()


@pytest.mark.parametrize("reverse", [False, True], ids=["manifest order", "reversed"])
def test_plugins_menu_widgets_share_one_tabbed_dock_that_fits_the_screen(make_napari_viewer, qtbot, tiny_result,
                                                                         reverse):
    from qtpy.QtWidgets import QDockWidget

    from napari_brainorg._napari._docking import plugin_docks

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1366, 768)
    viewer.open(str(tiny_result[0]), plugin="napari-brainorg")
    commands = _manifest_widget_commands()
    for command in (commands[::-1] if reverse else commands):
        _open_from_plugins_menu(command)
        qtbot.wait(50)
    docks = plugin_docks(window)
    assert len(docks) == len(commands)
    qtbot.waitUntil(lambda: all(len(window.tabifiedDockWidgets(d)) == len(docks) - 1 for d in docks), timeout=5000)
    assert window.minimumSizeHint().height() <= MAX_MIN_HEIGHT, window.minimumSizeHint()
    # napari's own docks are left alone
    assert all(isinstance(d, QDockWidget) for d in docks)
    # tab names say what each panel is, not which plugin it belongs to
    assert {d.windowTitle() for d in docks} == {"Run pipeline", "Atom explorer", "Brain networks", "Orthogonal views"}


def test_brainorg_view_fits_the_screen(make_napari_viewer, qtbot, tiny_result):
    from napari_brainorg._napari.view import open_viewer

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    open_viewer(tiny_result[0], viewer=viewer)
    explorer = viewer.window.dock_widgets["Atom explorer"]
    qtbot.waitUntil(lambda: explorer.shown_state is not None, timeout=30000)
    qtbot.wait(100)
    assert viewer.window._qt_window.minimumSizeHint().height() <= MAX_MIN_HEIGHT
