"""Opening without freezing: read in a thread, added one layer per turn, same layers as before.

The routes that used to build and add every layer in one go on the GUI thread now read in
a worker and add the layers in pieces (napari_brainorg._napari._loading). What a user sees
at the end must not change: the same layers, data, placement and styling as the direct,
synchronous path (layers.add_result_layers, the reader's layer-data tuples).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_brainorg._napari import _loading, display  # noqa: E402
from napari_brainorg._napari import layers as L  # noqa: E402

pytestmark = pytest.mark.gui

RESULT_ROLES = ("template", "r2", "atom_map", "networks")


def _describe(layer) -> dict:
    """What a user sees of a layer: its kind, data, placement and styling."""
    out = {"kind": layer._type_string, "name": layer.name, "data": np.asarray(layer.data),
           "affine": np.asarray(layer.affine.affine_matrix), "opacity": layer.opacity,
           "blending": layer.blending, "visible": layer.visible,
           "metadata": {k: v for k, v in layer.metadata.items() if k != "colormap_key"}}
    if layer._type_string == "image":
        out["contrast_limits"] = tuple(layer.contrast_limits)
        out["colormap"] = np.asarray(layer.colormap.colors)
        out["colorbar"] = layer.colorbar.visible
    elif layer._type_string == "labels":
        out["contour"] = layer.contour
    return out


def _assert_same_layers(a, b) -> None:
    assert [x.name for x in a] == [x.name for x in b]
    for x, y in zip(a, b):
        dx, dy = _describe(x), _describe(y)
        assert dx.keys() == dy.keys(), x.name
        for key in dx:
            if isinstance(dx[key], np.ndarray):
                np.testing.assert_array_equal(dx[key], dy[key], err_msg=f"{x.name}: {key}")
            else:
                assert dx[key] == dy[key], (x.name, key, dx[key], dy[key])


def test_a_result_shown_in_pieces_equals_the_direct_path(make_napari_viewer, qtbot, tiny_result):
    path, _ = tiny_result
    direct = make_napari_viewer()
    L.add_result_layers(direct, path)
    viewer = make_napari_viewer()
    shown = {}
    _loading.show_result_async(viewer, path, on_shown=shown.update)
    assert L.find_layer(viewer, "template") is None  # nothing on the GUI thread before the read
    qtbot.waitUntil(lambda: bool(shown), timeout=30000)
    assert set(shown) == set(RESULT_ROLES)
    assert all(shown[role] is L.find_layer(viewer, role) for role in RESULT_ROLES)
    _assert_same_layers(list(direct.layers), list(viewer.layers))
    assert "shown" in viewer.status


def test_the_reader_adds_the_same_layers_as_brainorg_view(make_napari_viewer, qtbot, tiny_result):
    """File ▸ Open of a result folder: the reader returns at once, its layers (the tuples it
    returns without a viewer) come in pieces, as those of the direct path."""
    from napari_brainorg._napari.reader import HANDLED, napari_get_reader

    path, _ = tiny_result
    items = napari_get_reader(str(path))(str(path))  # no viewer yet: the tuples themselves
    assert [kw["metadata"][L.ROLE] for _, kw, _ in items] == list(RESULT_ROLES)
    for (data, kwargs, kind), expected in zip(items, L.result_layer_data(path)):
        assert kind == expected[2] and kwargs["name"] == expected[1]["name"]
        np.testing.assert_array_equal(data, expected[0])
    direct = make_napari_viewer()
    L.add_result_layers(direct, path)
    viewer = make_napari_viewer()
    assert napari_get_reader(str(path))(str(path)) == HANDLED
    assert viewer.open(str(path), plugin="napari-brainorg") == []  # napari adds nothing itself
    qtbot.waitUntil(lambda: L.find_layer(viewer, "networks") is not None, timeout=30000)
    qtbot.wait(50)
    # one result, not two: both reads of the folder replace the same layers
    assert [layer.metadata.get(L.ROLE) for layer in viewer.layers] == [*RESULT_ROLES, "orientation"]
    _assert_same_layers(list(direct.layers), list(viewer.layers))
    assert L.find_layer(viewer, "atom_map").source.reader_plugin == "napari-brainorg"


def test_pieces_add_one_layer_per_turn_of_the_event_loop(make_napari_viewer, tiny_result):
    path, _ = tiny_result
    viewer = make_napari_viewer()
    items = L.result_layer_data(path)
    feed = _loading.LayerFeed(viewer, items, name="tiny")
    feed._schedule = lambda: None  # each turn of the event loop is one call of _step here
    display.install(viewer)
    viewer.__dict__["_brainorg_glyphs"] = "ready"  # (the feed waits for the canvas's glyphs)
    counts, hidden, active, done = [], [], [], []
    feed.on_done = done.append
    while not done:
        feed._step()
        layers = [layer for layer in viewer.layers if layer.metadata.get(L.ROLE) in RESULT_ROLES]
        counts.append(len(layers))
        active.append(viewer.layers.selection.active)
        hidden.append({layer.metadata[L.ROLE] for layer in layers if not layer.visible})
        assert len(counts) < 4 * len(items) + 2, counts
    # never more than one new layer per turn; a new image meant to be seen is added hidden and
    # shown on the next turn (its slice and first draw), each new layer's colour bar or outlines
    # in a turn of their own (the colour bar's visual costs as much as the layer's)
    assert counts[0] == 1 and all(b - a in (0, 1) for a, b in zip(counts, counts[1:])) and counts[-1] == 4
    shown_later = [kw["metadata"][L.ROLE] for _, kw, kind in items if kind == "image" and kw.get("visible", True)]
    assert shown_later == ["template", "atom_map"]  # the R² map is meant hidden, the networks are labels
    # then the active layer is chosen in a turn of its own (the controls panel shows its
    # controls: the layers were added unselected), then the closing step
    assert len(counts) == 2 * len(items) + len(shown_later) + 2, counts
    assert all(layer is None for layer in active[:-2]), active
    assert active[-2] is active[-1] is L.find_layer(viewer, "atom_map")  # the top map, not the outlines
    for role in shown_later:
        added = counts.index(RESULT_ROLES.index(role) + 1)  # the turn it was added in
        assert role in hidden[added] and role not in hidden[added + 1], (role, hidden)
    # and they end as the tuples say
    assert [L.find_layer(viewer, kw["metadata"][L.ROLE]).visible for _, kw, _ in items] == \
        [kw.get("visible", True) for _, kw, _ in items]
    assert L.find_layer(viewer, "atom_map").colorbar.visible and L.find_layer(viewer, "networks").contour
    assert "shown" in viewer.status


def test_a_newer_load_supersedes_an_older_one(make_napari_viewer, qtbot, tiny_result, tmp_path):
    """Two results opened one after the other: the viewer ends on the second, whole."""
    path, _ = tiny_result
    other = tmp_path / "other"
    shutil.copytree(path, other)
    viewer = make_napari_viewer()
    done = []
    _loading.show_result_async(viewer, path, on_shown=lambda added: done.append("first"))
    _loading.show_result_async(viewer, other, on_shown=lambda added: done.append("second"))
    qtbot.waitUntil(lambda: "second" in done, timeout=30000)
    qtbot.wait(100)
    assert done == ["second"]
    assert all(L.find_layer(viewer, role).metadata.get(L.RESULT) in (None, str(other))
               for role in RESULT_ROLES)
    assert L.find_layer(viewer, "atom_map").metadata[L.RESULT] == str(other)


@pytest.mark.parametrize("files", [
    ("encoding/minilm/atom_maps_z.nii.gz", "networks/atlas_yeo7.nii.gz"),
    ("encoding/minilm/atom_maps_z.nii.gz", "encoding/minilm/r2_cv.nii.gz", "networks/atlas_yeo7.nii.gz"),
], ids=["two", "three"])
def test_nifti_files_opened_one_after_another_all_arrive_in_order(make_napari_viewer, qtbot, tiny_result, files):
    """File ▸ Open of NIfTI files one right after another: each is read in a thread (the
    reader returns at once) and every file's layers arrive, in the order opened, although
    the first (the 4D maps) takes longest to read; one template under them; a map stays
    the active layer when an atlas comes last."""
    path = tiny_result[0]
    viewer = make_napari_viewer(show=True)
    stems = [name.split("/")[-1].removesuffix(".nii.gz") for name in files]
    for name in files:
        assert viewer.open(str(path / name), plugin="napari-brainorg") == []  # napari adds nothing itself
    assert not any(layer.name in stems for layer in viewer.layers)  # each is read in a thread

    def brain_layers():
        return [layer.name for layer in viewer.layers if display.is_brain_layer(layer)
                and layer.metadata.get(L.ROLE) != display.ORIENTATION_ROLE]

    qtbot.waitUntil(lambda: all(stem in brain_layers() for stem in stems)
                    and "shown" in viewer.status, timeout=30000)
    qtbot.wait(200)
    assert brain_layers() == [L.TEMPLATE_NAME, *stems]  # in order, each once, one template
    assert L.find_layer(viewer, "template").metadata[L.ROLE] == "template"
    active = viewer.layers.selection.active
    assert active._type_string == "image" and active.name == stems[-2], active.name
    assert viewer.layers[stems[-1]]._type_string == "labels"


def test_a_4d_map_opened_alone_comes_over_its_template_and_stays_active(make_napari_viewer, qtbot, tiny_result):
    """A 4D map opened into an empty viewer is added before the MNI template that comes with
    it (its slice sliders get a turn of their own), and the template is put under it: the
    user sees what the load's order says, with the map active and the template's slice kept."""
    path = tiny_result[0]
    viewer = make_napari_viewer(show=True)
    target = path / "encoding/minilm/atom_maps_z.nii.gz"
    ndims = []
    viewer.layers.events.inserted.connect(lambda event: ndims.append((event.value.name, viewer.dims.ndim)))
    viewer.open(str(target), plugin="napari-brainorg")
    stem = target.name.removesuffix(".nii.gz")
    qtbot.waitUntil(lambda: "shown" in viewer.status, timeout=30000)
    brain = [layer.name for layer in viewer.layers if display.is_brain_layer(layer)
             and layer.metadata.get(L.ROLE) != display.ORIENTATION_ROLE]
    assert brain == [L.TEMPLATE_NAME, stem]
    assert viewer.layers.selection.active.name == stem
    # the sliders were there before the first layer: no layer changed the number of axes
    assert [n for _, n in ndims if _ in (L.TEMPLATE_NAME, stem)] == [4, 4]
    assert viewer.layers[stem].data.ndim == 4 and viewer.dims.ndim == 4
    assert viewer.dims.current_step[0] == 0  # atom 0 first, as when the map came after its template
    template = viewer.layers[L.TEMPLATE_NAME]
    assert template.visible and template.data.ndim == 3


def test_a_broken_file_read_in_the_thread_reaches_the_user(make_napari_viewer, qtbot, tiny_result, tmp_path):
    """An error in the loading thread becomes a notification naming the file, and the viewer
    keeps working; with a caller's on_error (the pipeline widget), that gets the exception."""
    from napari.utils.notifications import notification_manager

    from napari_brainorg._napari.pipeline_widget import PipelineWidget
    from napari_brainorg.io.results import ResultFolder

    broken = tmp_path / "broken"
    shutil.copytree(tiny_result[0], broken)
    maps = broken / "encoding/minilm/atom_maps_z.nii.gz"
    maps.write_bytes(maps.read_bytes()[:200])  # a truncated file
    viewer = make_napari_viewer()
    before = len(notification_manager.records)
    viewer.open(str(broken), plugin="napari-brainorg")
    qtbot.waitUntil(lambda: len(notification_manager.records) > before, timeout=30000)
    message = " ".join(str(n.message) for n in notification_manager.records[before:])
    assert "broken" in message, message
    assert "could not read" in viewer.status
    # the pipeline widget's end of a run: its own error path, a message and no dead widget
    widget = PipelineWidget(viewer)
    failed = []
    widget.failed.connect(failed.append)
    widget._on_finished(ResultFolder(broken))
    qtbot.waitUntil(lambda: bool(failed), timeout=30000)
    assert widget.run_button.isEnabled()
    # the viewer still opens a good result afterwards
    viewer.open(str(tiny_result[0]), plugin="napari-brainorg")
    qtbot.waitUntil(lambda: L.find_layer(viewer, "networks") is not None, timeout=30000)


