"""Orthogonal views: a click in one view moves the crosshair and the slices in the others.

On the tiny SIMULATED result (atom 1: +5 planted in the Yeo-7 Default network). Checked
from the widget's state and from pixels: the crosshair drawn where the click was, the
planted map voxel coloured in the coronal and sagittal panels, gone when the threshold
rises above it, and the coronal panel mirrored by the radiological convention.
"""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from qtpy.QtCore import QPoint, Qt  # noqa: E402

from napari_brainorg._napari import display  # noqa: E402
from napari_brainorg._napari import layers as L  # noqa: E402
from napari_brainorg._napari import orthoviews as O  # noqa: E402

pytestmark = pytest.mark.gui


def _grab(widget) -> np.ndarray:
    img = widget.grab().toImage().convertToFormat(widget.grab().toImage().Format.Format_RGB888)
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    return np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine())[:, : 3 * img.width()] \
        .reshape(img.height(), img.width(), 3).astype(int)


def _crosshair_mask(rgb) -> np.ndarray:
    """The crosshair's white (90 % opaque): bright, and grey-free of any hue a map or outline has."""
    return (rgb.min(-1) > 215) & (rgb.max(-1) - rgb.min(-1) < 25)


def _hot(rgb) -> np.ndarray:  # activated map colours: red to yellow, little blue
    return (rgb[..., 0] > 180) & (rgb[..., 2] < 90)


