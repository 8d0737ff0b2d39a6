"""Permutation nulls, FDR, noise ceiling and group tests."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from napari_brainorg.encoding.ridge import contiguous_folds
from napari_brainorg.encoding.scores import correlation_columns
from napari_brainorg.encoding.stats import (
    block_permutation_null,
    circular_shift_null,
    fdr_bh,
    fwe_p_values,
    group_one_sample,
    make_ridge_score_fn,
    noise_ceiling_isc,
)
from napari_brainorg.errors import ConfigError, ShapeError


def _ar1(rng, shape, phi=0.7):
    """Autocorrelated noise (AR(1) along axis 0), as in fMRI."""
    e = rng.standard_normal(shape)
    out = np.empty_like(e)
    out[0] = e[0]
    for t in range(1, shape[0]):
        out[t] = phi * out[t - 1] + e[t]
    return out


def _corr_with_first(X, Y):
    return correlation_columns(np.repeat(X[:, :1], Y.shape[1], axis=1), Y)


def test_circular_shift_null_is_valid_and_detects_signal(rng):
    n, n_noise = 300, 400
    X = _ar1(rng, (n, 2))
    Y = np.column_stack([X[:, :1] + 0.5 * _ar1(rng, (n, 5)), _ar1(rng, (n, n_noise))])
    seen = []

    def score_fn(Xs, Ys):
        seen.append(Xs)
        return _corr_with_first(Xs, Ys)

    null, p = circular_shift_null(X, Y, score_fn, n_permutations=99, min_shift=20, random_state=0)
    assert null.shape == (99, 5 + n_noise)
    np.testing.assert_allclose(p[:5], 1 / 100)                  # nothing beats the real alignment
    frac = np.mean(p[5:] < 0.05)
    assert 0.01 <= frac <= 0.10                                  # nominal rate on noise voxels
    for Xs in seen[1:]:                                          # every permutation is a roll...
        shift = (-int(np.flatnonzero(X[:, 0] == Xs[0, 0])[0])) % n
        np.testing.assert_array_equal(Xs, np.roll(X, shift, axis=0))
        assert 20 <= shift <= n - 20                             # ...by at least min_shift
    with pytest.raises(ConfigError, match="'min_shift'"):
        circular_shift_null(X, Y, score_fn, n_permutations=2, min_shift=200)


def test_block_permutation_keeps_blocks(rng):
    n = 120
    X = _ar1(rng, (n, 2))
    Y = np.column_stack([X[:, :1] + 0.3 * rng.standard_normal((n, 1)), rng.standard_normal((n, 30))])
    seen = []

    def score_fn(Xs, Ys):
        seen.append(Xs)
        return _corr_with_first(Xs, Ys)

    res = block_permutation_null(X, Y, score_fn, n_permutations=49, block_size=10, random_state=1,
                                 keep_null=False)
    assert res.null is None and res.p_values[0] == pytest.approx(1 / 50)
    blocks = [X[i:i + 10] for i in range(0, n, 10)]
    for Xs in seen[1:]:
        pieces = [Xs[i:i + 10] for i in range(0, n, 10)]
        assert all(any(np.array_equal(piece, b) for b in blocks) for piece in pieces)


def test_ridge_score_fn_null_with_fixed_alpha(rng):
    n = 120
    X = _ar1(rng, (n, 4))
    Y = np.column_stack([X @ [1.0, -0.5, 0, 0] + rng.standard_normal(n), rng.standard_normal((n, 6))])
    folds = contiguous_folds(n, 4, 2)
    score_fn = make_ridge_score_fn(folds, fixed_alpha=10.0, inner_folds=3, gap=2)
    null, p = circular_shift_null(X, Y, score_fn, n_permutations=19, random_state=2)
    assert p[0] == pytest.approx(1 / 20)
    assert null[:, 0].max() < score_fn(X, Y)[0]
    with pytest.raises(ShapeError, match="one score per voxel"):
        circular_shift_null(X, Y, lambda a, b: np.zeros(3), n_permutations=2)


def test_fdr_bh_equals_scipy(rng):
    p = np.concatenate([rng.uniform(0, 1e-3, 20), rng.uniform(0, 1, 200)])
    reject, q = fdr_bh(p, 0.05)
    np.testing.assert_allclose(q, sps.false_discovery_control(p), rtol=1e-12)
    np.testing.assert_array_equal(reject, q <= 0.05)
    assert reject[:20].all()
    grid = p.reshape(11, 20).copy()
    grid[0, 0] = np.nan
    reject2, q2 = fdr_bh(grid)
    assert q2.shape == grid.shape and np.isnan(q2[0, 0]) and not reject2[0, 0]
    np.testing.assert_allclose(q2.ravel()[1:], sps.false_discovery_control(grid.ravel()[1:]), rtol=1e-12)
    with pytest.raises(ConfigError, match="'q'"):
        fdr_bh(p, 1.5)


def test_fwe_p_values_from_the_maximum():
    null = np.array([[0.1, 0.5], [0.3, 0.2], [0.05, 0.9]])
    np.testing.assert_allclose(fwe_p_values(null, [0.6, 0.95]), [2 / 4, 1 / 4])


def test_noise_ceiling_matches_the_known_shared_signal(rng):
    n, v, n_sub = 3000, 40, 4
    shared = rng.standard_normal((n, v))
    Ys = [shared + rng.standard_normal((n, v)) for _ in range(n_sub)]
    expected = 1 / np.sqrt(2 * (1 + 1 / (n_sub - 1)))     # var_s / sqrt((vs+ve)(vs+ve/(S-1)))
    isc = noise_ceiling_isc(Ys)
    assert isc.shape == (v,)
    assert abs(isc.mean() - expected) < 0.01
    np.testing.assert_allclose(noise_ceiling_isc(Ys, squared=True), isc**2, rtol=1e-12)
    alone = noise_ceiling_isc([rng.standard_normal((n, v)) for _ in range(3)])
    assert abs(alone.mean()) < 0.01
    with pytest.raises(ShapeError, match="at least 2 subjects"):
        noise_ceiling_isc(Ys[:1])


def test_group_t_equals_scipy(rng):
    maps = rng.standard_normal((8, 3, 4)) + 0.5
    t, p = group_one_sample(maps, method="t")
    ref = sps.ttest_1samp(maps, 0.0, axis=0)
    np.testing.assert_allclose(t, ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(p, ref.pvalue, rtol=1e-10)


def test_sign_flip_exact_p_equals_enumeration(rng):
    maps = rng.standard_normal((5, 30)) + np.linspace(0, 2, 30)
    t, p = group_one_sample(maps, method="sign_flip", n_permutations=1000)
    t_obs = sps.ttest_1samp(maps, 0.0, axis=0).statistic
    flips = [sps.ttest_1samp(maps * np.array(s)[:, None], 0.0, axis=0).statistic
             for s in itertools.product([1, -1], repeat=5)]
    expected = np.mean(np.abs(flips) >= np.abs(t_obs) - 1e-9, axis=0)
    np.testing.assert_allclose(t, t_obs, rtol=1e-10)
    np.testing.assert_allclose(p, expected)
    _, p_max = group_one_sample(maps, n_permutations=1000, max_stat=True)
    assert np.all(p_max >= p)


def test_sign_flip_false_positive_rate_and_power(rng):
    null_maps = rng.standard_normal((12, 2000))
    _, p = group_one_sample(null_maps, n_permutations=999, random_state=3)
    assert 0.03 <= np.mean(p < 0.05) <= 0.07
    effect = rng.standard_normal((12, 5)) + 3.0
    _, p_eff = group_one_sample(effect, n_permutations=999, alternative="greater", random_state=3)
    assert np.all(p_eff <= 3 / 1000)      # only the identity pattern, if drawn, ties
    with pytest.raises(ConfigError, match="'method'"):
        group_one_sample(null_maps, method="wilcoxon")
