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
from napari_brainorg.pipeline.run import run_simulation

pytestmark = pytest.mark.slow

COMMON = {
    "story": {"path": "pieman", "tr": 1.5, "n_volumes": 300},
    "features": {"models": ["minilm"]},
    "atoms": {"n_atoms": 12, "max_iter": 30},
}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    base = tmp_path_factory.mktemp("own")
    config = make_config({**COMMON, "fmri": {"simulate": {"n_subjects": 2, "resolution_mm": 6.0,
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
    config = {**COMMON, "fmri": {"regions": paths}, "out": str(base / "regions_result")}
    cfg = _write_yaml(base / "regions.yaml", config)
    assert main(["run", str(cfg), "--quiet"]) == 0
    out = base / "regions_result"
    per_region = pd.read_csv(out / "encoding/minilm/regions.csv")
    assert per_region["region"].tolist() == atlas.network_names
    z = pd.read_csv(out / "encoding/minilm/atom_maps_z.csv").set_index("region")
    # the planted atoms are the strongest in their own networks
    assert z.loc["auditory"].abs().idxmax() == "atom_3"
    assert z.loc["default mode"].abs().idxmax() == "atom_8"
    summary = json.loads((out / "summary.json").read_text())
    assert "networks/minilm" in summary["skipped"]
