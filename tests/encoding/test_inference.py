"""The inference engine: draws, permutation p-values, tail floor, FDR, group statistics."""

import numpy as np
import pytest
from scipy import stats

from napari_brainorg.encoding.inference import (
    between_subject_spectrum,
    apply_phases,
    circular_shift_draws,
    fdr,
    gpd_tail_pvalues,
    group_effects,
    group_effects_method,
    permutation_p,
    phase_cross_products,
    phase_randomisation_draws,
    phase_randomise,
    shift_phases,
    stouffer_p,
)
from napari_brainorg.errors import ConfigError


def test_permutation_p_counts_ties_and_never_goes_below_the_draws():
    null = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, np.nan], [3.0, 4.0]])
    p = permutation_p(np.array([2.0, 9.0]), null)
    np.testing.assert_allclose(p, [(1 + 2) / 5, 1 / 4])  # a tie counts; NaN is no draw
    np.testing.assert_allclose(permutation_p(np.array([-3.0, 0.0]), null, alternative="less"), [1 / 5, 1 / 4])
    np.testing.assert_allclose(permutation_p(np.array([-3.0, 0.5]), null, alternative="two-sided"), [2 / 5, 4 / 4])


def test_shift_phases_are_np_roll_and_cross_products_are_exact(rng):
    n = 51
    X = rng.standard_normal((n, 3))
    Y = rng.standard_normal((n, 4))
    shifts = circular_shift_draws(n, 7, random_state=0)
    assert len(set(shifts)) == 7 and shifts.min() >= 5 and shifts.max() <= n - 5
    turned = apply_phases(X, shift_phases(shifts, n))
    for d, s in enumerate(shifts):
        np.testing.assert_allclose(turned[d], np.roll(X, s, axis=0), atol=1e-12)
    phases = np.vstack([shift_phases(shifts, n), phase_randomisation_draws(n, 5, random_state=1)])
    direct = np.einsum("dta,tb->dab", apply_phases(X, phases), Y)
    np.testing.assert_allclose(phase_cross_products(X, Y, phases, chunk=3), direct, atol=1e-10)
    # even length: the Nyquist term is weighted once
    X2, Y2 = rng.standard_normal((40, 2)), rng.standard_normal((40, 2))
    ph = phase_randomisation_draws(40, 4, random_state=2)
    np.testing.assert_allclose(phase_cross_products(X2, Y2, ph),
                               np.einsum("dta,tb->dab", apply_phases(X2, ph), Y2), atol=1e-10)
    # every allowed shift once when more draws are asked for than exist
    np.testing.assert_array_equal(circular_shift_draws(20, 1000, min_shift=3), np.arange(3, 18))


