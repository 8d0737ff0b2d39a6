"""The workspace at 1366 x 768: one tabbed column of panels on every route, and the explorer's
tools for finding and reading a map (go to peak, thresholds, colours, the run's verdict)."""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_brainorg._napari import layers as L  # noqa: E402 - after the importorskip

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
    """Every widget of the manifest from the Plugins menu: the ortho views in a column beside the
    canvas, the others in one tab group; the window neither asks for nor grows past 768 px."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDockWidget

    from napari_brainorg._napari._docking import dock_of, plugin_docks
    from napari_brainorg._napari.orthoviews import OrthoViews, on_screen

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1366, 768)
    viewer.open(str(tiny_result[0]), plugin="napari-brainorg")
    commands = _manifest_widget_commands()
    for command in (commands[::-1] if reverse else commands):
        _open_from_plugins_menu(command)
        qtbot.wait(50)
    docks = plugin_docks(window)
    assert len(docks) == len(commands) - 1  # all but the ortho views
    qtbot.waitUntil(lambda: all(len(window.tabifiedDockWidgets(d)) == len(docks) - 1 for d in docks), timeout=5000)
    assert window.minimumSizeHint().height() <= MAX_MIN_HEIGHT, window.minimumSizeHint()
    qtbot.wait(50)
    assert window.height() <= 768, window.height()  # docking did not grow the window off the screen
    # napari's own docks are left alone
    assert all(isinstance(d, QDockWidget) for d in docks)
    # tab names say what each panel is, not which plugin it belongs to
    assert {d.windowTitle() for d in docks} == {"Run pipeline", "Atom explorer", "Brain networks"}
    # the ortho views: their own column on the left, between napari's layer docks and the canvas
    (ortho,) = [w for w in viewer.window.dock_widgets.values() if isinstance(w, OrthoViews)]
    ortho_dock = dock_of(ortho)
    assert window.dockWidgetArea(ortho_dock) == Qt.LeftDockWidgetArea and not window.tabifiedDockWidgets(ortho_dock)
    assert ortho_dock.windowTitle() == "Ortho views"
    canvas = viewer.window._qt_viewer.canvas.native
    canvas_left = canvas.mapTo(window, canvas.rect().topLeft()).x()
    assert ortho_dock.geometry().right() < canvas_left
    for dock in window.findChildren(QDockWidget):
        if window.dockWidgetArea(dock) == Qt.LeftDockWidgetArea and dock is not ortho_dock and dock.isVisible():
            assert dock.geometry().right() < ortho_dock.geometry().left(), dock.windowTitle()
    # three views and the explorer at once
    explorer = next(w for w in viewer.window.dock_widgets.values() if type(w).__name__ == "AtomExplorer")
    L.raise_dock(explorer)
    qtbot.waitUntil(lambda: on_screen(explorer.table), timeout=5000)
    assert on_screen(ortho.panels["coronal"]) and on_screen(ortho.panels["sagittal"]) and on_screen(canvas)


def test_brainorg_view_fits_the_screen(make_napari_viewer, qtbot, tiny_result):
    from napari_brainorg._napari.view import open_viewer

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    open_viewer(tiny_result[0], viewer=viewer)
    explorer = viewer.window.dock_widgets["Atom explorer"]
    qtbot.waitUntil(lambda: explorer.shown_state is not None, timeout=30000)
    qtbot.wait(100)
    assert viewer.window._qt_window.minimumSizeHint().height() <= MAX_MIN_HEIGHT


def _shown_explorer(viewer, qtbot, path):
    from napari_brainorg._napari.view import open_viewer

    viewer.window._qt_window.resize(1366, 768)
    open_viewer(path, viewer=viewer, pipeline=False)
    explorer = viewer.window.dock_widgets["Atom explorer"]
    qtbot.waitUntil(lambda: explorer.shown_state is not None, timeout=30000)
    return explorer


def test_cluster_peak_is_in_the_largest_cluster_not_at_a_stray_voxel():
    from napari_brainorg._napari._peak import cluster_peak

    volume = np.zeros((20, 20, 20), np.float32)
    volume[2, 2, 2] = 9.0  # one stray voxel, strongest of all
    volume[10:14, 10:14, 10:14] = -3.0  # the largest cluster (deactivated)
    volume[12, 11, 13] = -5.0
    assert cluster_peak(volume, 2.3) == (12, 11, 13)
    assert cluster_peak(volume, 6.0) == (2, 2, 2)
    assert cluster_peak(volume, 10.0) is None
    assert cluster_peak(np.zeros((3, 3, 3)), 0.0) is None  # zeros are never a cluster


def test_selecting_an_atom_moves_the_slice_to_its_peak(make_napari_viewer, qtbot, tiny_result):
    from napari_brainorg._napari._peak import peak_world

    path, truth = tiny_result
    viewer = make_napari_viewer(show=True)
    explorer = _shown_explorer(viewer, qtbot, path)
    z_axis = viewer.dims.ndim - 3
    maps = explorer.state.maps
    threshold = explorer.threshold_slider.value()
    for atom, network in ((2, 6), (0, 1), (1, 7)):  # planted: Frontoparietal, Visual, Default (+5; -5 elsewhere)
        viewer.dims.set_point(z_axis, 0.0)
        explorer.select_atom(atom)
        world, value = peak_world(maps.volume(atom), maps.affine, threshold)
        assert abs(value) >= threshold
        step = viewer.dims.range[z_axis].step
        assert viewer.dims.point[z_axis] == pytest.approx(world[0], abs=step / 2 + 1e-6)
        assert np.allclose(explorer.peak, world)
        # the peak lies in the planted network (file voxel of the peak in the truth's atlas)
        ijk = np.rint(np.linalg.solve(truth["affine"], np.r_[world[::-1], 1.0])[:3]).astype(int)
        assert truth["atlas"][tuple(ijk)] == network, (atom, world)
        x, y, z = world[::-1]
        assert f"({x:+.0f}, {y:+.0f}, {z:+.0f}) mm" in explorer.peak_label.text()
    # the button finds it again after the slice moved away
    viewer.dims.set_point(z_axis, 0.0)
    explorer.peak_button.click()
    assert viewer.dims.point[z_axis] == pytest.approx(world[0], abs=step / 2 + 1e-6)
    # the orthogonal views' crosshair went there too
    ortho = viewer.window.dock_widgets["Ortho views"]
    assert np.allclose(ortho.position[1:], world[1:])


def _painted(viewer, qtbot) -> int:
    qtbot.wait(50)
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    return int((shot.max(-1) > 40).sum())


def test_threshold_zero_leaves_zero_voxels_unpainted(make_napari_viewer, qtbot, tiny_result):
    """Rendered, not computed: at threshold 0 the map paints no more than its non-zero voxels."""
    path, _ = tiny_result
    viewer = make_napari_viewer(show=True)
    explorer = _shown_explorer(viewer, qtbot, path)
    explorer.select_atom(0)
    explorer.threshold_slider.setValue(0.0)
    layer = L.find_layer(viewer, "atom_map")
    assert layer.metadata["threshold"] == 0.0
    for other in viewer.layers:
        other.visible = other is layer
    painted = _painted(viewer, qtbot)
    # the same slice of a white mask of the map's non-zero voxels: what may be painted
    mask = viewer.add_image((layer.data != 0).astype(np.float32), affine=layer.affine.affine_matrix,
                            colormap="gray", contrast_limits=(0.0, 1.0), name="non-zero voxels")
    layer.visible = False
    allowed = _painted(viewer, qtbot)
    assert allowed > 1000  # the slice shows brain
    assert painted <= 1.02 * allowed + 50, (painted, allowed)
    # the box around the brain holds many more pixels: the bug this guards against painted it all
    mask.data = np.ones_like(mask.data)
    assert _painted(viewer, qtbot) > 1.2 * allowed


def test_colour_bars_label_their_ends_and_the_threshold(make_napari_viewer, qtbot, tiny_result):
    from napari_brainorg._napari._colorbar import _colorbar_visual, tick_text

    viewer = make_napari_viewer(show=True)
    explorer = _shown_explorer(viewer, qtbot, tiny_result[0])
    layer = L.find_layer(viewer, "atom_map")

    def labels(layer):
        visual = _colorbar_visual(viewer, layer)
        return visual.node.ticks.ticker._get_tick_frac_labels()[2]

    qtbot.waitUntil(lambda: layer.metadata.get("_ticks_follow", False), timeout=5000)
    limit = layer.contrast_limits[1]
    for threshold in (2.3, 3.0):
        explorer.threshold_slider.setValue(threshold)
        assert labels(layer) == [tick_text(-limit), tick_text(-threshold), "0", tick_text(threshold),
                                 tick_text(limit)]
    r2 = L.find_layer(viewer, "r2")
    r2.visible = True
    qtbot.waitUntil(lambda: r2.metadata.get("_ticks_follow", False), timeout=5000)
    lo, hi = r2.contrast_limits
    assert labels(r2) == [tick_text(lo), tick_text(hi)]


@pytest.mark.parametrize("atlas", ["smith10", "yeo7", "yeo17"])
def test_no_two_network_outlines_of_an_atlas_share_a_colour(atlas):
    import colorsys

    from napari_brainorg import datasets
    from napari_brainorg._napari.orthoviews import CROSSHAIR_COLOR

    n = len(datasets.atlas_labels(atlas))
    colours = L.outline_colors(n)[:, :3]
    assert len({tuple(c) for c in colours}) == n
    pairwise = np.linalg.norm(colours[:, None] - colours[None], axis=2) + 9 * np.eye(n)
    assert pairwise.min() > 0.2, pairwise.min()
    # readable on the grey template: saturated, never grey or white
    assert min(colorsys.rgb_to_hsv(*c)[1] for c in colours) >= 0.2
    # none is the crosshair's or a map's colour
    map_colours = np.vstack([L.diverging_threshold_colormap(2.3, 8.0).map(np.linspace(0, 1, 401)),
                             L.sequential_threshold_colormap().map(np.linspace(0, 1, 401))])
    others = np.vstack([map_colours[map_colours[:, 3] > 0.5, :3], np.asarray(CROSSHAIR_COLOR)[:3]])
    assert np.linalg.norm(colours[:, None] - others[None], axis=2).min() > 0.3


def test_outlines_in_the_viewer_follow_the_palette(make_napari_viewer, tiny_result):
    viewer = make_napari_viewer()
    layer = L.add_result_layers(viewer, tiny_result[0])["networks"]
    shown = layer.colormap.map(np.asarray(layer.metadata["labels"]))[:, :3]
    assert len({tuple(np.round(c, 4)) for c in shown}) == len(shown)


def test_the_explorer_states_the_runs_verdict_on_the_shown_model(make_napari_viewer, qtbot, tiny_result, tmp_path,
                                                                 artifacts_dir):
    import json
    import shutil

    path = tmp_path / "with_verdict"
    shutil.copytree(tiny_result[0], path)
    summary = json.loads((path / "summary.json").read_text())
    summary["verdict"] = [
        {"model": "minilm", "topic": "vs nuisance", "severity": "warning",
         "text": "minilm is not ahead of the nuisance baseline: +0.014 r [95% CI -0.01, +0.04], p = 0.22."},
        {"model": "minilm", "topic": "network links", "severity": "info",
         "text": "minilm declared 3 network links (2 activated, 1 deactivated)."},
        {"model": "other", "topic": "network links", "severity": "info", "text": "other declared 9 links."},
    ]
    (path / "summary.json").write_text(json.dumps(summary))
    viewer = make_napari_viewer(show=True)
    explorer = _shown_explorer(viewer, qtbot, path)
    text = explorer.verdict_view.toPlainText()
    assert "not ahead of the nuisance baseline" in text and "declared 3 network links" in text
    assert "other declared 9" not in text  # another model's findings are not this one's
    assert "⚠ vs nuisance" in text  # the warning is marked, and comes first
    assert text.index("⚠ vs nuisance") < text.index("declared 3")
    line = explorer.verdict_line
    assert line.isVisible() and "1 warning" in line.text() and "2 findings" in line.text()
    # the line's "read" link brings the verdict (its tab marked) to the front, readable at 1366 x 768
    tabs = explorer.lower_tabs
    line.linkActivated.emit("verdict")
    assert tabs.currentWidget() is explorer.verdict_view and "⚠" in tabs.tabText(tabs.currentIndex())
    qtbot.wait(100)
    rect = explorer.verdict_view.viewport().visibleRegion().boundingRect()
    assert rect.width() >= 250 and rect.height() >= 80, rect
    assert viewer.window._qt_window.minimumSizeHint().height() <= MAX_MIN_HEIGHT
    viewer.window._qt_window.grab().save(str(artifacts_dir / "napari_1366x768_verdict.png"))
    # a result without a verdict says so, and shows no line
    explorer.set_result(tiny_result[0])
    qtbot.waitUntil(lambda: explorer.shown_state.result.path == tiny_result[0], timeout=30000)
    assert not explorer.verdict_line.isVisible() and "no verdict" in explorer.verdict_view.toPlainText()


def test_compact_layer_summary():
    from napari_brainorg._napari._atom_table import compact_layers

    assert compact_layers("3,4,5,6,9,10", 30) == "3-6, 9-10 (6 of 30)"
    assert compact_layers("12,2", 30) == "2, 12"
    assert compact_layers("", 30) == ""


def test_strongest_link_is_signed_by_its_part():
    import pandas as pd

    from napari_brainorg._napari._atom_table import strongest_links

    class Result:
        def associations(self, model, part):
            if part == "activated":
                return pd.DataFrame({"atom": [0, 0, 1], "atlas": "yeo7", "network": ["Visual", "Default", "Visual"],
                                     "statistic": [2.0, 5.0, 1.0], "q": [0.5, 0.01, 0.9]})
            return pd.DataFrame({"atom": [0, 1], "atlas": "yeo7", "network": ["Limbic", "Default"],
                                 "statistic": [9.0, 4.0], "q": [0.2, 0.003]})

    links = strongest_links(Result(), "m")
    assert links.loc[0, "statistic"] == 5.0 and links.loc[0, "q"] == 0.01
    assert links.loc[0, "network"] == "yeo7:Default (activated)"
    assert links.loc[1, "statistic"] == -4.0 and links.loc[1, "network"] == "yeo7:Default (deactivated)"


def test_atom_table_columns_say_what_they_hold(make_napari_viewer, qtbot, tiny_result):
    viewer = make_napari_viewer(show=True)
    explorer = _shown_explorer(viewer, qtbot, tiny_result[0])
    table = explorer.table
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert "best score" not in headers and "statistic" in headers and "q" in headers
    stat_col, q_col = headers.index("statistic"), headers.index("q")
    assert "statistic" in table.horizontalHeaderItem(stat_col).toolTip()
    row0 = explorer.row_of_atom(0)
    assert table.item(row0, stat_col).text() == "+0.80" and table.item(row0, q_col).text() == "0.01"
    assert "Visual (activated)" in table.item(row0, stat_col).toolTip()
    table.sortItems(q_col)  # the atoms with links first
    assert [table.item(r, 0).data(0) for r in range(table.rowCount())][-1] == "3"