WARM = textwrap.dedent("""
    import numba
    from napari.utils.colormaps import _accelerated_cmap as cmap
    from napari_brainorg._napari._warm import warm_up

    def compiled():
        return sum(len(f.signatures) for f in vars(cmap).values() if isinstance(f, numba.core.dispatcher.Dispatcher))

    before = compiled()
    warm_up()
    print(before, compiled())
""")


def test_warm_up_compiles_the_label_colormap_once(tmp_path):
    """In a fresh process the warm-up leaves napari's numba label kernels compiled (so the
    first label layer does not compile them on the GUI thread)."""
    pytest.importorskip("numba")
    script = tmp_path / "warm.py"
    script.write_text(WARM)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = (int(v) for v in proc.stdout.split()[-2:])
    assert before == 0 and after > 0, proc.stdout


def test_a_layer_added_unselected_leaves_the_selection_and_the_controls_alone(make_napari_viewer, qtbot):
    """The A/P/L/R letters and the crosshair are added without taking the selection: nothing
    listening to the selection hears of them (the controls panel keeps the active layer's)."""
    from napari.layers import Points

    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(np.zeros((8, 8), np.float32), name="map")
    controls = viewer.window._qt_viewer.controls
    assert controls.currentWidget() is controls.widgets[image]
    heard = []
    viewer.layers.selection.events.changed.connect(heard.append)
    viewer.layers.selection.events.active.connect(heard.append)
    letters = Points(np.zeros((1, 2)), name="letters")
    display.append_unselected(viewer, letters)
    assert letters in viewer.layers and viewer.layers[-1] is letters
    assert set(viewer.layers.selection) == {image} and viewer.layers.selection.active is image
    assert heard == []
    assert controls.currentWidget() is controls.widgets[image]
    assert letters in controls.widgets  # its controls exist, shown when the user selects it
    viewer.layers.selection.active = letters
    assert controls.currentWidget() is controls.widgets[letters]


