"""Panels read docked at 1366 x 768, and the smaller things a neuroscientist sees first: which
layer is active, the status bar, the slice slider in mm, the corner label, an R² map's colours.

Real napari under Xvfb, on the tiny SIMULATED result (tests/_napari/conftest.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

napari = pytest.importorskip("napari")

from qtpy.QtCore import Qt  # noqa: E402

from napari_brainorg._napari import display  # noqa: E402
from napari_brainorg._napari import layers as L  # noqa: E402

pytestmark = pytest.mark.gui


def _open(viewer, qtbot, path, **kwargs):
    from napari_brainorg._napari.view import open_viewer

    viewer.window._qt_window.resize(1366, 768)
    open_viewer(path, viewer=viewer, **kwargs)
    explorer = viewer.window.dock_widgets["Atom explorer"]
    qtbot.waitUntil(lambda: explorer.shown_state is not None, timeout=30000)
    qtbot.wait(100)
    return explorer


def _shown_height(widget) -> int:
    """Height (px) of the part of ``widget`` on screen."""
    return widget.visibleRegion().boundingRect().height() if widget.isVisible() else 0


def _planted_voxel(truth):
    inside = truth["mask"] & L.inside_mni_brain(truth["affine"], truth["mask"].shape)
    i, j, k = np.argwhere((truth["atlas"] == 7) & inside)[12]  # a Default-network voxel
    return (i, j, k), L.world_of_voxel(truth["affine"], (i, j, k))


# -- three views beside the explorer -------------------------------------------------------

def test_brainorg_view_shows_three_views_the_table_and_plots_at_once(make_napari_viewer, qtbot, tiny_result,
                                                                     artifacts_dir):
    from qtpy.QtWidgets import QDockWidget, QTabBar

    from napari_brainorg._napari.orthoviews import PANEL_NAME, on_screen

    viewer = make_napari_viewer(show=True)
    explorer = _open(viewer, qtbot, tiny_result[0])
    window = viewer.window._qt_window
    ortho = viewer.window.dock_widgets[PANEL_NAME]
    qtbot.waitUntil(lambda: ortho.panels["coronal"].image is not None, timeout=10000)
    canvas = viewer.window._qt_viewer.canvas.native
    for widget in (canvas, ortho.panels["coronal"], ortho.panels["sagittal"], explorer.table, explorer.timecourse,
                   explorer.histogram):
        assert on_screen(widget), type(widget).__name__
    assert canvas.width() >= 500 and canvas.height() >= 350, (canvas.width(), canvas.height())
    for panel in ortho.panels.values():
        assert panel.width() >= 150 and panel.height() >= 140
    assert window.minimumSizeHint().height() <= 740
    # the crosshair is shared: a peak found by the explorer is where the panels cut
    explorer.select_atom(1)
    assert np.allclose(ortho.position[1:], explorer.peak[1:])  # z: the axial slice nearest the peak
    assert abs(ortho.position[0] - explorer.peak[0]) <= viewer.dims.range[viewer.dims.ndim - 3].step / 2 + 1e-6
    # no name cut short: the dock titles and the tabs (vertical, on the window's edge) hold their text
    for dock in window.findChildren(QDockWidget):
        label = getattr(dock.titleBarWidget(), "title", None)
        if dock.isVisible() and label is not None and label.text():
            assert label.fontMetrics().horizontalAdvance(label.text()) <= label.width(), label.text()
    bars = [bar for bar in window.findChildren(QTabBar) if bar.isVisible() and bar.count() > 1
            and bar.parent() is window]
    assert bars
    for bar in bars:
        for n in range(bar.count()):
            rect = bar.tabRect(n)
            length = max(rect.width(), rect.height())
            assert bar.fontMetrics().horizontalAdvance(bar.tabText(n)) < length, bar.tabText(n)
    window.grab().save(str(artifacts_dir / "napari_1366x768_workspace.png"))


def test_the_crosshair_is_no_green_and_no_network_or_map_colour():
    import colorsys

    from napari_brainorg._napari.orthoviews import CROSSHAIR_COLOR

    r, g, b = CROSSHAIR_COLOR[:3]
    hue, saturation, value = colorsys.rgb_to_hsv(r, g, b)
    assert saturation < 0.15 or not (70 / 360 <= hue <= 170 / 360), CROSSHAIR_COLOR
    assert value > 0.8  # bright on the dark background and the template


# -- voxel panel -------------------------------------------------------------------------------

def test_voxel_plots_are_legible_docked_and_name_their_models(make_napari_viewer, qtbot, tiny_result, tmp_path,
                                                               artifacts_dir):
    """Plots >= 120 px tall docked at 1366 x 768; the R² says it is the held-out ridge's, the r
    that it is the in-sample sparse fit's; a saved held-out prediction is drawn on request."""
    import shutil

    path, truth = tiny_result
    copy = tmp_path / "with_heldout"
    shutil.copytree(path, copy)
    from napari_brainorg.io.results import ResultFolder

    predicted = np.asarray(ResultFolder(copy).voxel_timecourses("minilm")["predicted"])
    rng = np.random.default_rng(5)
    heldout = (0.5 * predicted + rng.normal(0, 1.0, predicted.shape)).astype(np.float32)
    np.save(copy / "encoding/minilm/voxel_predicted_heldout.npy", heldout)

    viewer = make_napari_viewer(show=True)
    explorer = _open(viewer, qtbot, copy, pipeline=False)
    explorer.lower_tabs.setCurrentWidget(explorer.voxel_page)
    (i, j, k), world = _planted_voxel(truth)
    assert explorer.show_voxel(world) is not None
    qtbot.wait(100)
    for plot in (explorer.voxel_plot, explorer.voxel_timecourse):
        assert _shown_height(plot) >= 120, (type(plot).__name__, _shown_height(plot))
        assert plot.visibleRegion().boundingRect().width() >= 100
    text = explorer.voxel_label.text()
    assert f"ridge, held-out: R² = {truth['r2'][i, j, k]:.3f}" in text
    course = explorer.voxel_course_label.text()
    assert "sparse fit (in sample): r = " in course and "held-out" not in course
    # the held-out prediction: offered, drawn when asked, its r named
    check = explorer.voxel_page.heldout_check
    assert check.isVisible()
    check.setChecked(True)
    column = explorer.voxel_column
    np.testing.assert_allclose(explorer.voxel_timecourse.heldout_line.get_ydata(), heldout[:, column, :].mean(0),
                               rtol=1e-5, atol=1e-5)
    measured = np.asarray(explorer.voxel_timecourse.measured_line.get_ydata())
    r = np.corrcoef(measured, heldout[:, column, :].mean(0))[0, 1]
    assert f"held-out prediction: r = {r:.2f}" in explorer.voxel_course_label.text()
    viewer.window._qt_window.grab().save(str(artifacts_dir / "napari_1366x768_voxel_docked.png"))
    # a result without one offers nothing
    explorer.set_result(path)
    qtbot.waitUntil(lambda: explorer.shown_state.result.path == path, timeout=30000)
    explorer.show_voxel(world)
    assert not check.isVisible() and len(explorer.voxel_timecourse.heldout_line.get_ydata()) == 0


