"""`brainorg run CONFIG.yaml` on files on disk: NIfTI runs and region time series.

The subjects are SIMULATED (written by the simulation step, labelled as such) so the
test knows what the pipeline should find; the run itself treats them as a user's files.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from napari_brainorg.cli import main
from napari_brainorg.io.results import ResultFolder
from napari_brainorg.pipeline import make_config
from napari_brainorg.pipeline import run_simulation

pytestmark = pytest.mark.slow

COMMON = {
    "story": {"path": "pieman", "tr": 1.5, "n_volumes": 300},
    "features": {"models": ["minilm"]},
    "atoms": {"n_atoms": 12, "max_iter": 30},
}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    base = tmp_path_factory.mktemp("own")
    # the analysis' own atoms planted under the simple noise this test was written for
    # (tests/test_simulate.py and benchmarks/bench_recovery.py cover the realistic simulation)
    easy = {"sources": "atoms", "r2_min": 0.05, "ar1_grey": 0.4, "ar1_other": 0.4, "hrf_delay_s": 0.0,
            "hrf_dispersion_s": 0.0, "fluctuation_atlases": []}
    config = make_config({**COMMON, "fmri": {"simulate": {"n_subjects": 2, "resolution_mm": 6.0, **easy,
                                                          "links": {3: ["auditory"], 8: ["default mode"]}}},
                          "out": str(base / "sim")})
    folder = run_simulation(config)
    return base, folder


def _write_yaml(path, data):
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


def test_run_on_nifti_files_finds_the_planted_links(simulated, capsys):
    base, folder = simulated
    images = sorted(p.name for p in folder.glob("sub-*_bold.nii.gz"))
    cfg = _write_yaml(folder / "study.yaml", {
        **COMMON,
        "fmri": {"images": images, "mask": "mask.nii.gz"},  # relative to the config file
        "networks": {"atlases": ["smith10"]},  # the default stimulus test and its 5000 draws
        "out": "../../result",
    })
    assert main(["run", str(cfg), "--quiet"]) == 0
    res = ResultFolder(base / "result")
    assert not res.simulated  # the pipeline did not simulate: it read the user's files
    table = res.associations(part="activated")
    found = {(int(a), n) for a, n in table.loc[table["associated"], ["atom", "network"]].itertuples(index=False)}
    assert {(3, "auditory"), (8, "default mode")} <= found
    assert len(found) <= 3
    mask = nib.load(folder / "mask.nii.gz")
    np.testing.assert_allclose(res.atom_maps().affine, mask.affine)
    out = capsys.readouterr().out
    assert "Results in" in out and "associations" in out


def test_run_on_region_time_series_writes_region_tables(simulated):
    base, folder = simulated
    from napari_brainorg.io.atlases import load_fbn
    from napari_brainorg.io.fmri import load_fmri

    mask = nib.load(folder / "mask.nii.gz")
    atlas = load_fbn("smith10", mask)
    paths = []
    for img in sorted(folder.glob("sub-*_bold.nii.gz")):
        data = load_fmri([str(img)], mask=mask, n_volumes=300).data[0]      # (300, n_voxels)
        masks = atlas.masks().astype(np.float32)                           # (10, n_voxels)
        regions = data @ masks.T / masks.sum(1)                            # network mean time series
        path = base / f"{img.name.split('_')[0]}_regions.tsv"
        pd.DataFrame(regions, columns=atlas.network_names).to_csv(path, sep="\t", index=False)
        paths.append(str(path))
    config = {**COMMON, "fmri": {"regions": paths}, "out": str(base / "regions_result"),
              "features": {"models": ["minilm"], "baselines": ["phase_randomised", "untrained", "nuisance"]}}
    cfg = _write_yaml(base / "regions.yaml", config)
    assert main(["run", str(cfg), "--quiet"]) == 0
    out = base / "regions_result"
    res = ResultFolder(out)
    per_region = res.region_table()
    assert per_region["region"].tolist() == atlas.network_names
    z = res.region_atom_table(stat="z")
    # the planted atoms are the strongest in their own networks
    assert z.loc["auditory"].abs().idxmax() == "atom_3"
    assert z.loc["default mode"].abs().idxmax() == "atom_8"
    summary = json.loads((out / "summary.json").read_text())
    # the stimulus-null association test on the region table, every region a network of its own
    table = pd.concat([res.associations(part=p) for p in ("activated", "deactivated")])
    assert set(table["atlas"]) == {"regions"} and set(table["network"]) == set(atlas.network_names)
    assert len(table) == 12 * len(atlas.network_names) * 2 and table["test"].str.startswith("stimulus-phase").all()
    found = {(int(a), n, d) for a, n, d in
             table.loc[table["associated"], ["atom", "network", "direction"]].itertuples(index=False)}
    assert {(3, "auditory", "activated"), (8, "default mode", "activated")} <= found, found
    # nothing else: only the planted atoms, only in regions that hold voxels of their network
    # (these regions are the overlapping Smith masks, so auditory signal is also in sensorimotor's mean)
    names = list(atlas.network_names)
    masks = atlas.masks()
    planted = {3: masks[names.index("auditory")], 8: masks[names.index("default mode")]}
    for a, n, d in found:
        assert a in planted and d == "activated" and (planted[a] & masks[names.index(n)]).any(), (a, n, d)
    assert "regions" in json.loads((out / "networks/minilm/test.json").read_text())["fdr_family"]
    assert "networks/minilm" not in summary.get("skipped", {})

    # region results: r with its CI over subjects, R2 beside its chance level, q, the
    # noise ceiling and every baseline's r, per region
    for col in ("r_cv", "r_cv_ci_low", "r_cv_ci_high", "r2_cv", "r2_sparse", "r2_sparse_null_p95", "r2_sparse_q",
                "noise_ceiling", "isc_loo", "r_cv_minilm-phase-randomised", "r_cv_minilm-untrained", "r_cv_nuisance"):
        assert col in per_region.columns, col
    ok = per_region["r_cv_ci_low"].notna()
    assert ok.all()
    assert (per_region["r_cv_ci_low"] <= per_region["r_cv"] + 1e-6).all()
    assert (per_region["r_cv"] <= per_region["r_cv_ci_high"] + 1e-6).all()
    auditory = per_region.set_index("region").loc["auditory"]
    # the planted network: above the in-sample chance level, above the story-free baselines
    assert auditory["r2_sparse"] > auditory["r2_sparse_null_p95"]
    assert auditory["r_cv"] > auditory["r_cv_minilm-phase-randomised"] + 0.05
    assert auditory["r_cv"] > auditory["r_cv_nuisance"] + 0.05
    assert (out / "figures/minilm_regions.png").exists()
    assert summary["models"] == ["minilm"]
    assert set(summary["baselines"]) == {"minilm-phase-randomised", "minilm-untrained", "nuisance"}
    rows = [r for r in summary["baseline_comparison"] if r["metric"] == "median r_cv"]
    assert {r["baseline"] for r in rows} == set(summary["baselines"]) and all(0 < r["p"] <= 1 for r in rows)
    assert summary["regions"]["minilm"][0]["region"] == per_region.sort_values("r_cv").iloc[-1]["region"]
    assert "CI" in summary["headline"][0] and "noise ceiling" in summary["headline"][0]
    comparison = res.comparison_tables()["baselines"]
    assert {"model", "baseline", "metric", "difference", "p", "test"} <= set(comparison.columns)
