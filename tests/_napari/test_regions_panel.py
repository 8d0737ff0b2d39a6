"""A region result (fMRI given as region time series) opens with its Regions panel.

The result is a tiny SIMULATED region result written with the real ResultWriter in the
layout the pipeline writes (tests/pipeline/test_own_data.py makes a real one, in minutes):
random values, so a panel that mixes up columns, rows or atoms fails.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

REGIONS = ["medial visual", "auditory", "default mode", "executive control"]
GRID = np.array([[4.0, 0, 0, -40.0], [0, 4.0, 0, -60.0], [0, 0, 4.0, -20.0], [0, 0, 0, 1]])


@pytest.fixture(scope="session")
def region_result(tmp_path_factory):
    import nibabel as nib

    from napari_brainorg.io.results import ResultWriter

    base = tmp_path_factory.mktemp("region_result")
    path = base / "result"
    rng = np.random.default_rng(3)
    w = ResultWriter(path)
    r = rng.uniform(0.05, 0.6, len(REGIONS))
    regions = pd.DataFrame({
        "region": REGIONS, "r2_sparse": r ** 2, "r2_sparse_q": rng.uniform(0, 0.2, len(REGIONS)),
        "r2_cv": r ** 2 * 0.8, "r_cv": r, "r_cv_ci_low": r - rng.uniform(0.05, 0.2, len(REGIONS)),
        "r_cv_ci_high": r + rng.uniform(0.05, 0.2, len(REGIONS)), "noise_ceiling": r + 0.25,
        "isc_loo": r + 0.1, "r_cv_minilm-phase-randomised": rng.normal(0, 0.05, len(REGIONS)),
        "r_cv_nuisance": rng.normal(0.1, 0.05, len(REGIONS))})
    coefs = pd.DataFrame(rng.normal(0, 1, (len(REGIONS), 5)), columns=[f"atom_{i}" for i in range(5)])
    coefs.insert(0, "region", REGIONS)
    w.write_table("encoding/minilm/regions.tsv", regions)
    w.write_table("encoding/minilm/atom_maps.tsv", coefs)
    w.write_json("summary.json", {"models": ["minilm"], "tr": 1.5, "n_volumes": 60, "simulated": True,
                                  "fmri": {"kind": "regions", "subjects": ["sub-01", "sub-02"]}})
    # an ROI atlas: one box per region (labels 1..4), names in a sidecar table; label 9 is unnamed
    labels = np.zeros((20, 20, 15), np.int16)
    for i in range(len(REGIONS)):  # box i is i + 1 voxels wide: its voxel count names it
        labels[2 + 4 * i: 3 + 5 * i, 4:16, 4:11] = i + 1
    labels[0:2, 0:2, 0:2] = 9
    atlas = base / "rois.nii.gz"
    nib.save(nib.Nifti1Image(labels, GRID), atlas)
    pd.DataFrame({"index": [1, 2, 3, 4], "name": REGIONS}).to_csv(base / "rois.tsv", sep="\t", index=False)
    return path, regions, coefs.set_index("region"), atlas, labels


def _heights(container):
    return np.array([p.get_height() for p in container.patches])


def test_region_result_opens_with_its_bars_atoms_and_painted_rois(make_napari_viewer, qtbot, region_result,
                                                                     artifacts_dir):
    from napari_brainorg._napari import layers as L
    from napari_brainorg._napari.regions_panel import PANEL_NAME, ROI_LAYER
    from napari_brainorg._napari.view import open_viewer

    path, regions, coefs, atlas, labels = region_result
    viewer = make_napari_viewer(show=True)
    open_viewer(path, viewer=viewer, roi_atlas=str(atlas))
    viewer.window._qt_window.resize(1366, 768)
    panel = viewer.window.dock_widgets[PANEL_NAME]
    assert panel.regions == REGIONS
    header = viewer.window.dock_widgets["Atom explorer"].header.text()
    assert "Open a result folder" not in header and "Regions" in header and "region result" in header
    # fit chart: r, each baseline, CI error bars and the noise ceiling, equal to regions.csv
    np.testing.assert_allclose(_heights(panel.fit_bars["r_cv"]), regions["r_cv"], rtol=1e-6)
    for col in ("r_cv_minilm-phase-randomised", "r_cv_nuisance"):
        np.testing.assert_allclose(_heights(panel.fit_bars[col]), regions[col], rtol=1e-6)
    assert set(panel.fit_bars) == {"r_cv", "r_cv_minilm-phase-randomised", "r_cv_nuisance"}
    segments = panel.fit_bars["r_cv"].errorbar.lines[2][0].get_segments()
    np.testing.assert_allclose([s[0][1] for s in segments], regions["r_cv_ci_low"], rtol=1e-6)
    np.testing.assert_allclose([s[1][1] for s in segments], regions["r_cv_ci_high"], rtol=1e-6)
    np.testing.assert_allclose(panel.ceiling.get_ydata(), regions["noise_ceiling"], rtol=1e-6)
    # atom 0 first; a click on atom 3's row shows atom 3's coefficients
    np.testing.assert_allclose(_heights(panel.coef_bars), coefs["atom_0"].loc[REGIONS], rtol=1e-6)
    rect = panel.atoms.visualItemRect(panel.atoms.item(3, 0))
    from qtpy.QtCore import Qt

    qtbot.mouseClick(panel.atoms.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert panel.atom == 3
    np.testing.assert_allclose(_heights(panel.coef_bars), coefs["atom_3"].loc[REGIONS], rtol=1e-6)
    assert not np.allclose(coefs["atom_3"], coefs["atom_0"])
    # painted on the template: each ROI's voxels carry its r, then the selected atom's coefficient
    layer = L.find_layer(viewer, ROI_LAYER)

    def painted(layer):
        data = np.asarray(layer.data)
        values, counts = np.unique(data[np.isfinite(data)], return_counts=True)
        return dict(zip(counts, values))

    size = {int((labels == i + 1).sum()): region for i, region in enumerate(REGIONS)}
    assert len(size) == len(REGIONS)
    got = painted(layer)  # {voxel count: value}; label 9 (unnamed) and 0 stay unpainted
    assert set(got) == set(size)
    for count, region in size.items():
        assert got[count] == pytest.approx(regions.set_index("region").loc[region, "r_cv"], rel=1e-6)
    panel.paint_combo.setCurrentIndex(1)
    got = painted(layer)
    for count, region in size.items():
        assert got[count] == pytest.approx(coefs.loc[region, "atom_3"], rel=1e-6)
    assert "atom 3" in layer.name
    qtbot.wait(200)
    viewer.window._qt_window.grab().save(str(artifacts_dir / "napari_1366x768_regions.png"))


def test_region_result_through_the_reader_and_bad_input_notifies(make_napari_viewer, region_result, tmp_path):
    from napari_brainorg._napari.regions_panel import PANEL_NAME, RegionsPanel

    path, regions, _, atlas, _ = region_result
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-brainorg")
    panel = viewer.window.dock_widgets[PANEL_NAME]
    np.testing.assert_allclose(_heights(panel.fit_bars["r_cv"]), regions["r_cv"], rtol=1e-6)
    # a label image whose names match no region: a notification, the panel keeps working
    other = tmp_path / "other.nii.gz"
    other.write_bytes(atlas.read_bytes())
    pd.DataFrame({"index": [1, 2], "name": ["foo", "bar"]}).to_csv(tmp_path / "other.tsv", sep="\t", index=False)
    from napari.utils.notifications import notification_manager

    before = len(notification_manager.records)
    assert panel.set_atlas(other) is False
    assert "match a region" in str(notification_manager.records[before:][-1].message)
    # a regions.csv (as an earlier version wrote) without r_cv: refused with the file named
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text(json.dumps({"models": ["minilm"], "tr": 1.5, "n_volumes": 60}))
    (bad / "encoding/minilm").mkdir(parents=True)
    (bad / "encoding/minilm/regions.csv").write_text("region,r2_cv\na,0.1\n")
    fresh = RegionsPanel(viewer)
    assert fresh.set_result(bad) is False
    assert "r_cv" in fresh.header.text() and "regions.csv" in fresh.header.text()
    assert panel.select_atom(2) is None and panel.atom == 2


def test_view_roi_atlas_option_is_checked_before_napari_starts(region_result, tiny_result, tmp_path, capsys):
    from napari_brainorg.cli import main

    path, _, _, atlas, _ = region_result
    assert main(["view", str(path), "--roi-atlas", str(tmp_path / "nope.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "nope.nii.gz" in err and "does not exist" in err
    assert main(["view", str(tiny_result[0]), "--roi-atlas", str(atlas)]) == 2
    assert "region results" in capsys.readouterr().err


def test_pipeline_widget_on_region_data_shows_the_regions_panel(make_napari_viewer, qtbot, region_result, tmp_path,
                                                                 artifacts_dir):
    """The widget builds a region-data run, and a finished region run docks the Regions panel
    (its finished signal delivers the result folder as a run's does), the explorer says where to look."""
    from napari_brainorg._napari import layers as L
    from napari_brainorg._napari.explorer import AtomExplorer
    from napari_brainorg._napari.pipeline_widget import FMRI_SOURCES, PipelineWidget
    from napari_brainorg._napari.regions_panel import PANEL_NAME
    from napari_brainorg.io.results import ResultFolder

    path, regions, coefs, _, _ = region_result
    viewer = make_napari_viewer(show=True)
    widget = PipelineWidget(viewer)
    explorer = AtomExplorer(viewer)
    L.dock_tabbed(viewer, widget, "Run pipeline")
    L.dock_tabbed(viewer, explorer, "Atom explorer", raise_=True)
    tables = []
    for sub in ("01", "02"):
        table = tmp_path / f"sub-{sub}_regions.tsv"
        pd.DataFrame(np.random.default_rng(int(sub)).normal(size=(300, 4)), columns=REGIONS).to_csv(
            table, sep="\t", index=False)
        tables.append(str(table))
    widget.fmri_source.setCurrentIndex(FMRI_SOURCES.index("region time series"))
    widget.region_files.setText("; ".join(tables))
    assert widget.config_dict()["fmri"] == {"regions": tables}
    config = widget.build_config()
    assert [str(p) for p in config.fmri.regions] == tables
    done = []
    widget.finished.connect(done.append)
    widget._on_finished(ResultFolder(path))
    qtbot.waitUntil(lambda: bool(done), timeout=30000)
    panel = viewer.window.dock_widgets[PANEL_NAME]
    assert panel.regions == REGIONS
    np.testing.assert_allclose(_heights(panel.fit_bars["r_cv"]), regions["r_cv"], rtol=1e-6)
    assert panel.isVisible()  # its tab is the one in front
    header = explorer.header.text()
    assert "Open a result folder" not in header and "Regions" in header
    viewer.window._qt_window.resize(1366, 768)
    qtbot.wait(200)
    viewer.window._qt_window.grab().save(str(artifacts_dir / "napari_1366x768_regions_after_pipeline_run.png"))
    explorer.show()
    L.raise_dock(explorer)
    qtbot.wait(100)
    viewer.window._qt_window.grab().save(str(artifacts_dir / "napari_1366x768_explorer_on_region_result.png"))


def test_region_associations_are_listed_and_the_painted_layer_has_a_colour_bar(make_napari_viewer, qtbot,
                                                                               region_result, tmp_path,
                                                                               artifacts_dir):
    """The association test of atoms with regions (statistic, q, declared) in the Regions tab."""
    import shutil

    from napari_brainorg._napari import layers as L
    from napari_brainorg._napari.regions_panel import PANEL_NAME, ROI_LAYER
    from napari_brainorg._napari.view import open_viewer
    from napari_brainorg.io.results import ResultWriter

    src, _, coefs, atlas, _ = region_result
    path = tmp_path / "with_links"
    shutil.copytree(src, path)
    rng = np.random.default_rng(11)
    w = ResultWriter(path)
    declared = {("activated", 2, "auditory"), ("deactivated", 4, "default mode")}
    for part in ("activated", "deactivated"):
        rows = [{"atom": a, "atlas": "regions", "network": region, "statistic": rng.normal(0, 2),
                 "p": rng.uniform(0.2, 1), "q": rng.uniform(0.3, 1), "associated": False}
                for a in range(coefs.shape[1]) for region in REGIONS]
        for row in rows:
            if (part, row["atom"], row["network"]) in declared:
                row.update(statistic=7.5 if part == "activated" else -6.0, p=1e-4, q=0.004, associated=True)
        w.write_table(f"networks/minilm/association_{part}.tsv", pd.DataFrame(rows))
    viewer = make_napari_viewer(show=True)
    open_viewer(path, viewer=viewer, roi_atlas=str(atlas))
    panel = viewer.window.dock_widgets[PANEL_NAME]
    table = panel.links
    assert table.rowCount() == 2 * coefs.shape[1] * len(REGIONS)
    assert "2 declared" in panel.lists.tabText(1)
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert headers == ["atom", "region", "part", "statistic", "q", "associated"]
    listed = {(table.item(r, 2).text(), int(table.item(r, 0).text()), table.item(r, 1).text())
              for r in range(2)}
    assert listed == declared  # declared links first
    assert {table.item(r, 5).text() for r in range(2)} == {"yes"}
    assert {table.item(r, 3).text() for r in range(2)} == {"+7.50", "-6.00"}
    assert float(table.item(0, 4).text()) == pytest.approx(0.004)
    # sortable by the signed statistic
    table.sortItems(3)
    assert table.item(0, 3).text() == "-6.00"
    # a click on a link shows that atom
    table.selectRow(0)
    assert panel.atom == 4
    # the painted layer carries a colour bar and leaves zero clear
    layer = L.find_layer(viewer, ROI_LAYER)
    assert layer.colorbar.visible
    assert L.visible_fraction(layer, np.array([0.0])).tolist() == [0.0]
    viewer.window._qt_window.resize(1366, 768)
    panel.lists.setCurrentIndex(1)
    viewer.dims.set_point(0, 0.0)
    qtbot.wait(300)
    viewer.window._qt_window.grab().save(str(artifacts_dir / "napari_1366x768_region_associations.png"))