# -- top words ---------------------------------------------------------------------------------

def _rows(words, onsets, responses, volumes=None, context=(6, 4)):
    from napari_brainorg.analyses.top_words import top_words_table

    n = len(words)
    volumes = np.arange(n) // 3 if volumes is None else volumes
    return top_words_table(np.asarray(responses, float)[:, None], words, onsets, volumes, n_top=n, context=context)


def test_top_words_in_one_passage_are_said_to_be_and_repeats_merged():
    from napari_brainorg._napari._top_words import passage_note, word_passages

    # a stutter ("So I I saw") in a passage at 46-50 s, two lone words far away
    words = ["So", "I", "I", "saw", "her", "there", "late", "and", "then", "pie"]
    onsets = [46.0, 46.3, 46.5, 46.8, 47.2, 47.9, 48.6, 49.3, 50.2, 120.0]
    responses = [0.1, 3.0, 2.9, 2.0, 1.5, 1.2, 1.1, 1.0, 0.9, 2.5]
    top = _rows(words, onsets, responses)
    up = top[(top["direction"] == "activate") & (top["rank"] <= 9)]  # drops "So", the weakest
    passages = word_passages(up)
    first = passages[0]
    assert (first.start, first.end) == (46.3, 50.2) and first.span() == "46–51 s"
    entries = {e.word: e for e in first.entries}
    assert entries["I"].indices == [1, 2] and entries["I"].rank == 1  # one entry for both
    assert sum(e.word == "I" for e in first.entries) == 1
    assert "[I] [I] saw" in entries["I"].context and "[I] [I] [saw] [her]" in first.text
    assert first.n_words == 8
    assert [p.span() for p in passages[1:]] == ["120.0 s"]
    assert passage_note(passages) == "8 of 9 from one passage: 46–51 s"
    # every listed word in one passage, named by its story
    stories = [{"story": "pieman", "first_volume": 0}]
    assert passage_note(word_passages(up[up["onset"] < 100], stories)) == "all 8 from one passage: 46–51 s of pieman"
    # scattered words are said to be scattered; a repeat outside the shown context is no repeat
    far = _rows(["the", "a", "the", "x", "y"], [1.0, 20.0, 40.0, 60.0, 80.0], [3, 2, 1, 0, -1])
    scattered = word_passages(far[far["direction"] == "activate"].head(3))
    assert passage_note(scattered) == "3 words from 3 passages"
    assert sorted(len(e.indices) for p in scattered for e in p.entries) == [1, 1, 1]


