"""Atom explorer, networks panel and screenshots, on the tiny SIMULATED result folder."""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from qtpy.QtCore import Qt  # noqa: E402

from napari_brainorg._napari import layers as L  # noqa: E402
from napari_brainorg._napari.explorer import AtomExplorer  # noqa: E402
from napari_brainorg._napari.networks_widget import NetworksWidget, visible_labels  # noqa: E402

pytestmark = pytest.mark.gui


def _explorer(viewer, qtbot, path):
    explorer = AtomExplorer(viewer)
    viewer.window.add_dock_widget(explorer, name="Atom explorer")
    with qtbot.waitSignal(explorer.loaded, timeout=30000):
        L.add_result_layers(viewer, path)
    return explorer


def _click_row(qtbot, table, row):
    rect = table.visualItemRect(table.item(row, 1))
    qtbot.mouseClick(table.viewport(), Qt.LeftButton, pos=rect.center())


def _atom_layers(viewer):
    return [layer for layer in viewer.layers if layer.metadata.get(L.ROLE) == "atom_map"]


def test_clicking_a_row_shows_exactly_that_atom_in_place(make_napari_viewer, qtbot, tiny_result):
    path, truth = tiny_result
    viewer = make_napari_viewer()
    explorer = _explorer(viewer, qtbot, path)
    table = explorer.table
    assert table.rowCount() == 4
    n_layers = len(viewer.layers)
    (layer,) = _atom_layers(viewer)
    # one colour scale for every atom: the largest 99.9th percentile of |map|
    limit = max(float(np.quantile(np.abs(truth["z"][..., a][truth["mask"]]), 0.999)) for a in range(4))

    for atom in (1, 2, 0, 3):
        _click_row(qtbot, table, explorer.row_of_atom(atom))
        assert explorer.atom == atom
        assert _atom_layers(viewer) == [layer]  # the same layer, updated in place
        assert len(viewer.layers) == n_layers
        expected = truth["z"][..., atom].transpose(2, 1, 0)
        np.testing.assert_allclose(layer.data, expected * truth["mask"].T, atol=1e-6)
        assert layer.metadata["atom"] == atom
        assert layer.contrast_limits == pytest.approx([-limit, limit], rel=1e-5)

    # world placement: a known Default-network voxel of atom 1 (+5 planted)
    _click_row(qtbot, table, explorer.row_of_atom(1))
    i, j, k = np.argwhere((truth["atlas"] == 7) & truth["mask"])[10]
    world = L.world_of_voxel(truth["affine"], (i, j, k))
    np.testing.assert_allclose(layer.data_to_world([k, j, i]), world)
    np.testing.assert_allclose(world, (truth["affine"] @ [i, j, k, 1])[:3][::-1])
    viewer.dims.set_point(0, world[0])
    assert layer.get_value(world, world=True) == pytest.approx(truth["z"][i, j, k, 1])
    assert layer.get_value(world, world=True) > 3.0

    # sorting by number of ANs, then clicking the first row shows the atom with fewest ANs
    table.sortItems(1, Qt.AscendingOrder)
    _click_row(qtbot, table, 0)
    assert explorer.atom == int(np.argmin(truth["hist"].sum(1)))

    # its time course and layer histogram are what the result holds
    atom = explorer.atom
    np.testing.assert_allclose(explorer.timecourse.line.get_ydata(), truth["atoms"][:, atom], rtol=1e-6)
    heights = [bar.get_height() for bar in explorer.histogram.bars]
    np.testing.assert_array_equal(heights, truth["hist"][atom])


def test_timecourse_shows_the_words_of_the_volume_under_the_cursor(make_napari_viewer, qtbot, tiny_result):
    path, truth = tiny_result
    viewer = make_napari_viewer()
    explorer = _explorer(viewer, qtbot, path)
    canvas = explorer.timecourse
    words = truth["words"]
    volume = int(words["volume"].iloc[-1])  # "pie man" at 9.1-9.4 s, TR 1.5 -> volume 6
    expected = " ".join(words.loc[words["volume"] == volume, "word"])
    # a mouse move over the plot at that volume's time, as matplotlib delivers it
    from matplotlib.backend_bases import MouseEvent

    canvas.draw()
    x, y = canvas.ax.transData.transform((volume * 1.5, float(np.mean(canvas.ax.get_ylim()))))
    canvas.callbacks.process("motion_notify_event", MouseEvent("motion_notify_event", canvas, x, y))
    assert canvas.words_text.get_text().endswith(expected)
    assert expected == "pie man"
    assert canvas.cursor.get_xdata()[0] == pytest.approx(volume * 1.5)


