"""Drift high-pass, z-scoring and FIR delays."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brainorg.encoding.preprocessing import (
    ConstantColumnsWarning,
    cosine_drift_basis,
    drift_basis,
    highpass,
    make_delays,
    zscore,
)
from napari_brainorg.errors import ConfigError, ShapeError


@pytest.mark.parametrize("n_volumes, tr, cutoff", [(300, 1.5, 128.0), (97, 2.0, 100.0), (50, 0.8, 20.0)])
def test_cosine_basis_equals_nilearn(n_volumes, tr, cutoff):
    from nilearn.signal import create_cosine_drift

    expected = create_cosine_drift(1.0 / cutoff, np.arange(n_volumes) * tr)[:, :-1]
    basis = cosine_drift_basis(n_volumes, tr, cutoff)
    assert basis.shape == expected.shape
    np.testing.assert_allclose(basis, expected, atol=1e-12)


def test_highpass_removes_drifts_and_keeps_fast_signal():
    n, tr = 300, 1.5
    t = np.arange(n) * tr
    fast = np.sin(2 * np.pi * t / 12.0)                       # 12 s period: kept
    slow = 3 * np.cos(np.pi / n * (np.arange(n) + 0.5) * 2)   # a drift in the basis
    Y = np.stack([fast + slow + 0.02 * t + 7.0, slow + 0.02 * t], axis=1)
    out = highpass(Y, tr, 128.0)
    # Drift, trend and mean are gone entirely from the second column...
    np.testing.assert_allclose(out[:, 1], 0.0, atol=1e-10)
    # ...and the fast oscillation survives almost untouched in the first.
    assert np.corrcoef(out[:, 0], fast)[0, 1] > 0.999
    assert abs(out[:, 0].std() / fast.std() - 1) < 0.01


def test_highpass_is_the_least_squares_residual_on_the_basis(rng):
    n, tr = 120, 2.0
    Y = rng.standard_normal((n, 6)).cumsum(0)
    t = np.linspace(-1, 1, n)
    design = np.column_stack([np.ones(n), t, cosine_drift_basis(n, tr, 128.0)])
    beta, *_ = np.linalg.lstsq(design, Y, rcond=None)
    np.testing.assert_allclose(highpass(Y, tr, 128.0), Y - design @ beta, atol=1e-10)
    # float32 stays float32, in place when asked, linear (same filter for X and Y).
    Y32 = Y.astype(np.float32)
    out = highpass(Y32, tr, copy=False)
    assert out is Y32 and out.dtype == np.float32
    np.testing.assert_allclose(highpass(3 * Y, tr), 3 * highpass(Y, tr), atol=1e-9)


def test_highpass_options_and_errors(rng):
    Y = rng.standard_normal((80, 3)) + np.linspace(0, 5, 80)[:, None]
    mean_only = highpass(Y, 2.0, cutoff=None, detrend=False)
    np.testing.assert_allclose(mean_only, Y - Y.mean(0), atol=1e-12)
    assert drift_basis(80, 2.0, None, detrend=2).shape == (80, 3)
    with pytest.raises(ConfigError, match="'tr'"):
        highpass(Y, 0.0)
    with pytest.raises(ConfigError, match="'cutoff'"):
        cosine_drift_basis(80, 2.0, -1)
    with pytest.raises(ShapeError, match="n_volumes, n_columns"):
        highpass(np.zeros((2, 3, 4)), 2.0)


def test_zscore_reports_constant_columns(rng):
    Y = rng.standard_normal((50, 4)).astype(np.float32) * 3 + 10
    Y[:, 2] = 5.0
    with pytest.warns(ConstantColumnsWarning, match="1 of 4 columns"):
        Z, constant = zscore(Y, return_constant=True)
    assert Z.dtype == np.float32
    np.testing.assert_array_equal(constant, [False, False, True, False])
    np.testing.assert_allclose(Z[:, 2], 0.0)
    keep = ~constant
    np.testing.assert_allclose(Z[:, keep].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(Z[:, keep].std(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(zscore(Y[:, keep].T, axis=1), Z[:, keep].T, atol=1e-5)
    W = Y[:, keep].copy()
    assert zscore(W, copy=False) is W


def test_make_delays_shifts_and_zero_fills():
    X = np.arange(1, 13, dtype=float).reshape(6, 2)
    out = make_delays(X, (0, 2, -1))
    assert out.shape == (6, 6)
    np.testing.assert_array_equal(out[:, :2], X)
    np.testing.assert_array_equal(out[:2, 2:4], 0)
    np.testing.assert_array_equal(out[2:, 2:4], X[:-2])
    np.testing.assert_array_equal(out[:-1, 4:6], X[1:])
    np.testing.assert_array_equal(out[-1, 4:6], 0)
    with pytest.raises(ConfigError, match="'delays'"):
        make_delays(X, (0.5,))
    with pytest.raises(ConfigError, match="shorter than the run"):
        make_delays(X, (6,))
    with pytest.raises(ConfigError, match="'delays'"):
        make_delays(X, ())
