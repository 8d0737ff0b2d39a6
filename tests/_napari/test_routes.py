"""Every way into the plugin gives the same view: anterior up, the subject's right on the right
(neurological; left with the radiological setting), MNI mm in the status bar.

Checked from rendered pixels: after opening a result (or a plain NIfTI) through a route,
two markers are added in world space, one anterior (y = +60 mm, green) and one on the
subject's right (x = +60 mm, magenta); the screenshot must show the first in the upper
half of the canvas and the second in its right half.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_brainorg._napari import display  # noqa: E402
from napari_brainorg._napari import layers as L  # noqa: E402

pytestmark = pytest.mark.gui

ROUTES = ("viewer.open", "open folder", "drag and drop", "plain NIfTI", "open sample", "brainorg view",
          "pipeline widget")


def _marker(x_mm, y_mm, colormap):
    """A 12 mm block around (x, y) on the axial slices z = -4..4 mm, as a plain napari layer."""
    block = np.zeros((5, 20, 20), np.float32)
    block[:, 4:16, 4:16] = 1.0
    affine = np.array([[2.0, 0, 0, x_mm - 19.0], [0, 2.0, 0, y_mm - 19.0], [0, 0, 2.0, -4.0], [0, 0, 0, 1]])
    return block, {"affine": L.napari_affine(affine), "colormap": colormap, "blending": "additive",
                   "contrast_limits": (0, 1), "name": f"marker {colormap}"}


def _marker_positions(viewer, qtbot):
    """Mean (row, column) of the anterior (green) and right (magenta) markers, and the canvas shape."""
    for layer in viewer.layers:
        layer.visible = layer.metadata.get(L.ROLE) == "template"
    for x, y, cmap in ((0.0, 60.0, "green"), (60.0, 0.0, "magenta")):
        data, kwargs = _marker(x, y, cmap)
        viewer.add_image(data, **kwargs)
    viewer.dims.set_point(viewer.dims.ndim - 3, 0.0)
    qtbot.wait(30)
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
    green = (g > 200) & (g - r > 60) & (g - b > 60)
    magenta = (r > 200) & (b > 200) & (r - g > 60) & (b - g > 60)
    assert green.sum() > 30 and magenta.sum() > 30, (green.sum(), magenta.sum())
    return np.argwhere(green).mean(0), np.argwhere(magenta).mean(0), shot.shape[:2]


def _check_orientation(viewer, qtbot, right_on_right=True):
    anterior, right, (height, width) = _marker_positions(viewer, qtbot)
    assert anterior[0] < height / 2 - 10, f"anterior marker at row {anterior[0]:.0f} of {height}: not up"
    if right_on_right:
        assert right[1] > width / 2 + 10, f"right marker at column {right[1]:.0f} of {width}: not right"
    else:
        assert right[1] < width / 2 - 10, f"right marker at column {right[1]:.0f} of {width}: not left"


def _status_of_known_voxel(viewer, layer, ijk, affine):
    """napari's status text with the cursor on the centre of file voxel ``ijk``."""
    world = L.world_of_voxel(affine, ijk)
    viewer.dims.set_point(viewer.dims.ndim - 3, world[0])
    viewer.layers.selection.active = layer
    viewer.mouse_over_canvas = True
    viewer.cursor.position = tuple(world)
    status = viewer._calc_status_from_cursor()[0]
    return status["coordinates"] if isinstance(status, dict) else str(status)


@pytest.fixture
def neurological():
    display.set_convention("neurological")
    yield
    display.set_convention("neurological")


@pytest.fixture(scope="module")
def stat_map(tmp_path_factory):
    """A SIMULATED z map on a 2 mm RAS grid: +4 in a blob at (30, 20, 10) mm, -4 at (-30, -40, 10)."""
    affine = np.array([[2.0, 0, 0, -90.0], [0, 2.0, 0, -126.0], [0, 0, 2.0, -72.0], [0, 0, 0, 1]])
    shape = (91, 109, 91)
    ijk = np.indices(shape).reshape(3, -1)
    xyz = (affine @ np.vstack([ijk, np.ones(ijk.shape[1])]))[:3].T
    z = np.zeros(ijk.shape[1], np.float32)
    z += 4.0 * (np.linalg.norm(xyz - [30, 20, 10], axis=1) < 10)
    z -= 4.0 * (np.linalg.norm(xyz - [-30, -40, 10], axis=1) < 10)
    z += np.random.default_rng(0).normal(0, 0.3, z.size).astype(np.float32)  # |noise| < 2.3 nearly always
    path = tmp_path_factory.mktemp("nifti") / "sub-01_zstat.nii.gz"
    nib.save(nib.Nifti1Image(z.reshape(shape), affine), path)
    return path, affine