def test_moving_the_threshold_changes_what_is_shown(make_napari_viewer, qtbot, tiny_result):
    path, truth = tiny_result
    viewer = make_napari_viewer()
    explorer = _explorer(viewer, qtbot, path)
    explorer.select_atom(1)
    layer = _atom_layers(viewer)[0]
    data_before = layer.data.copy()
    z = layer.data

    def shown(thr):
        alpha = L.visible_fraction(layer, z)
        return alpha > 0.5

    counts = {}
    for thr in (1.0, 3.0, 5.5):
        explorer.threshold_slider.setValue(thr)  # the slider, as a user drags it
        assert layer.metadata["threshold"] == pytest.approx(thr)
        visible = shown(thr)
        counts[thr] = int(visible.sum())
        # exactly the voxels at or above the threshold in absolute value are drawn
        np.testing.assert_array_equal(visible[np.abs(z) > thr * 1.01], True)
        np.testing.assert_array_equal(visible[np.abs(z) < thr * 0.99], False)
    assert counts[1.0] > counts[3.0] > counts[5.5] > 0
    # the user widens the contrast limits in napari's controls: the threshold still holds
    layer.contrast_limits = (-12.0, 12.0)
    visible = shown(5.5)
    np.testing.assert_array_equal(visible[np.abs(z) > 5.5 * 1.01], True)
    np.testing.assert_array_equal(visible[np.abs(z) < 5.5 * 0.99], False)
    np.testing.assert_array_equal(layer.data, data_before)  # only the colormap moved
    # both parts stay: deactivated (blue) and activated (red) voxels above 3
    explorer.threshold_slider.setValue(3.0)
    rgba = layer.colormap.map(np.clip((z - layer.contrast_limits[0]) / np.ptp(layer.contrast_limits), 0, 1).ravel())
    rgba = rgba.reshape(z.shape + (4,))
    assert rgba[z < -3][:, 2].min() > 0.9 and rgba[z > 3][:, 0].min() > 0.8

    # the R² layer has its own threshold
    r2 = L.find_layer(viewer, "r2")
    explorer.r2_slider.setValue(0.1)
    assert r2.contrast_limits[0] == pytest.approx(0.1)
    assert L.visible_fraction(r2, np.array([0.05, 0.15])).tolist() == pytest.approx([0.0, 1.0], abs=0.02)
    assert layer.metadata["threshold"] == pytest.approx(3.0)  # the atom map's threshold is untouched