def test_the_orientation_letters_come_in_turns_of_their_own_on_top(make_napari_viewer, qtbot, tiny_result):
    """The first brain layer does not make and add the A/P/L/R letters in its own turn of the
    event loop: they come after it, on top, unselected, once."""
    path, _ = tiny_result
    viewer = make_napari_viewer(show=True)
    display.install(viewer)
    from napari_brainorg.io.results import ResultFolder

    template = viewer.add_layer(napari.layers.Layer.create(*L.template_layer_data(ResultFolder(path).template_path())))
    assert L.find_layer(viewer, display.ORIENTATION_ROLE) is None  # not in the template's turn
    viewer.add_image(np.zeros((4, 4, 4), np.float32), metadata={L.ROLE: "r2"}, name="r2")
    qtbot.waitUntil(lambda: L.find_layer(viewer, display.ORIENTATION_ROLE) is not None, timeout=5000)
    qtbot.wait(100)
    letters = [layer for layer in viewer.layers if layer.metadata.get(L.ROLE) == display.ORIENTATION_ROLE]
    assert len(letters) == 1 and viewer.layers[-1] is letters[0]
    assert letters[0] not in viewer.layers.selection and template in viewer.layers
    assert letters[0].text.values.tolist() == ["A", "P", "R", "L"]