def test_a_click_in_one_view_moves_the_crosshair_and_slices_in_the_others(make_napari_viewer, qtbot, tiny_result,
                                                                          artifacts_dir):
    from napari_brainorg._napari.view import open_viewer

    path, truth = tiny_result
    viewer = make_napari_viewer(show=True)
    # the window's size first: the canvas is framed (zoomed to the brain) when the result
    # arrives, and the crosshair's 0.6 mm lines must be a pixel wide at least
    viewer.window._qt_window.resize(1366, 768)
    open_viewer(path, viewer=viewer)
    explorer = viewer.window.dock_widgets["Atom explorer"]
    qtbot.waitUntil(lambda: explorer.shown_state is not None, timeout=30000)
    ortho = viewer.window.dock_widgets[O.PANEL_NAME]
    L.raise_dock(ortho)
    # pixels are checked at about 2 px per mm: the column beside the canvas widened for it
    viewer.window._qt_window.resizeDocks([ortho.parentWidget()], [330], Qt.Horizontal)
    explorer.select_atom(1)
    coronal, sagittal = ortho.panels["coronal"], ortho.panels["sagittal"]
    qtbot.waitUntil(lambda: coronal.isVisible() and coronal.image is not None, timeout=10000)

    # a planted voxel of atom 1 (+5 in Default), deep in the network: its neighbours too
    inside = truth["mask"] & L.inside_mni_brain(truth["affine"], truth["mask"].shape)
    default = (truth["atlas"] == 7) & inside
    core = default.copy()
    for ax in range(3):
        core &= np.roll(default, 1, ax) & np.roll(default, -1, ax)
    i, j, k = np.argwhere(core & (truth["z"][..., 1] > 4.0))[0]
    target = L.world_of_voxel(truth["affine"], (i, j, k))  # (z, y, x) mm
    # the result's layers all in place (they arrive one per turn of the event loop; the
    # last pieces choose the active layer and set the slice), as when a user clicks
    from napari_brainorg._napari import _loading

    qtbot.waitUntil(lambda: not _loading._QUEUES.get(viewer), timeout=30000)
    ortho.set_position((0.0, target[1], 0.0))  # the coronal plane through the voxel
    qtbot.wait(50)

    # click the voxel in the coronal panel: x and z move, the axial slice and the sagittal plane follow
    px, py = coronal.world_to_pixel(target[2], target[0])
    qtbot.mouseClick(coronal, Qt.LeftButton, pos=QPoint(int(round(px)), int(round(py))))
    qtbot.wait(50)
    np.testing.assert_allclose(ortho.position, target, atol=2.01)
    z_axis = viewer.dims.ndim - 3
    assert abs(viewer.dims.point[z_axis] - target[0]) <= 2.01  # napari's axial slice moved
    assert ortho.position[0] == viewer.dims.point[z_axis]
    ortho.render_now()
    assert ortho._shown_at["sagittal"] == pytest.approx(ortho.position[2])
    cross = L.find_layer(viewer, O.CROSSHAIR_ROLE)  # on the axial canvas, at (y, x)
    assert O.crosshair_position(cross) == pytest.approx(tuple(ortho.position[1:]))
    # the explorer's voxel panel shows the clicked voxel
    assert str(f"{target[2]:+.0f}") in explorer.voxel_label.text()
    qtbot.wait(50)

    # pixels: the sagittal panel draws its crosshair at the voxel's (y, z), and the voxel hot
    for panel, (h, v) in ((sagittal, (ortho.position[1], ortho.position[0])),
                          (coronal, (ortho.position[2], ortho.position[0]))):
        rgb = _grab(panel)
        cx, cy = (int(round(c)) for c in panel.world_to_pixel(h, v))
        cross = _crosshair_mask(rgb)
        column = cross[:, cx - 1: cx + 2].any(1)
        row = cross[cy - 1: cy + 2, :].any(0)
        assert column.sum() > 0.5 * panel.image_rect().height(), (panel.plane, column.sum())
        assert row.sum() > 0.5 * panel.image_rect().width(), (panel.plane, row.sum())
        assert _hot(rgb[cy - 1: cy + 2, cx - 1: cx + 2]).all(), (panel.plane, rgb[cy, cx])
    viewer.window._qt_window.grab().save(str(artifacts_dir / "napari_1366x768_orthogonal_views.png"))

    # the threshold above the planted value: the voxel is no longer coloured in the panels
    hot_at = sagittal.world_to_pixel(ortho.position[1], ortho.position[0])
    explorer.threshold_slider.setValue(float(truth["z"][i, j, k, 1]) + 0.5)
    qtbot.wait(50)
    ortho.render_now()
    rgb = _grab(sagittal)
    cx, cy = (int(round(c)) for c in hot_at)
    assert not _hot(rgb[cy, cx][None, None]).any(), rgb[cy, cx]

    # a click on the axial canvas moves y and x (a press and release without a drag)
    canvas = viewer.window._qt_viewer.canvas.native
    z_before = viewer.dims.point[z_axis]
    pos = QPoint(canvas.width() // 2 + 60, canvas.height() // 2 - 40)
    qtbot.mouseClick(canvas, Qt.LeftButton, pos=pos)
    qtbot.wait(50)
    np.testing.assert_allclose(ortho.position[1:], np.asarray(viewer.cursor.position)[-2:], atol=1e-6)
    assert ortho.position[0] == z_before
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    scale = shot.shape[1] / canvas.width()
    # the crosshair's pixels: what changes when its layer is hidden (a thin white line is
    # blended with the grey template it crosses)
    cross_layer = L.find_layer(viewer, O.CROSSHAIR_ROLE)
    cross_layer.visible = False
    qtbot.wait(30)
    bare = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    cross_layer.visible = True
    cross = np.abs(shot - bare).sum(-1) > 60
    cols = np.flatnonzero(cross.sum(0) > 0.3 * shot.shape[0])
    rows = np.flatnonzero(cross.sum(1) > 0.3 * shot.shape[1])
    assert cols.size and abs(cols.mean() - pos.x() * scale) <= 3, (cols, pos.x() * scale)
    assert rows.size and abs(rows.mean() - pos.y() * scale) <= 3, (rows, pos.y() * scale)

    # the radiological convention mirrors the coronal panel (R on the left), as the canvas
    ortho.render_now()
    before = coronal._buffer.copy()
    display.set_convention("radiological", viewer)
    try:
        ortho.render_now()
        np.testing.assert_array_equal(coronal._buffer, before[:, ::-1])
        assert coronal._letters() == ("R", "L")
    finally:
        display.set_convention("neurological", viewer)