def test_networks_colours_names_and_toggling(make_napari_viewer, qtbot, tiny_result):
    path, truth = tiny_result
    viewer = make_napari_viewer()
    widget = NetworksWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Brain networks")
    L.add_result_layers(viewer, path)
    layer = widget.layer
    assert layer is L.find_layer(viewer, "networks")
    assert widget.list.count() == 7
    # shown on a 2 mm grid (each 4 mm voxel split in 8, same world positions)
    up, _ = L.upsample_labels(truth["atlas"].astype(np.int32), truth["affine"])
    np.testing.assert_array_equal(layer.data, up.transpose(2, 1, 0))
    # outline colours that no map value takes: far from every colour of the atom map's
    # diverging colormap (blue-cyan, red-yellow) and of the R² colormap
    map_colours = np.vstack([L.diverging_threshold_colormap(2.3, 8.0).map(np.linspace(0, 1, 401)),
                             L.sequential_threshold_colormap().map(np.linspace(0, 1, 401))])
    map_colours = map_colours[map_colours[:, 3] > 0.5, :3]
    outline = layer.colormap.map(np.arange(1, 8))[:, :3]
    distance = np.linalg.norm(outline[:, None, :] - map_colours[None], axis=2).min(1)
    assert distance.min() > 0.25, distance
    assert layer.contour > 0  # drawn as outlines
    # the name under the mouse: napari's status for a Default-network voxel
    i, j, k = np.argwhere(truth["atlas"] == 7)[5]
    world = L.world_of_voxel(truth["affine"], (i, j, k))
    viewer.dims.set_point(0, world[0])
    status = layer.get_status(world, world=True)
    assert "network: Default" in status["coordinates"]
    viewer.layers.selection.active = layer
    viewer.mouse_over_canvas = True
    viewer.cursor.position = world
    assert "network: Default" in str(viewer._calc_status_from_cursor()[0])

    # toggling Default off (checkbox) makes it transparent, others keep their colour
    item = widget.list.item(6)
    assert item.data(Qt.UserRole) == 7
    item.setCheckState(Qt.Unchecked)
    assert 7 not in visible_labels(layer)
    assert layer.colormap.map(np.array([7]))[0, 3] == 0
    assert layer.colormap.map(np.array([1]))[0, 3] > 0.9
    item.setCheckState(Qt.Checked)
    assert layer.colormap.map(np.array([7]))[0, 3] > 0.9
    widget.outline.setChecked(False)
    assert layer.contour == 0


def _colour_classes(img):
    rgb = img[..., :3].astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    grey = (np.abs(r - g) < 12) & (np.abs(g - b) < 12) & (r > 40)
    hot = (r > 170) & (b < 90) & (r - b > 120)  # red..yellow: activated
    cold = (b > 170) & (r < 120) & (b - r > 80)  # blue..cyan: deactivated
    return grey, hot, cold


def test_screenshot_shows_the_overlay_on_the_template(make_napari_viewer, qtbot, tiny_result, artifacts_dir):
    import imageio.v3 as iio

    path, truth = tiny_result
    viewer = make_napari_viewer(show=True)
    explorer = _explorer(viewer, qtbot, path)
    viewer.window._qt_window.resize(1400, 900)
    qtbot.wait(50)
    explorer.select_atom(1)  # +5 in Default, -5 in Somatomotor
    explorer.threshold_slider.setValue(3.0)
    # the axial slice (z, mm) where both planted networks have the most voxels
    atlas = truth["atlas"]
    both = np.minimum((atlas == 7).sum((0, 1)), (atlas == 2).sum((0, 1)))
    z_mm = float((truth["affine"] @ [0, 0, int(np.argmax(both)), 1])[2])
    viewer.dims.set_point(0, z_mm)
    viewer.reset_view()

    networks = L.find_layer(viewer, "networks")
    networks.visible = False
    qtbot.wait(50)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    iio.imwrite(artifacts_dir / "napari_atom1_on_template.png", shot)
    grey, hot, cold = _colour_classes(shot)
    assert grey.sum() > 2000, "the template is not visible"
    assert hot.sum() > 300, "no activated (red/yellow) overlay"
    assert cold.sum() > 300, "no deactivated (blue) overlay"

    # the overlay lies on the brain: the same pixels show template when the map is hidden
    atom_layer = _atom_layers(viewer)[0]
    atom_layer.visible = False
    qtbot.wait(50)
    under = viewer.screenshot(canvas_only=True, flash=False)
    grey_under, _, _ = _colour_classes(under)
    assert grey_under[hot | cold].mean() > 0.9
    assert not (hot | cold)[_colour_classes(under)[1] | _colour_classes(under)[2]].any()

    # a higher threshold draws fewer coloured pixels
    atom_layer.visible = True
    explorer.threshold_slider.setValue(5.5)
    qtbot.wait(50)
    _, hot_high, cold_high = _colour_classes(viewer.screenshot(canvas_only=True, flash=False))
    assert hot_high.sum() + cold_high.sum() < 0.5 * (hot.sum() + cold.sum())

    # with the network outlines (colours no map value takes) on, for the record
    explorer.threshold_slider.setValue(3.0)
    networks.visible = True
    qtbot.wait(50)
    full = viewer.screenshot(canvas_only=True, flash=False)
    iio.imwrite(artifacts_dir / "napari_atom1_networks.png", full)
    colours = networks.colormap.map(np.array([7, 2]))[:, :3]
    for rgb in np.round(255 * colours).astype(int):
        close = np.abs(full[..., :3].astype(int) - rgb).max(-1) < 40
        assert close.sum() > 20, f"no outline in colour {rgb}"


