"""``brainorg view DIR`` and the manifest."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brainorg.cli import build_parser, main


def test_view_command_is_registered_and_documented():
    parser = build_parser()
    args = parser.parse_args(["view", "some/dir", "--atom", "3"])
    assert args.dir == "some/dir" and args.atom == 3
    from napari_brainorg.cli import view

    assert args.func is view.run


def test_view_refuses_a_folder_that_is_not_a_result(tmp_path, capsys):
    assert main(["view", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "summary.json" in err and str(tmp_path) in err
    assert main(["view", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_manifest_is_valid_and_names_the_contributions():
    npe2 = pytest.importorskip("npe2")
    from importlib.resources import files

    manifest = npe2.PluginManifest.from_file(files("napari_brainorg") / "napari.yaml")
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert widgets == {"Run pipeline", "Atom explorer", "Brain networks", "Ortho views"}
    (reader,) = manifest.contributions.readers
    assert reader.accepts_directories and "*.nii.gz" in reader.filename_patterns
    assert [s.key for s in manifest.contributions.sample_data] == ["demo"]
    # every command resolves to a callable
    for command in manifest.contributions.commands:
        module, name = command.python_name.split(":")
        import importlib

        assert callable(getattr(importlib.import_module(module), name))


@pytest.mark.gui
def test_view_opens_the_result_with_the_explorer_docked(make_napari_viewer, qtbot, tiny_result, monkeypatch):
    pytest.importorskip("napari")
    from napari_brainorg._napari import layers as L
    from napari_brainorg._napari import view as view_module
    from napari_brainorg._napari.explorer import AtomExplorer
    from napari_brainorg._napari.networks_widget import NetworksWidget

    path, truth = tiny_result
    viewer = make_napari_viewer()
    opened = {}

    def fake_viewer_factory(*args, **kwargs):
        return viewer

    # the command runs exactly as on a desktop, in this test's viewer and without blocking
    monkeypatch.setattr("napari.Viewer", fake_viewer_factory)
    monkeypatch.setattr(view_module, "run_event_loop", lambda v: opened.setdefault("viewer", v))
    assert main(["view", str(path), "--atom", "2"]) == 0
    assert opened["viewer"] is viewer
    docked = viewer.window.dock_widgets
    explorer = docked["Atom explorer"]
    assert isinstance(explorer, AtomExplorer) and isinstance(docked["Brain networks"], NetworksWidget)
    qtbot.waitUntil(lambda: explorer.atom == 2, timeout=30000)
    layer = L.find_layer(viewer, "atom_map")
    inside = L.inside_mni_brain(truth["affine"], truth["mask"].shape) & truth["mask"]
    np.testing.assert_allclose(layer.data, truth["z"][..., 2].T * inside.T, atol=1e-6)
    assert [layer.metadata.get(L.ROLE) for layer in viewer.layers] == [
        "template", "r2", "atom_map", "networks", "orientation", "crosshair"]


@pytest.mark.gui
def test_sample_data_reads_the_cached_demo(make_napari_viewer, qtbot, tiny_result, monkeypatch):
    """With a demo result in the cache, the sample opens it (here: the tiny SIMULATED folder):
    read in a thread and added in pieces while the sample waits with the event loop running;
    when napari gets the sample's own layer (the A/P/L/R letters) the result is in place,
    oriented, with the atom map active; the letters are shown in a later turn."""
    pytest.importorskip("napari")
    from napari_brainorg._napari import display
    from napari_brainorg._napari import layers as L
    from napari_brainorg._napari.sample_data import DEMO_ENV, demo_result_path

    path, truth = tiny_result
    monkeypatch.setenv(DEMO_ENV, str(path))
    assert demo_result_path() == path
    viewer = make_napari_viewer()
    ticks = []
    from qtpy.QtCore import QTimer

    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(10)
    added = viewer.open_sample("napari-brainorg", "demo")
    timer.stop()
    assert ticks  # the event loop ran while the layers arrived
    roles = [layer.metadata.get(L.ROLE) for layer in viewer.layers]
    assert roles == ["template", "r2", "atom_map", "networks", "orientation"]
    assert [layer.metadata.get(L.ROLE) for layer in added] == ["orientation"]
    assert L.find_layer(viewer, "template").visible
    assert tuple(viewer.camera.orientation2d) == ("up", "right")  # axial, neurological
    assert viewer.layers.selection.active is L.find_layer(viewer, "atom_map")
    letters = L.find_layer(viewer, display.ORIENTATION_ROLE)
    assert not letters.editable
    qtbot.waitUntil(lambda: letters.visible, timeout=5000)
    assert viewer.layers.selection.active is L.find_layer(viewer, "atom_map")
    inside = L.inside_mni_brain(truth["affine"], truth["mask"].shape) & truth["mask"]
    np.testing.assert_allclose(L.find_layer(viewer, "atom_map").data, (truth["z"][..., 0] * inside).T, atol=1e-6)
