"""The pipeline widget runs the real pipeline in a thread; bad input is a notification."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import Qt

napari = pytest.importorskip("napari")

from napari.utils.notifications import NotificationSeverity, notification_manager  # noqa: E402

from napari_brainorg._napari import layers as L  # noqa: E402
from napari_brainorg._napari.explorer import AtomExplorer  # noqa: E402
from napari_brainorg._napari.pipeline_widget import PipelineWidget  # noqa: E402

pytestmark = pytest.mark.gui

#: a small run: a 60 s excerpt of the bundled pieman story, 4 atoms, 2 SIMULATED subjects
TINY = {
    "atoms": {"max_iter": 20},
    "encoding": {"n_folds": 2, "gap": 2, "alphas": [1.0, 100.0, 10000.0]},
    "networks": {"n_permutations": 20},
}


@pytest.fixture
def tiny_story(tmp_path):
    from napari_brainorg.io.stimuli import read_story

    words = read_story("pieman").to_dataframe()
    words = words[words["onset"] < 55.0][["word", "onset", "offset"]]
    path = tmp_path / "pieman_excerpt.tsv"
    words.to_csv(path, sep="\t", index=False)
    return path


def _configure_tiny(widget, story, out):
    widget.story.setCurrentText(str(story))
    widget.tr.setValue(1.5)
    widget.n_volumes.setValue(40)
    widget.model.setCurrentText("minilm")
    widget.fmri_source.setCurrentText("simulated subjects")
    widget.n_subjects.setValue(2)
    widget.sim_resolution.setValue(8.0)
    widget.sim_atlas.setCurrentText("smith10")
    widget.n_atoms.setValue(4)
    widget.encoding.setCurrentText("both")
    for i in range(widget.atlases.count()):
        item = widget.atlases.item(i)
        item.setCheckState(Qt.Checked if item.text() == "yeo7" else Qt.Unchecked)
    widget.out.setText(str(out))


def _errors_since(n):
    return [r for r in notification_manager.records[n:] if r.severity == NotificationSeverity.ERROR]


@pytest.mark.slow
def test_pipeline_widget_on_tiny_data_shows_the_result(make_napari_viewer, qtbot, tiny_story, tmp_path):
    viewer = make_napari_viewer()
    widget = PipelineWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Run pipeline")
    _configure_tiny(widget, tiny_story, tmp_path / "out")
    config = widget.build_config(TINY)
    assert config.story.path == str(tiny_story) and config.atoms.n_atoms == 4
    assert config.fmri.simulate.n_subjects == 2 and config.networks.atlases == ["yeo7"]
    assert config.encoding.models == ["sparse", "ridge"]

    stages, outcome = [], {}
    widget.finished.connect(lambda result: outcome.setdefault("result", result))
    widget.failed.connect(lambda message: outcome.setdefault("failed", message))
    job = widget.run(TINY)
    assert job is not None and not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    job.progressed.connect(lambda s, d, t: stages.append((s, d, t)))
    qtbot.waitUntil(lambda: bool(outcome), timeout=600000)
    assert "failed" not in outcome, outcome["failed"]
    result = outcome["result"]
    assert result.simulated and result.path == tmp_path / "out"
    assert stages, "no progress was reported"
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()

    roles = {layer.metadata.get(L.ROLE): layer for layer in viewer.layers}
    assert {"template", "networks", "r2", "atom_map"} <= set(roles)
    atom_map = roles["atom_map"]
    maps = result.atom_maps(result.models[0], stat="z")
    assert maps.shape[3] == 4
    # atom 0's map, shown inside the MNI brain only
    inside = L.inside_mni_brain(maps.affine, maps.shape[:3])
    expected = np.where(inside, np.nan_to_num(np.asarray(maps.dataobj)[..., 0]), 0.0)
    assert 0.1 < inside.mean() < 0.9  # the brain fills part of the grid's box
    np.testing.assert_allclose(atom_map.data, expected.T, atol=1e-6)
    np.testing.assert_allclose(atom_map.affine.affine_matrix, L.napari_affine(maps.affine))
    # the explorer was docked and follows the new result
    explorers = [w for w in viewer.window.dock_widgets.values() if isinstance(w, AtomExplorer)]
    assert len(explorers) == 1
    qtbot.waitUntil(lambda: explorers[0].state is not None, timeout=30000)
    assert explorers[0].table.rowCount() == 4


@pytest.mark.slow
def test_cancel_stops_the_run_and_the_viewer_stays_usable(make_napari_viewer, qtbot, tiny_story, tmp_path):
    viewer = make_napari_viewer()
    widget = PipelineWidget(viewer)
    _configure_tiny(widget, tiny_story, tmp_path / "out")
    n_records = len(notification_manager.records)
    with qtbot.waitSignal(widget.failed, timeout=600000) as failed:
        widget.run(TINY)
        widget.cancel()
    assert "cancelled" in failed.args[0]
    assert widget.status.text() == "cancelled"
    assert not _errors_since(n_records)  # a cancel is not an error
    assert len(viewer.layers) == 0
    assert widget.run_button.isEnabled()
    viewer.add_image(np.zeros((4, 4)))
    assert len(viewer.layers) == 1


def test_bad_inputs_give_notifications_and_the_viewer_still_works(make_napari_viewer, qtbot, tmp_path,
                                                                  tiny_result):
    viewer = make_napari_viewer()
    widget = PipelineWidget(viewer)
    explorer = AtomExplorer(viewer)
    viewer.window.add_dock_widget(widget, name="Run pipeline")
    viewer.window.add_dock_widget(explorer, name="Atom explorer")

    # 1. an invalid value: caught when the configuration is built, nothing runs
    n = len(notification_manager.records)
    widget.out.setText("")
    with qtbot.waitSignal(widget.failed, timeout=5000) as failed:
        assert widget.run() is None
    assert "out" in failed.args[0]
    errors = _errors_since(n)
    assert len(errors) == 1 and "Pipeline inputs" in errors[0].message

    # 2. a story file that does not exist: the run fails in its thread -> notification
    n = len(notification_manager.records)
    missing = tmp_path / "no_such_story.tsv"
    widget.story.setCurrentText(str(missing))
    widget.out.setText(str(tmp_path / "out"))
    with qtbot.waitSignal(widget.failed, timeout=60000) as failed:
        widget.run()
    assert "no_such_story.tsv" in failed.args[0]
    errors = _errors_since(n)
    assert len(errors) == 1 and "no_such_story.tsv" in errors[0].message
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()

    # 3. opening a folder that is not a result
    n = len(notification_manager.records)
    with qtbot.waitSignal(explorer.failed, timeout=5000):
        explorer.open_result(tmp_path)
    errors = _errors_since(n)
    assert len(errors) == 1 and "summary.json" in errors[0].message
    assert len(viewer.layers) == 0

    # the viewer and the explorer still work: a real result opens and an atom can be shown
    with qtbot.waitSignal(explorer.loaded, timeout=30000):
        explorer.open_result(tiny_result[0])
    explorer.select_atom(2)
    np.testing.assert_allclose(L.find_layer(viewer, "atom_map").data,
                               tiny_result[1]["z"][..., 2].T * tiny_result[1]["mask"].T, atol=1e-6)


def test_explorer_reports_a_result_with_broken_maps(make_napari_viewer, qtbot, tiny_result, tmp_path):
    """A result folder whose atom maps file is corrupt: the loader thread fails -> notification."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_result[0], broken)
    (broken / "encoding/minilm/atom_maps_z.nii.gz").write_bytes(b"corrupt")
    (broken / "encoding/minilm/atom_maps.nii.gz").write_bytes(b"corrupt")
    viewer = make_napari_viewer()
    explorer = AtomExplorer(viewer)
    n = len(notification_manager.records)
    with qtbot.waitSignal(explorer.failed, timeout=30000):
        explorer.set_result(broken)
    errors = _errors_since(n)
    assert len(errors) == 1 and "broken" in errors[0].message
    assert explorer.state is None
    # still usable afterwards
    with qtbot.waitSignal(explorer.loaded, timeout=30000):
        explorer.set_result(tiny_result[0])
    assert explorer.table.rowCount() == 4