@pytest.fixture
def reader_preference(tiny_result):
    """The folder's reader remembered as napari-brainorg, as the user's "remember" tick in
    napari's reader dialog does (napari's builtins also claim folders, so napari asks once)."""
    import os

    from napari.settings import get_settings

    settings = get_settings().plugins
    old = dict(settings.extension2reader)
    folder = os.path.realpath(str(tiny_result[0])) + os.sep
    settings.extension2reader = {**old, folder: "napari-brainorg"}
    yield
    settings.extension2reader = old


def _open_route(route, viewer, qtbot, path, stat_map, monkeypatch):
    if route == "viewer.open":
        viewer.open(str(path), plugin="napari-brainorg")
    elif route == "open folder":  # what File > Open Folder does with the chosen folder
        viewer.window._qt_viewer._qt_open([str(path)], stack=False)
    elif route == "drag and drop":
        from qtpy.QtCore import QMimeData, QPointF, Qt, QUrl
        from qtpy.QtGui import QDropEvent

        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(path))])
        event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                           Qt.KeyboardModifier.NoModifier)
        viewer.window._qt_viewer.dropEvent(event)
    elif route == "plain NIfTI":
        viewer.open(str(stat_map[0]), plugin="napari-brainorg")
    elif route == "open sample":
        from napari_brainorg._napari.sample_data import DEMO_ENV

        monkeypatch.setenv(DEMO_ENV, str(path))
        viewer.open_sample("napari-brainorg", "demo")
    elif route == "brainorg view":
        from napari_brainorg._napari import view as view_module
        from napari_brainorg.cli import main

        monkeypatch.setattr("napari.Viewer", lambda *a, **k: viewer)
        monkeypatch.setattr(view_module, "run_event_loop", lambda v: None)
        assert main(["view", str(path)]) == 0
    elif route == "pipeline widget":  # a finished run's result, shown by the widget
        from napari_brainorg._napari.pipeline_widget import PipelineWidget
        from napari_brainorg.io.results import ResultFolder

        widget = PipelineWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Run pipeline")
        with qtbot.waitSignal(widget.finished, timeout=30000):
            widget._on_finished(ResultFolder(path))
    else:  # pragma: no cover
        raise ValueError(route)


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_shows_anterior_up_right_on_right_and_mni_mm(route, make_napari_viewer, qtbot, tiny_result,
                                                                 stat_map, monkeypatch, neurological,
                                                                 reader_preference):
    path, truth = tiny_result
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1000, 700)
    _open_route(route, viewer, qtbot, path, stat_map, monkeypatch)
    # every route reads in a thread and adds its layers one per turn of the event loop
    last = (lambda: any(layer.name == "sub-01_zstat" for layer in viewer.layers)) if route == "plain NIfTI" \
        else (lambda: L.find_layer(viewer, "networks") is not None)
    qtbot.waitUntil(lambda: L.find_layer(viewer, "template") is not None and last(), timeout=30000)
    explorer = viewer.window.dock_widgets.get("Atom explorer")
    if explorer is not None:  # it moves the slice to atom 0's peak once loaded: before the markers
        qtbot.waitUntil(lambda: explorer.shown_state is not None, timeout=30000)
        qtbot.wait(50)
    assert L.find_layer(viewer, display.ORIENTATION_ROLE) is not None, "no A/P/L/R labels"
    assert tuple(viewer.camera.orientation2d) == ("up", "right")

    # the status bar reads MNI x, y, z in mm for a known voxel
    if route == "plain NIfTI":
        layer = next(layer for layer in viewer.layers if layer.name == "sub-01_zstat")
        assert layer.metadata.get("brainorg_stat_map") and layer.blending == "translucent"
        # thresholded and clear at zero: noise (|z| < 2.3) invisible, the blob drawn
        assert L.visible_fraction(layer, np.array([0.0, 1.0, -1.5, 4.0, -4.0])).tolist() == [0, 0, 0, 1, 1]
        ijk, affine = (60, 73, 41), stat_map[1]  # x = +30, y = +20, z = +10 mm
        expected = "MNI x, y, z = (+30, +20, +10) mm"
    else:
        layer = L.find_layer(viewer, "atom_map")
        assert layer is not None and "atom 0 of minilm" in layer.name
        ijk, affine = (30, 40, 20), truth["affine"]  # x = +30, y = +34, z = +8 mm
        expected = "MNI x, y, z = (+30, +34, +8) mm"
    status = _status_of_known_voxel(viewer, layer, ijk, affine)
    assert expected in status, status
    _check_orientation(viewer, qtbot, right_on_right=True)


def test_radiological_setting_puts_the_right_on_the_left(make_napari_viewer, qtbot, tiny_result, neurological):
    path, _ = tiny_result
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1000, 700)
    viewer.open(str(path), plugin="napari-brainorg")
    qtbot.waitUntil(lambda: L.find_layer(viewer, "networks") is not None, timeout=30000)  # read in a thread
    display.set_convention("radiological", viewer)
    assert display.convention() == "radiological"
    _check_orientation(viewer, qtbot, right_on_right=False)
    assert "R on left" in display.corner_text(viewer)
