"""Layer histograms of each atom's ANs: counts, normalisations, main layer, spread."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from napari_brainorg.analyses.layers import layer_histogram, layer_spread, layer_summary, membership
from napari_brainorg.errors import ConfigError, ShapeError


@pytest.fixture
def an_index():
    # 3 layers of unequal size: 4, 2, 6 ANs.
    return pd.DataFrame({"layer": [0] * 4 + [1] * 2 + [2] * 6, "unit": list(range(4)) + [0, 1] + list(range(6))})


@pytest.fixture
def codes():
    A = np.zeros((3, 12))
    A[0, [0, 1, 2, 3]] = [1.0, -0.5, 0.2, 0.01]   # all in layer 0, one tiny code
    A[1, [0, 4, 6, 7]] = [1.0, 1.0, -1.0, 2.0]    # layers 0, 1, 2, 2
    return A                                       # atom 2: no member


def test_counts_per_atom_and_layer(codes, an_index):
    hist = layer_histogram(codes, an_index)
    assert hist.index.name == "atom" and list(hist.columns) == [0, 1, 2]
    assert hist.to_numpy().tolist() == [[4, 0, 0], [1, 1, 2], [0, 0, 0]]
    # Same answer from a sparse code matrix and with a threshold on |code|.
    assert layer_histogram(sp.csr_matrix(codes), an_index).equals(hist)
    assert layer_histogram(codes, an_index, threshold=0.05).loc[0, 0] == 3


def test_signed_membership(codes, an_index):
    pos = layer_histogram(codes, an_index, sign="positive")
    neg = layer_histogram(codes, an_index, sign="negative")
    assert pos.loc[1].tolist() == [1, 1, 1] and neg.loc[1].tolist() == [0, 0, 1]
    assert (pos + neg).equals(layer_histogram(codes, an_index))
    assert membership(codes, sign="negative").sum() == 2


def test_normalisations(codes, an_index):
    by_atom = layer_histogram(codes, an_index, normalize="atom")
    np.testing.assert_allclose(by_atom.loc[1].to_numpy(), [0.25, 0.25, 0.5])
    assert by_atom.loc[2].isna().all()
    by_layer = layer_histogram(codes, an_index, normalize="layer")
    np.testing.assert_allclose(by_layer.loc[1].to_numpy(), [1 / 4, 1 / 2, 2 / 6])


def test_requested_layers_give_zero_columns(codes, an_index):
    hist = layer_histogram(codes, an_index, layers=[0, 1, 2, 3])
    assert list(hist.columns) == [0, 1, 2, 3] and hist[3].sum() == 0


def test_summary_main_layer_and_spread(codes, an_index):
    summary = layer_summary(layer_histogram(codes, an_index))
    assert summary["n_ans"].tolist() == [4, 4, 0]
    assert summary.loc[0, "main_layer"] == 0 and summary.loc[1, "main_layer"] == 2
    assert pd.isna(summary.loc[2, "main_layer"])
    assert summary.loc[0, "layer_spread"] == 0.0 and summary.loc[0, "effective_layers"] == 1.0
    h = -(2 * 0.25 * np.log(0.25) + 0.5 * np.log(0.5))
    assert summary.loc[1, "layer_entropy"] == pytest.approx(h)
    assert summary.loc[1, "layer_spread"] == pytest.approx(h / np.log(3))
    assert summary.loc[1, "mean_layer"] == pytest.approx(0.25 * 0 + 0.25 * 1 + 0.5 * 2)
    assert summary.loc[1, "main_layer_fraction"] == 0.5


def test_even_spread_is_one():
    hist = pd.DataFrame([[5, 5, 5, 5]], columns=[0, 1, 2, 3])
    assert layer_spread(hist).iloc[0] == pytest.approx(1.0)


def test_bad_inputs(codes, an_index):
    with pytest.raises(ShapeError, match="12 columns"):
        layer_histogram(codes, an_index.iloc[:5])
    with pytest.raises(ShapeError, match="'layer' column"):
        layer_histogram(codes, an_index.rename(columns={"layer": "depth"}))
    with pytest.raises(ConfigError, match="'normalize'"):
        layer_histogram(codes, an_index, normalize="atoms")