def test_a_passage_never_crosses_a_story_boundary():
    from napari_brainorg._napari._top_words import word_passages

    top = _rows(["end", "of", "one", "start", "of", "two"], [100.0, 100.5, 101.0, 102.0, 102.4, 103.0],
                [3, 2, 1, 3.1, 2.1, 1.1], volumes=np.array([66, 66, 67, 68, 68, 68]))
    stories = [{"story": "pieman", "first_volume": 0}, {"story": "tunnel", "first_volume": 68}]
    passages = word_passages(top[top["direction"] == "activate"], stories)
    assert sorted((p.story, p.n_words) for p in passages) == [("pieman", 3), ("tunnel", 3)]


def test_top_words_show_five_entries_docked(make_napari_viewer, qtbot, tiny_result, tmp_path, artifacts_dir):
    """Docked at 1366 x 768 (``brainorg view``), at least five entries of each list are on screen."""
    import shutil

    from napari_brainorg.io.results import ResultFolder

    path = tmp_path / "fifteen"
    shutil.copytree(tiny_result[0], path)
    # 15 words per atom, as the pipeline writes them
    result = ResultFolder(path)
    words = result.words_table()
    responses = np.load(path / "atoms/minilm/word_responses.npy")
    from napari_brainorg.analyses.top_words import top_words_table

    table = top_words_table(responses, words["word"], words["onset"] * 10, words["volume"], n_top=15)
    table.to_csv(path / "atoms/minilm/top_words.tsv", sep="\t", index=False)
    viewer = make_napari_viewer(show=True)
    explorer = _open(viewer, qtbot, path)
    explorer.lower_tabs.setCurrentWidget(explorer.words_page)
    explorer.select_atom(1)
    qtbot.wait(100)
    for lst in (explorer.top_up, explorer.top_down):
        assert lst.count() >= 5
        viewport = lst.viewport().rect()
        rows = [lst.visualItemRect(lst.item(n)) for n in range(lst.count())]  # whole rows, top to bottom
        shown = [r for r in rows if r.top() >= viewport.top() and r.bottom() <= viewport.bottom() and r.height() > 0]
        assert len(shown) >= 5 and _shown_height(lst.viewport()) >= 5 * lst.sizeHintForRow(0), len(shown)
    assert explorer.words_page.up_note.text()
    viewer.window._qt_window.grab().save(str(artifacts_dir / "napari_1366x768_top_words_docked.png"))


# -- first sight: active layer, status bar, slider, corner, R² colours --------------------------

@pytest.mark.parametrize("route", ["reader", "brainorg view"])
def test_the_active_layer_after_opening_is_a_map_not_the_atlas(make_napari_viewer, qtbot, tiny_result, route):
    viewer = make_napari_viewer(show=True)
    if route == "reader":
        viewer.open(str(tiny_result[0]), plugin="napari-brainorg")
    else:
        _open(viewer, qtbot, tiny_result[0], pipeline=False)
    # layers arrive one per turn of the event loop (read in a worker): wait for the last one
    qtbot.waitUntil(lambda: L.find_layer(viewer, "networks") is not None
                    and viewer.layers.selection.active is not None
                    and viewer.layers.selection.active.metadata.get(L.ROLE) == "atom_map", timeout=15000)
    assert viewer.layers.selection.active._type_string != "labels"
    assert L.find_layer(viewer, "networks")._type_string == "labels"  # the atlas is there, not active


def test_an_atlas_opened_after_a_map_leaves_the_map_active(make_napari_viewer, qtbot, tiny_result):
    viewer = make_napari_viewer(show=True)
    path = tiny_result[0]
    viewer.open(str(path / "encoding/minilm/atom_maps_z.nii.gz"), plugin="napari-brainorg")
    viewer.open(str(path / "networks/atlas_yeo7.nii.gz"), plugin="napari-brainorg")
    # each file is read in a worker: wait until both layers are in
    names = lambda: [layer.name for layer in viewer.layers]  # noqa: E731
    qtbot.waitUntil(lambda: any(n.startswith("atom_maps_z") for n in names())
                    and any(n.startswith("atlas_yeo7") for n in names()), timeout=15000)
    qtbot.wait(200)
    assert viewer.layers.selection.active._type_string != "labels"
    assert viewer.layers.selection.active.name.startswith("atom_maps_z")


