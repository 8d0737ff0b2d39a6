"""Models side by side: coverage, consistency with n atoms, diversity, encoding summary."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from napari_brainorg.analyses.comparison import (
    compare_models,
    coverage_summary,
    diversity_table,
    encoding_summary,
    fbn_coverage,
)
from napari_brainorg.errors import ShapeError


def _table(links: dict[str, list[int]], n_atoms: int, networks=("auditory", "default mode", "visual")):
    rows = [(a, n, a in links.get(n, [])) for a in range(n_atoms) for n in networks]
    return pd.DataFrame(rows, columns=["atom", "network", "associated"]).assign(overlap=0.1)


@pytest.fixture
def models(rng):
    n = 200
    shared = rng.standard_normal(n)
    a = rng.standard_normal((n, 12))
    a[:, [0, 1, 2]] += 2 * shared[:, None]  # model A: three consistent auditory atoms
    b = rng.standard_normal((n, 8))         # model B: independent atoms
    atoms = {"A": a, "B": b}
    tables = {"A": _table({"auditory": [0, 1, 2], "default mode": [5]}, 12),
              "B": _table({"auditory": [3, 4], "visual": [1]}, 8)}
    return atoms, tables


def test_coverage_counts_atoms_per_network(models):
    _, tables = models
    cov = fbn_coverage(tables)
    assert list(cov.columns) == ["A", "B"] and list(cov.index) == ["auditory", "default mode", "visual"]
    assert cov.to_dict() == {"A": {"auditory": 3, "default mode": 1, "visual": 0},
                             "B": {"auditory": 2, "default mode": 0, "visual": 1}}
    summary = coverage_summary(tables)
    assert summary.loc["A", "n_atoms_associated"] == 4 and summary.loc["B", "n_networks_covered"] == 2


def test_diversity_table(models):
    atoms, _ = models
    div = diversity_table(atoms)
    assert div.loc["A", "n_atoms"] == 12 and div.loc["B", "n_atoms"] == 8
    assert div.loc["B", "diversity"] > div.loc["A", "diversity"]  # A has a correlated trio


def test_compare_models_side_by_side(models, rng):
    atoms, tables = models
    r2 = {"A": rng.uniform(0, 0.1, 1000), "B": np.stack([rng.uniform(0, 0.2, 1000)] * 2)}
    out = compare_models(atoms, tables, r2_by_model=r2, n_null=500, random_state=0)
    cons, summary = out["consistency"], out["summary"]
    row = cons[(cons["model"] == "A") & (cons["network"] == "auditory")].iloc[0]
    assert row["n_atoms"] == 3 and row["consistency"] > 0.6
    assert summary.loc["A", "n_networks_with_consistency"] == 1  # only auditory has >= 2 atoms
    assert summary.loc["A", "mean_consistency"] == pytest.approx(row["consistency"])
    assert summary.loc["B", "r2_median"] == pytest.approx(np.median(r2["B"][0]))
    assert {"n_atoms", "diversity", "effective_number", "n_networks_covered", "r2_p95"} <= set(summary.columns)


def test_encoding_summary_from_images(tmp_path):
    mask = np.zeros((4, 4, 4), np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    data = np.full((4, 4, 4), 0.9, np.float32)  # outside the mask: must be ignored
    data[mask > 0] = np.linspace(0, 0.14, 8)
    img, mask_img = nib.Nifti1Image(data, np.eye(4)), nib.Nifti1Image(mask, np.eye(4))
    nib.save(img, tmp_path / "r2.nii.gz")
    s = encoding_summary({"m": str(tmp_path / "r2.nii.gz")}, mask_img=mask_img, threshold=0.05)
    assert s.loc["m", "n_voxels"] == 8 and s.loc["m", "max"] == pytest.approx(0.14)
    assert s.loc["m", "fraction_above"] == pytest.approx(5 / 8)
    with pytest.raises(ShapeError, match="mask_img"):
        encoding_summary({"m": img})


def test_bad_tables(models):
    atoms, tables = models
    with pytest.raises(ShapeError, match="'A' lacks"):
        fbn_coverage({"A": tables["A"].drop(columns="associated")})
    with pytest.raises(ShapeError, match="same models"):
        compare_models(atoms, {"A": tables["A"]})