def test_phase_randomisation_keeps_spectrum_and_gram_and_breaks_the_lock(rng):
    X = np.cumsum(rng.standard_normal((300, 4)), axis=0)
    X -= X.mean(0)
    S = phase_randomise(X, random_state=3)
    np.testing.assert_allclose(np.abs(np.fft.rfft(S, axis=0)), np.abs(np.fft.rfft(X, axis=0)), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(S.T @ S, X.T @ X, rtol=1e-8)  # correlations between columns kept
    assert abs(np.corrcoef(S[:, 0], X[:, 0])[0, 1]) < 0.9


def test_gpd_tail_endpoint_gets_the_permutation_floor_not_1e12(rng):
    # regression: beyond a bounded tail's end p used to be 1e-12 (4 of 4,352 pure-noise
    # tests got p < 1e-6 whose permutation p was 1e-3 to 8e-3)
    n = 999
    u = rng.random((n, 1))
    top = -np.sort(-u, axis=0)[: n // 10 + 1]
    p = gpd_tail_pvalues(np.array([5.0]), top, np.array([n]))
    assert p[0] == 1 / (1 + n)
    # on pure noise, tail p-values are never below what the draws support
    null = rng.standard_normal((n, 2000))
    observed = rng.standard_normal(2000) * 1.2
    top = -np.sort(-null, axis=0)[: n // 10 + 1]
    pt = gpd_tail_pvalues(observed, top, np.full(2000, n))
    assert np.nanmin(pt) >= 1 / (1 + n)


def test_fdr_is_scipys_bh_and_skips_nan(rng):
    p = rng.random(300) ** 3
    reject, q = fdr(p, 0.05)
    np.testing.assert_allclose(q, stats.false_discovery_control(p), rtol=1e-12)
    np.testing.assert_array_equal(reject, q <= 0.05)
    grid = np.r_[np.nan, p[:9]].reshape(2, 5)
    reject2, q2 = fdr(grid)
    assert np.isnan(q2[0, 0]) and not reject2[0, 0]
    np.testing.assert_allclose(q2.ravel()[1:], stats.false_discovery_control(p[:9]), rtol=1e-12)
    with pytest.raises(ConfigError, match="'alpha' must be a rate"):
        fdr(p, 1.5)


def test_stouffer_one_subject_with_p_one_does_not_hide_the_group(rng):
    # regression: 12 of 27 subjects with p <= 0.05 and one with p = 1 gave z = -inf, q = 1
    n_draws = 999
    p = np.r_[np.full(12, 0.01), rng.uniform(0.05, 1, 14), 1.0][:, None]
    z, p_group = stouffer_p(p, n_draws=n_draws)
    assert np.isfinite(z).all() and p_group[0] < 1e-4
    # mid-p: symmetric and centred under the null
    grid = (np.arange(1, n_draws + 2) / (n_draws + 1))[None]
    z_grid, _ = stouffer_p(grid, n_draws=n_draws)
    np.testing.assert_allclose(z_grid[0], -z_grid[-1])
    assert abs(stats.norm.isf(grid[0] - 0.5 / (n_draws + 1)).mean()) < 1e-9
    # null subjects' permutation p-values combine to a calibrated group p
    null_p = rng.integers(1, n_draws + 2, size=(8, 20000)) / (n_draws + 1)
    _, pg = stouffer_p(null_p, n_draws=n_draws)
    assert 0.04 < np.mean(pg < 0.05) < 0.06


def test_group_effects_random_from_six_subjects_fixed_below(rng):
    assert group_effects_method(5) == "fixed" and group_effects_method(6) == "random"
    assert group_effects_method(3, "random") == "random"
    eff = rng.standard_normal((8, 20000))
    z, used = group_effects(eff)
    assert used == "random"
    assert 0.04 < np.mean(np.abs(z) > 1.96) < 0.06
    zs = rng.standard_normal((3, 20000))
    zf, used = group_effects(zs * 0.1, zs)
    assert used == "fixed"
    np.testing.assert_allclose(zf, zs.sum(0) / np.sqrt(3))
    with pytest.raises(ConfigError, match="'group_effects' must be one of"):
        group_effects_method(4, "mixed")


def test_between_subject_spectrum_ignores_the_shared_signal_and_gives_the_mean_projections_variance(rng):
    """A signal every subject shares leaves the spectrum unchanged; for white noise of variance
    v the spectrum is v at every frequency, so u' Sigma u / S = v ||u||^2 / S."""
    S, n, v = 8, 256, 2.0
    noise = rng.standard_normal((S, n, 3)) * np.sqrt(v)
    shared = np.cumsum(rng.standard_normal((n, 3)), 0)
    P = between_subject_spectrum(noise, smooth=1)
    np.testing.assert_allclose(between_subject_spectrum(noise + shared[None], smooth=1), P, atol=1e-9)
    assert abs(np.median(P) - v) < 0.15 * v
    u = rng.standard_normal(n)
    w = np.full(n // 2 + 1, 2.0)
    w[0] = w[-1] = 1.0
    # the variance of the subjects' mean projection over many noise draws
    proj = np.array([(u @ (rng.standard_normal((S, n)) * np.sqrt(v)).mean(0)) for _ in range(4000)])
    expected = (w / n * np.abs(np.fft.rfft(u)) ** 2) @ between_subject_spectrum(noise)[:, 0] / S
    assert proj.var() == pytest.approx(expected, rel=0.1)
    with pytest.raises(ValueError, match="at least 2 subjects"):
        between_subject_spectrum(noise[:1])


def test_phase_randomise_keeps_each_runs_own_spectrum(rng):
    """With runs, each story's segment is a surrogate of that segment alone: its amplitude
    spectrum and its columns' cross-spectra are kept, and nothing of the other story enters."""
    X = rng.standard_normal((130, 3)).cumsum(0)
    runs = [80, 50]
    Z = phase_randomise(X, random_state=0, runs=runs)
    for a, b in ((0, 80), (80, 130)):
        np.testing.assert_allclose(np.abs(np.fft.rfft(Z[a:b], axis=0)), np.abs(np.fft.rfft(X[a:b], axis=0)),
                                   rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(np.corrcoef(Z[a:b].T), np.corrcoef(X[a:b].T), atol=1e-8)
    whole = phase_randomise(X, random_state=0)  # one series: the segments' spectra are not kept
    assert not np.allclose(np.abs(np.fft.rfft(whole[:80], axis=0)), np.abs(np.fft.rfft(X[:80], axis=0)), rtol=1e-3)
    with pytest.raises(ValueError, match="add up"):
        phase_randomise(X, runs=[80, 40])