def test_the_new_layers_are_made_in_the_loading_thread(make_napari_viewer, qtbot, tiny_result, monkeypatch):
    """The GUI thread only adds the layers of a first result: napari makes each (its slice,
    thumbnail, label texture) in the thread that read the files; a second load of the same
    result makes none (its roles are shown: updated in place or kept)."""
    import threading

    from napari.layers import Layer

    path, _ = tiny_result
    made_in = []
    create = Layer.create.__func__

    def recording(cls, data, meta=None, layer_type=None):
        made_in.append((threading.get_ident(), (meta or {}).get("metadata", {}).get(L.ROLE)))
        return create(cls, data, meta, layer_type)

    monkeypatch.setattr(Layer, "create", classmethod(recording))
    viewer = make_napari_viewer()
    shown = {}
    _loading.show_result_async(viewer, path, on_shown=shown.update)
    qtbot.waitUntil(lambda: bool(shown), timeout=30000)
    gui = threading.get_ident()
    result_made = [(thread, role) for thread, role in made_in if role in RESULT_ROLES]
    assert sorted(role for _, role in result_made) == sorted(RESULT_ROLES)
    assert all(thread != gui for thread, _ in result_made), result_made
    # they arrive as the tuples say (the images were made hidden and shown in the next piece)
    items = L.result_layer_data(path)
    assert [shown[kw["metadata"][L.ROLE]].visible for _, kw, _ in items] == [kw.get("visible", True) for _, kw, _ in items]
    assert _loading.make_layers(viewer, items) == [None] * len(items)
