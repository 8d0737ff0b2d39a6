"""Model-size control: equal numbers of ANs per model and per layer, over draws."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_brainorg.analyses.subsample import common_subsample_size, run_subsampled, subsample_ans
from napari_brainorg.errors import ConfigError, ShapeError


@pytest.fixture
def an_index():
    sizes = {0: 50, 1: 30, 2: 80}
    layers = np.concatenate([[layer] * n for layer, n in sizes.items()])
    units = np.concatenate([np.arange(n) for n in sizes.values()])
    return pd.DataFrame({"layer": layers, "unit": units, "site": "ffn_hidden"})


def test_equal_numbers_per_layer(an_index):
    draws = subsample_ans(an_index, n_per_layer=20, n_draws=5, random_state=0)
    assert len(draws) == 5
    for cols in draws:
        assert cols.dtype == np.int64 and np.all(np.diff(cols) > 0)  # sorted, no repeats
        assert an_index["layer"].iloc[cols].value_counts().to_dict() == {0: 20, 1: 20, 2: 20}
    assert len({tuple(c) for c in draws}) == 5  # draws differ


def test_total_spread_over_layers(an_index):
    for cols in subsample_ans(an_index, n_total=62, by_layer=True, n_draws=4, random_state=1):
        counts = an_index["layer"].iloc[cols].value_counts()
        assert counts.sum() == 62 and set(counts) <= {20, 21}


def test_simple_random_total(an_index):
    draws = subsample_ans(an_index, n_total=40, n_draws=300, random_state=2)
    assert all(len(c) == 40 for c in draws)
    # Each AN is drawn with probability 40/160: layer shares follow layer sizes.
    share = np.mean([np.mean(an_index["layer"].to_numpy()[c] == 2) for c in draws])
    assert share == pytest.approx(80 / 160, abs=0.02)


def test_same_seed_same_draws(an_index):
    a = subsample_ans(an_index, n_per_layer=5, n_draws=3, random_state=7)
    b = subsample_ans(an_index, n_per_layer=5, n_draws=3, random_state=7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_common_size_across_models(an_index):
    small = an_index[an_index["layer"] != 2]
    assert common_subsample_size({"big": an_index, "small": small}) == 80
    assert common_subsample_size({"big": an_index, "small": small}, per_layer=True) == 30


def test_run_subsampled_passes_the_drawn_columns(an_index, rng):
    X = rng.standard_normal((25, len(an_index)))
    seen = []

    def fit(Xd, index_draw):
        seen.append((Xd.shape, index_draw["layer"].value_counts().to_dict()))
        return Xd.mean()

    calls = []
    results = run_subsampled(X, an_index, fit, n_per_layer=10, n_draws=3, random_state=0,
                             progress=lambda *a: calls.append(a))
    assert [r["draw"] for r in results] == [0, 1, 2]
    assert all(s == ((25, 30), {0: 10, 1: 10, 2: 10}) for s in seen)
    assert results[1]["result"] == pytest.approx(X[:, results[1]["columns"]].mean())
    assert calls[-1] == ("subsample", 3, 3)


def test_errors(an_index):
    with pytest.raises(ConfigError, match=r"exceeds.*\{1: 30\}"):
        subsample_ans(an_index, n_per_layer=40)
    with pytest.raises(ConfigError, match="exactly one"):
        subsample_ans(an_index, n_per_layer=4, n_total=10)
    with pytest.raises(ConfigError, match=r"\[1, 160\]"):
        subsample_ans(an_index, n_total=500)
    with pytest.raises(ConfigError, match="Layer 9"):
        subsample_ans(an_index, n_per_layer=2, layers=[0, 9])
    with pytest.raises(ShapeError, match="n_volumes, 160"):
        run_subsampled(np.zeros((5, 3)), an_index, lambda *a: None, n_total=3)
