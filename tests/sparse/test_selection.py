"""Choosing k and λ: the sweep and the rule."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from napari_brainorg.sparse.planted import planted_ans
from napari_brainorg.errors import BrainorgWarning, CancelledError, ConfigError, ShapeError
from napari_brainorg.sparse.selection import (
    choose_k_lambda,
    match_atoms,
    matched_correlation,
    sweep_dictionary,
)



def _planted(rng, n_volumes, n_ans, k, **kw):
    return planted_ans(n_volumes, n_ans, k, random_state=rng, **kw)


def test_match_atoms_finds_the_permutation(rng):
    ref = rng.standard_normal((50, 5))
    perm = np.array([3, 0, 4, 1, 2])
    signs = np.array([1, -1, 1, -1, 1])
    est = ref[:, perm] * signs * 2.0 + 0.01 * rng.standard_normal((50, 5))
    rows, cols, r = match_atoms(ref, est)
    np.testing.assert_array_equal(perm[cols], rows)
    assert np.all(r > 0.99)
    assert matched_correlation(ref, est) > 0.99
    # fewer atoms on one side: min(k1, k2) pairs
    assert len(match_atoms(ref, est[:, :3])[2]) == 3
    assert matched_correlation(ref, rng.standard_normal((50, 5))) < 0.5
    with pytest.raises(ShapeError, match="same number of volumes"):
        match_atoms(ref, est[:40])


def test_sweep_picks_the_planted_number_of_atoms(rng):
    # 6 planted atoms, SNR 4 (variance), 800 ANs x 80 volumes
    X, _ = _planted(rng, n_volumes=80, n_ans=800, k=6)
    calls = []
    table = sweep_dictionary(X, [3, 6, 10], [0.15], lam_scale="rms", n_seeds=3, random_state=0,
                             progress=lambda *a: calls.append(a))
    assert table.shape[0] == 3 and table["k"].tolist() == [3, 6, 10]
    assert calls[-1] == ("dictionary sweep", 9, 9)
    np.testing.assert_allclose(table["alpha"], 0.15)
    np.testing.assert_allclose(table["lam"], 0.15 * np.sqrt(80), rtol=1e-5)
    by_k = table.set_index("k")
    # too few atoms explain less; the planted ones are found again from every seed;
    # atoms beyond the planted ones fit noise and do not come back
    assert by_k.loc[3, "heldout_r2"] < by_k.loc[6, "heldout_r2"] - 0.1
    assert by_k.loc[6, "stability"] > 0.98 and by_k.loc[6, "reproducible_fraction"] == 1.0
    assert by_k.loc[10, "stability"] < by_k.loc[6, "stability"] - 0.05
    assert by_k.loc[10, "reproducible_fraction"] <= 0.8
    assert 1.5 < by_k.loc[6, "nonzeros_per_an"] < 4
    assert table["encoding_score"].isna().all()
    assert choose_k_lambda(table)["k"] == 6


def test_sweep_with_an_encoding_score_and_absolute_lambda(rng):
    X, planted = _planted(rng, n_volumes=60, n_ans=400, k=4)
    seen = []

    def score(D):
        seen.append(D.shape)
        return matched_correlation(planted, D)

    table = sweep_dictionary(X, [4], [0.5, 1.0], n_seeds=2, random_state=1, encoding_score=score)
    assert seen == [(60, 4)] * 4
    assert table["lam"].tolist() == [0.5, 1.0]
    assert (table["encoding_score"] > 0.9).all()
    # a larger lambda gives sparser codes
    assert table["nonzeros_per_an"].iloc[1] < table["nonzeros_per_an"].iloc[0]
    assert choose_k_lambda(table, "encoding")["k"] == 4


def test_sweep_is_reproducible_and_cancellable(rng):
    X, _ = _planted(rng, n_volumes=40, n_ans=200, k=3)
    a = sweep_dictionary(X, [3], [1.0], n_seeds=2, random_state=5)
    b = sweep_dictionary(X, [3], [1.0], n_seeds=2, random_state=5)
    pd.testing.assert_frame_equal(a.drop(columns="time_s"), b.drop(columns="time_s"))
    stop = threading.Event()
    stop.set()
    with pytest.raises(CancelledError):
        sweep_dictionary(X, [3], [1.0], cancel=stop)


def test_sweep_bad_input(rng):
    X, _ = _planted(rng, n_volumes=20, n_ans=50, k=2)
    with pytest.raises(ValueError, match="'ks' must hold numbers > 0; 0 was provided"):
        sweep_dictionary(X, [0], [1.0])
    with pytest.raises(ValueError, match="'lams' must hold at least one value"):
        sweep_dictionary(X, [2], [])
    with pytest.raises(ValueError, match="'holdout_fraction' must be a number in \\(0, 1\\)"):
        sweep_dictionary(X, [2], [1.0], holdout_fraction=1.0)
    with pytest.raises(ConfigError, match="'lam_scale' must be one of"):
        sweep_dictionary(X, [2], [1.0], lam_scale="std")
    with pytest.raises(ShapeError, match="'X' must be a 2D array"):
        sweep_dictionary(X[:, 0], [2], [1.0])


def _table(rows):
    return pd.DataFrame(rows, columns=["k", "lam", "heldout_r2", "stability", "reproducible_fraction",
                                       "encoding_score"])


def test_choose_k_lambda_rules():
    table = _table([
        (8, 1.0, 0.50, 0.95, 1.0, 0.10),
        (8, 2.0, 0.495, 0.96, 1.0, 0.12),
        (16, 1.0, 0.56, 0.90, 0.95, 0.20),
        (16, 2.0, 0.555, 0.91, 0.95, 0.15),
        (32, 1.0, 0.565, 0.85, 0.9, 0.30),
        (48, 1.0, 0.58, 0.85, 0.7, 0.35),   # stable on average, but 30% of atoms do not come back
        (64, 1.0, 0.60, 0.60, 0.3, 0.40),   # best R2 but unstable
    ])
    # stable_r2: best held-out R2 among stability >= 0.8 and >= 90% reproduced -> (32, 1.0)
    row = choose_k_lambda(table)
    assert (row["k"], row["lam"]) == (32, 1.0)
    assert choose_k_lambda(table, min_reproducible=0.7)["k"] == 48
    assert choose_k_lambda(table, min_stability=0.5, min_reproducible=0.0)["k"] == 64
    # parsimonious: within 0.01 of 0.565 -> k 16 (0.56, 0.555), then the larger lambda
    row = choose_k_lambda(table, "parsimonious")
    assert (row["k"], row["lam"]) == (16, 2.0)
    row = choose_k_lambda(table, "parsimonious", tolerance=0.1)
    assert (row["k"], row["lam"]) == (8, 2.0)
    # encoding: best score among stable settings
    assert choose_k_lambda(table, "encoding")["k"] == 32
    with pytest.warns(BrainorgWarning, match="No \\(k, lambda\\) reaches stability 0.99"):
        row = choose_k_lambda(table, min_stability=0.99)
    assert (row["k"], row["lam"]) == (8, 2.0)  # fully reproduced, then the most stable


def test_choose_k_lambda_bad_input():
    table = _table([(8, 1.0, 0.5, np.nan, np.nan, np.nan)])
    with pytest.raises(ConfigError, match="'rule' must be one of"):
        choose_k_lambda(table, "best")
    with pytest.raises(ValueError, match="n_seeds >= 2"):
        choose_k_lambda(table)
    with pytest.raises(ShapeError, match="columns \\['stability'\\] are missing"):
        choose_k_lambda(table.drop(columns="stability"))
    table = _table([(8, 1.0, 0.5, 0.9, 1.0, np.nan)])
    with pytest.raises(ValueError, match="needs an encoding_score"):
        choose_k_lambda(table, "encoding")


def test_time_holdout_gives_noise_no_credit_where_an_holdout_does(rng):
    # pure noise: atoms learnt on some ANs "explain" other ANs over the same volumes
    # (a k-dimensional subspace of those volumes), but predict nothing in volumes held out
    X = rng.standard_normal((60, 600))
    X = (X - X.mean(0)) / X.std(0)
    by_ans = sweep_dictionary(X, [12], [0.05], lam_scale="rms", n_seeds=2, random_state=0, holdout="ans")
    by_time = sweep_dictionary(X, [12], [0.05], lam_scale="rms", n_seeds=2, random_state=0, holdout="time")
    assert by_ans["heldout_r2"].iloc[0] > 0.05
    assert by_time["heldout_r2"].iloc[0] < 0.01
    with pytest.raises(ValueError, match="training volumes"):
        sweep_dictionary(X, [40], [0.05], holdout_fraction=0.3, gap=5)