def test_axial_view_has_anterior_up_and_the_subjects_right_on_the_right(make_napari_viewer, qtbot,
                                                                        tiny_result):
    """A block placed at x > 0 (right), y > 0 (anterior) in world space shows up right and up."""
    path, _ = tiny_result
    viewer = make_napari_viewer(show=True)
    L.add_result_layers(viewer, path)
    for layer in viewer.layers:
        layer.visible = layer.metadata.get(L.ROLE) == "template"
    block = np.zeros((3, 40, 40), np.float32)
    block[:, 10:25, 10:25] = 1.0  # RAS 2 mm grid from (x, y) = (0, 0): x 20..50 mm, y 20..50 mm
    affine = np.array([[2.0, 0, 0, 0.0], [0, 2.0, 0, 0.0], [0, 0, 2.0, -2.0], [0, 0, 0, 1]])
    viewer.add_image(block, affine=L.napari_affine(affine), colormap="green", blending="additive",
                     contrast_limits=(0, 1))
    viewer.dims.set_point(0, 0.0)
    viewer.reset_view()
    qtbot.wait(50)
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    green = (shot[..., 1] > 200) & (shot[..., 0] < shot[..., 1] - 60)
    brain = shot.max(-1) > 30
    assert green.sum() > 50
    rows, cols = np.nonzero(brain)
    g_rows, g_cols = np.nonzero(green)
    assert g_cols.mean() > cols.mean() + 10, "x > 0 (the subject's right) is not on the right"
    assert g_rows.mean() < rows.mean() - 10, "y > 0 (anterior) is not up"


def test_top_words_of_the_selected_atom_at_1366x768(make_napari_viewer, qtbot, tiny_result, artifacts_dir):
    """The words that most activate / suppress the selected atom, with their context."""
    path, truth = tiny_result
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    explorer = AtomExplorer(viewer)
    L.dock_tabbed(viewer, explorer, "Atom explorer")
    with qtbot.waitSignal(explorer.loaded, timeout=30000):
        L.add_result_layers(viewer, path)
    explorer.lower_tabs.setCurrentIndex(1)
    page = explorer.words_page
    for atom in (2, 1):
        explorer.select_atom(atom)
        words = truth["words"]["word"].tolist()
        # strongest first (its passage's heading above it when the passage holds several words)
        for lst, word, sign in ((explorer.top_up, words[atom], "+"), (explorer.top_down, words[8 - atom], "-")):
            first = next(lst.item(n) for n in range(lst.count()) if lst.item(n).data(Qt.UserRole) == "word")
            assert first.text().strip().startswith(f"{word}  {sign}") and f"[{word}]" in first.toolTip()
            assert lst.row(first) == (1 if lst.item(0).data(Qt.UserRole) == "passage" else 0)
        # five occurrences listed (a repeat inside one shown context is one "×2" entry)
        listed = page.word_items(explorer.top_up)
        assert sum(int(t.split("×")[1].split()[0]) if "×" in t else 1 for t in listed) == 5, listed
        assert page.up_note.text()
    qtbot.wait(100)
    viewer.window._qt_window.grab().save(str(artifacts_dir / "napari_1366x768_top_words.png"))