def test_the_status_bar_gives_the_maps_value_under_the_mouse(make_napari_viewer, qtbot, tiny_result):
    path, truth = tiny_result
    viewer = make_napari_viewer(show=True)
    explorer = _open(viewer, qtbot, path, pipeline=False)
    explorer.select_atom(1)
    (i, j, k), world = _planted_voxel(truth)
    template = L.find_layer(viewer, "template")
    viewer.layers.selection.active = template  # another layer selected: the map's value still shows
    status = template.get_status(tuple(world), world=True)
    text = status["coordinates"]
    assert f"atom 1 z = {truth['z'][i, j, k, 1]:+.2f}" in text, text
    assert "network Default" in text
    r2 = L.find_layer(viewer, "r2")
    r2.visible = True
    assert f"R² = {truth['r2'][i, j, k]:.3f}" in template.get_status(tuple(world), world=True)["coordinates"]
    # the map layer's own status names the others, not itself twice
    own = L.find_layer(viewer, "atom_map").get_status(tuple(world), world=True)["coordinates"]
    assert "atom 1 z" not in own and "R² = " in own


def test_the_slice_slider_and_the_corner_speak_mm_and_follow_the_convention(make_napari_viewer, qtbot, tiny_result):
    viewer = make_napari_viewer(show=True)
    _open(viewer, qtbot, tiny_result[0], pipeline=False)
    axis = viewer.dims.ndim - 3
    slider = viewer.window._qt_viewer.dims.slider_widgets[axis]
    viewer.dims.set_point(axis, 18.0)
    z = viewer.dims.point[axis]
    assert slider._brainorg_mm.text() == f"z {z:+.0f} mm" and slider._brainorg_mm.isVisible()
    assert not slider.curslice_label.isVisible()  # no voxel index beside it
    overlay = display._text_overlay(viewer)
    try:
        display.set_convention("radiological", viewer)
        assert "R on left" in overlay.text  # at once, not when the slice next moves
        ortho = next(w for w in viewer.window.dock_widgets.values() if hasattr(w, "convention_combo"))
        assert ortho.convention_combo.currentText() == "radiological"
        ortho.convention_combo.setCurrentIndex(0)
        ortho.convention_combo.activated.emit(0)
        assert display.convention() == "neurological" and "R on right" in overlay.text
    finally:
        display.set_convention("neurological", viewer)


def test_an_r2_map_opened_alone_is_sequential_and_hides_negative_values(tiny_result, tmp_path):
    import nibabel as nib

    from napari_brainorg._napari.reader import nifti_layer_data

    img = nib.load(tiny_result[0] / "encoding/minilm/r2_cv.nii.gz")
    data = np.asarray(img.dataobj, np.float32).copy()
    data[data == 0] = -0.2  # a held-out R² is negative where the model is worse than the mean
    path = tmp_path / "r2_cv.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine), path)
    layer_data, kwargs, kind = nifti_layer_data(path)
    assert kind == "image"
    assert kwargs["colormap"].name == L.sequential_threshold_colormap().name
    lo, hi = kwargs["contrast_limits"]
    positive = data[data > 0]
    assert 0 < lo < hi <= positive.max() and hi >= np.percentile(positive, 90)
    layer = napari.layers.Image(layer_data, **kwargs)
    assert L.visible_fraction(layer, np.array([-0.2, -0.01, 0.0])).tolist() == [0.0, 0.0, 0.0]
    assert L.visible_fraction(layer, np.array([hi]))[0] > 0.9


def test_no_qt_model_warning_while_a_result_opens(make_napari_viewer, qtbot, tiny_result):
    """napari's layer list must not be changed while it is inserting a layer (Qt then reports
    "QSortFilterProxyModel: invalid inserted rows reported by source model")."""
    from qtpy.QtCore import qInstallMessageHandler

    viewer = make_napari_viewer(show=True)
    messages = []
    previous = qInstallMessageHandler(lambda mode, context, message: messages.append(message))
    try:
        _open(viewer, qtbot, tiny_result[0])
        viewer.open(str(tiny_result[0]), plugin="napari-brainorg")
        qtbot.wait(200)
    finally:
        qInstallMessageHandler(previous)
    assert not [m for m in messages if "invalid" in m and "rows" in m], messages
    assert L.find_layer(viewer, "crosshair") is not None  # added, a turn of the event loop later


def test_a_top_words_table_without_context_still_lists(make_napari_viewer):
    """An older top_words.tsv whose context lacks the bracketed word: listed, one passage per word."""
    from napari_brainorg._napari._explorer_pages import TopWordsPage

    table = pd.DataFrame({"atom": 0, "direction": "activate", "rank": [1, 2], "word": ["pie", "man"],
                          "word_index": [7, 8], "onset": [9.1, 9.4], "volume": [6, 6],
                          "response": [3.0, 2.0], "context": ["", ""]})
    page = TopWordsPage()
    page.show_atom(table, 0)
    assert page.word_items(page.up) == ["pie  +3.00", "man  +2.00"]
    assert page.up.item(0).data(Qt.UserRole) == "passage"