def test_config_dict_covers_every_fmri_source(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    widget = PipelineWidget(viewer)
    widget.out.setText(str(tmp_path / "o"))
    widget.fmri_source.setCurrentText("NIfTI files")
    widget.fmri_files.setText("a.nii.gz; b.nii.gz")
    widget.mask.setText("mni")
    cfg = widget.build_config()
    assert cfg.fmri.images == ["a.nii.gz", "b.nii.gz"] and cfg.fmri.simulate is None
    widget.fmri_source.setCurrentText("BIDS folder")
    widget.bids_root.setText(str(tmp_path))
    widget.bids_subjects.setText("001, 002")
    widget.story.setCurrentText("pieman")
    cfg = widget.build_config()
    assert cfg.fmri.bids.root == str(tmp_path) and cfg.fmri.bids.task == "pieman"
    assert cfg.fmri.bids.subjects == ["001", "002"]
    widget.encoding.setCurrentText("ridge")
    widget.lam.setValue(0.25)
    widget.n_atoms.setValue(12)
    cfg = widget.build_config()
    assert cfg.encoding.models == ["ridge"] and cfg.atoms.alpha == 0.25 and cfg.atoms.n_atoms == 12
    assert pd.Series(cfg.networks.atlases).tolist() == ["smith10", "yeo7"]