def test_voxel_panel_shows_every_atom_at_a_clicked_voxel(make_napari_viewer, qtbot, tiny_result, artifacts_dir):
    path, truth = tiny_result
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    explorer = AtomExplorer(viewer)
    L.dock_tabbed(viewer, explorer, "Atom explorer")
    with qtbot.waitSignal(explorer.loaded, timeout=30000):
        L.add_result_layers(viewer, path)
    assert explorer._on_canvas_press in viewer.mouse_drag_callbacks
    explorer.lower_tabs.setCurrentIndex(2)
    inside = truth["mask"] & L.inside_mni_brain(truth["affine"], truth["mask"].shape)
    i, j, k = np.argwhere((truth["atlas"] == 7) & inside)[12]  # a Default-network voxel
    world = L.world_of_voxel(truth["affine"], (i, j, k))
    viewer.dims.set_point(0, world[0])
    assert explorer.show_voxel(world) is not None
    heights = np.array([bar.get_height() for bar in explorer.voxel_plot.bars])
    np.testing.assert_allclose(heights, truth["z"][i, j, k], rtol=1e-6)
    # atom 1 is associated with Default (planted +5): its bar is marked, the others not
    colours = [bar.get_facecolor()[:3] for bar in explorer.voxel_plot.bars]
    assert colours[1] != colours[0] and colours[0] == colours[2] == colours[3]
    text = explorer.voxel_label.text()
    x, y, z = (truth["affine"] @ [i, j, k, 1])[:3]
    assert f"MNI x, y, z = ({x:+.0f}, {y:+.0f}, {z:+.0f}) mm" in text
    assert f"R² = {truth['r2'][i, j, k]:.3f}" in text and "Default" in text
    # outside the brain: said so, nothing drawn anew
    assert explorer.show_voxel(np.array([0.0, 0.0, 200.0])) is None
    explorer.show_voxel(world)
    qtbot.wait(100)
    viewer.window._qt_window.grab().save(str(artifacts_dir / "napari_1366x768_voxel.png"))


def test_threshold_zero_keeps_empty_voxels_clear(make_napari_viewer, qtbot, tiny_result):
    """At threshold 0 every map value shows, but the zeros outside the brain stay transparent."""
    path, _ = tiny_result
    viewer = make_napari_viewer()
    explorer = _explorer(viewer, qtbot, path)
    explorer.threshold_slider.setValue(0.0)
    explorer.r2_slider.setValue(0.0)
    (layer,) = _atom_layers(viewer)
    assert L.visible_fraction(layer, np.array([0.0])).tolist() == [0.0]
    assert (L.visible_fraction(layer, np.array([-0.05, 0.05])) > 0.9).all()
    r2 = L.find_layer(viewer, "r2")
    assert r2.visible  # moving its slider shows the R² layer
    assert L.visible_fraction(r2, np.array([0.0, -0.1])).tolist() == [0.0, 0.0]
    assert L.visible_fraction(r2, np.array([0.02]))[0] > 0.5


def test_voxel_panel_shows_measured_and_the_encoders_prediction(make_napari_viewer, qtbot, tiny_result,
                                                               artifacts_dir):
    """The clicked voxel's measured course is the preprocessed fMRI and its predicted course
    the sparse encoder's own prediction, both recomputed here from the SIMULATED BOLD."""
    from napari_brainorg.encoding.preprocessing import highpass
    from napari_brainorg.encoding.sparse_fit import SparseAtomEncoder
    from napari_brainorg.pipeline.config import EncodingConfig

    path, truth = tiny_result
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    explorer = AtomExplorer(viewer)
    L.dock_tabbed(viewer, explorer, "Atom explorer")
    with qtbot.waitSignal(explorer.loaded, timeout=30000):
        L.add_result_layers(viewer, path)
    explorer.lower_tabs.setCurrentIndex(2)
    inside = truth["mask"] & L.inside_mni_brain(truth["affine"], truth["mask"].shape)
    i, j, k = np.argwhere((truth["atlas"] == 7) & inside)[12]  # a Default-network voxel
    column = int(np.cumsum(truth["mask"].ravel())[np.ravel_multi_index((i, j, k), truth["mask"].shape)] - 1)
    world = L.world_of_voxel(truth["affine"], (i, j, k))
    viewer.dims.set_point(0, world[0])
    assert explorer.show_voxel(world) is not None

    cfg = EncodingConfig()
    X = highpass(truth["atoms"], 1.5, cutoff=cfg.highpass_cutoff)
    measured, predicted = [], []
    for Y in truth["bold"]:
        y = highpass(Y[:, [column]], 1.5, cutoff=cfg.highpass_cutoff)
        measured.append(y[:, 0])
        predicted.append(SparseAtomEncoder(alpha=cfg.sparse_alpha).fit(X, y).predict(X)[:, 0])
    canvas = explorer.voxel_timecourse
    combo = explorer.voxel_subject_combo
    assert [combo.itemText(n) for n in range(combo.count())] == ["mean over subjects", *truth["subjects"]]
    # group mean
    np.testing.assert_allclose(canvas.measured_line.get_ydata(), np.mean(measured, 0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(canvas.line.get_ydata(), np.mean(predicted, 0), rtol=1e-5, atol=1e-4)
    assert np.ptp(predicted[0]) > 1.0  # a planted voxel: the prediction is not flat
    # one subject
    combo.setCurrentIndex(2)
    np.testing.assert_allclose(canvas.measured_line.get_ydata(), measured[1], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(canvas.line.get_ydata(), predicted[1], rtol=1e-5, atol=1e-4)
    assert not np.allclose(measured[0], measured[1], atol=1e-3)
    assert "sparse fit (in sample)" in explorer.voxel_course_label.text()
    assert "SparseAtomEncoder.predict" in explorer.voxel_course_label.toolTip()
    # the words of a volume on hover, as in the atom time course
    volume = int(truth["words"]["volume"].iloc[-1])
    assert canvas.show_volume(canvas.volume_at(volume * 1.5)) == explorer.state.words[volume] != ""
    combo.setCurrentIndex(0)
    qtbot.wait(150)
    viewer.window._qt_window.grab().save(str(artifacts_dir / "napari_1366x768_voxel_timecourse.png"))


def test_a_voxels_time_course_redraws_only_its_data_and_looks_as_a_full_draw(qtbot):
    """Another voxel (another value range) is drawn over the cached background, the y axis
    with the lines: no full draw of the figure, and the same pixels as one."""
    from napari_brainorg._napari._plots import VoxelTimecourseCanvas

    canvas = VoxelTimecourseCanvas()
    qtbot.addWidget(canvas)
    canvas.resize(420, 200)
    canvas.show()
    canvas.set_story(1.5, ["word"] * 120)
    rng = np.random.default_rng(0)
    measured = rng.normal(0.0, 1.0, 120)
    canvas.set_voxel(measured, 0.5 * measured)
    qtbot.waitUntil(lambda: canvas._background is not None, timeout=5000)
    full_draws = []
    canvas.mpl_connect("draw_event", full_draws.append)
    before = canvas.ax.get_ylim()
    canvas.set_voxel(40.0 * measured, 20.0 * measured, 30.0 * measured)  # another range: other y ticks
    qtbot.wait(100)
    assert canvas.ax.get_ylim() != before and not full_draws
    blitted = np.asarray(canvas.buffer_rgba()).copy()
    canvas.draw()
    assert len(full_draws) == 1
    np.testing.assert_array_equal(blitted, np.asarray(canvas.buffer_rgba()))


def test_the_voxel_description_keeps_its_tallest_height(qtbot):
    """A shorter description (a voxel outside every network) does not shrink the label, so
    the plots under it keep their size (a canvas that changes size draws itself anew)."""
    from qtpy.QtWidgets import QLabel

    from napari_brainorg._napari._explorer_pages import VoxelPage

    page = VoxelPage()
    qtbot.addWidget(page)
    page.resize(300, 400)
    page.show()
    long = "MNI x, y, z = (-2, +26, +44) mm · left frontoparietal (its associated atoms green) · R² = 0.014"
    page.label.setText(long)
    qtbot.wait(50)
    tall, plot = page.label.height(), page.timecourse.height()
    short = "MNI x, y, z = (-20, +68, +8) mm"
    page.label.setText(short)
    qtbot.wait(50)
    assert page.label.height() == tall and page.timecourse.height() == plot
    probe = QLabel(short)  # a plain label: the height the short text alone needs
    probe.setWordWrap(True)
    probe.setFont(page.label.font())
    assert probe.heightForWidth(page.label.width()) < tall
