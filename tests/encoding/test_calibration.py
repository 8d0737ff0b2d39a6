"""Group atom maps calibrated against phase-randomised atoms (encoding/calibration.py).

The null moments are checked against explicit phase-randomised draws; the maps against a
SIMULATED study whose subjects share a stimulus-locked signal, where the random-effects
group z of phase-randomised atoms exceeds its nominal rate and the calibrated z does not,
and a real driver's map survives the calibration.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.ndimage import gaussian_filter1d

from napari_brainorg.encoding.calibration import (
    cornish_fisher_z,
    leverage_inflation,
    moved_norm_share,
    phase_null_moments,
    stimulus_calibrated_maps,
)
from napari_brainorg.encoding.glm import gls_atom_maps
from napari_brainorg.encoding.inference import apply_phases, group_effects, phase_randomise, run_null_phases
from napari_brainorg.errors import ShapeError


def _turned(A: np.ndarray, phases: np.ndarray, runs) -> np.ndarray:
    """``A`` with each run's bins turned by its part of ``phases``."""
    ends, bins = np.cumsum(runs), np.cumsum([m // 2 + 1 for m in runs])
    return np.concatenate([apply_phases(A[e - m:e], phases[b - (m // 2 + 1):b])
                           for e, m, b in zip(ends, runs, bins)])


def test_null_moments_equal_those_of_explicit_draws():
    rng = np.random.default_rng(0)
    runs = [101, 80]  # an odd and an even run: the Nyquist bin of the second keeps its phase
    n = sum(runs)
    R, E, beta = rng.standard_normal((n, 3)), rng.standard_normal((n, 4)), rng.standard_normal((3, 4))
    T, mean, var, kappa4 = phase_null_moments(R, E, runs, beta=beta, fourth=True)
    Ej = E.T[None] + beta[:, :, None] * R.T[:, None, :]  # (k, n_series, n): each atom's own residual
    np.testing.assert_allclose(T, np.einsum("nk,kvn->kv", R, Ej))
    draws = np.array([np.einsum("nk,kvn->kv", _turned(R, p, runs), Ej)
                      for p in run_null_phases("phase", runs, 6000, random_state=1)])
    sd = np.sqrt(var)
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * sd / np.sqrt(len(draws)))
    np.testing.assert_allclose(draws.var(0) / var, 1.0, atol=0.08)
    # the fourth cumulant: -3/8 sum_f (s_f |R_jf| |E_jf|)^4 over the random bins, each atom's own residual
    reference = np.zeros_like(kappa4)
    for j in range(3):
        F = np.fft.rfft(Ej[j, :, :runs[0]], axis=1), np.fft.rfft(Ej[j, :, runs[0]:], axis=1)
        G = np.fft.rfft(R[:runs[0], j]), np.fft.rfft(R[runs[0]:, j])
        for Fe, Fr, m in zip(F, G, runs):
            w = np.full(m // 2 + 1, 2.0 / m)
            w[0] = 0.0  # the zero frequency keeps its phase
            if m % 2 == 0:
                w[-1] = 0.0
            reference[j] -= 0.375 * ((w * np.abs(Fr)) ** 4 * np.abs(Fe) ** 4).sum(1)
    np.testing.assert_allclose(kappa4, reference, rtol=1e-9)
    # random-phase sums are platykurtic, as computed
    excess = stats.kurtosis(draws, axis=0)
    assert np.all(kappa4 < 0)
    np.testing.assert_allclose(excess, kappa4 / var ** 2, atol=0.15)
    # without beta: the series themselves
    T0, _, var0 = phase_null_moments(R, E, runs)
    np.testing.assert_allclose(T0, R.T @ E)
    assert var0.shape == (3, 4)


def _unique_parts(rng, n: int, k: int):
    """Smooth overlapping atoms with a constant and a trend as nuisance: the nuisance basis
    ``Q``, the nuisance-free atoms ``Xr``, their unique parts ``R`` and the full model's basis."""
    X = gaussian_filter1d(rng.standard_normal((n, k)), 2.5, axis=0)
    Q = np.linalg.qr(np.column_stack([np.ones(n), np.linspace(-1, 1, n)]))[0]
    Xr = X - Q @ (Q.T @ X)
    G = np.linalg.inv(Xr.T @ Xr)
    return Q, Xr, Xr @ G / np.diag(G), np.linalg.qr(np.column_stack([Q, Xr]))[0]


def test_moved_norm_share_equals_the_projected_draws():
    n = 200
    Q, Xr, R, basis = _unique_parts(np.random.default_rng(2), n, 10)
    share = moved_norm_share(R, basis)
    kept = []
    for p in run_null_phases("phase", [n], 300, random_state=3):
        PR = apply_phases(R, p)
        row = []
        for j in range(3):
            B = np.linalg.qr(np.column_stack([Q, np.delete(Xr, j, 1)]))[0]
            u = PR[:, j] - B @ (B.T @ PR[:, j])
            row.append(u @ u / (R[:, j] @ R[:, j]))
        kept.append(row)
    np.testing.assert_allclose(share[:3], np.mean(kept, 0), atol=0.02)
    assert np.all(share < 1)  # smooth overlapping atoms: a draw loses part of its length


def test_leverage_inflation_gives_back_the_power_the_other_atoms_took():
    rng = np.random.default_rng(4)
    n = 160
    Q, Xr, R, basis = _unique_parts(rng, n, 12)
    inflation = leverage_inflation(R, basis, max_leverage=0.99)
    # white noise less its fit on the regressors other than atom 0: its mean periodogram is
    # the noise's times 1 - h_f, which the inflation undoes
    B = np.linalg.qr(np.column_stack([Q, Xr[:, 1:]]))[0]
    eps = rng.standard_normal((n, 4000))
    kept = np.abs(np.fft.rfft(eps - B @ (B.T @ eps), axis=0)) ** 2
    ratio = kept.mean(1) / (np.abs(np.fft.rfft(eps, axis=0)) ** 2).mean(1)
    low = slice(3, 30)  # where smooth atoms take power (the leverage is large), away from the drifts
    np.testing.assert_allclose(ratio[low] * inflation[low, 0], 1.0, atol=0.08)
    assert inflation[low, 0].max() > 1.3 and np.all(inflation >= 1.0)


def test_cornish_fisher_raises_light_tails_only():
    x = np.linspace(-5, 5, 101)
    z = cornish_fisher_z(x, np.full_like(x, -0.2))
    assert np.all(np.diff(z) > 0)  # monotone: the map's order is kept
    # light tails: beyond sqrt(3) the z is raised, below it lowered (the shoulders hold more)
    assert z[-1] > x[-1] and z[60] < x[60]
    assert abs(cornish_fisher_z(np.array([np.sqrt(3)]), np.array([-0.2]))[0] - np.sqrt(3)) < 1e-5
    np.testing.assert_allclose(cornish_fisher_z(x, np.full_like(x, 0.5)), x, atol=1e-6)  # g > 0 not used


def _shared_signal_study(rng, n=240, n_subjects=10, n_voxels=1200, n_atoms=16):
    """SIMULATED: every subject carries the same stimulus-locked signal (three smooth sources,
    R2 about 0.35 in 800 voxels) in AR(1) noise of its own; the first source is atom 0."""
    atoms = gaussian_filter1d(rng.standard_normal((n, n_atoms)), 2.0, axis=0)
    atoms = (atoms - atoms.mean(0)) / atoms.std(0)
    sources = np.column_stack([atoms[:, 0], gaussian_filter1d(rng.standard_normal((n, 2)), 2.0, axis=0)])
    sources = (sources - sources.mean(0)) / sources.std(0)
    weights = np.zeros((3, n_voxels))
    for i in range(3):
        weights[i, i * 250:(i + 1) * 250 + 50] = 1.0
    shared = sources @ weights  # (n, n_voxels), the same in every subject
    data = []
    for _ in range(n_subjects):
        e = rng.standard_normal((n, n_voxels))
        for t in range(1, n):
            e[t] += 0.5 * e[t - 1]
        e /= e.std(0)
        data.append((0.75 * shared + e).astype(np.float32))
    return atoms, data, weights[0] > 0


@pytest.fixture(scope="module")
def study():
    return _shared_signal_study(np.random.default_rng(5))


def _rates(z: np.ndarray, threshold: float) -> float:
    return float(np.mean(np.abs(z) > threshold) / (2 * stats.norm.sf(threshold)))


def test_shared_signal_calibrated_maps_at_nominal_uncalibrated_above(study):
    atoms, data, _ = study
    rng = np.random.default_rng(11)
    unc, cal = [], []
    for _ in range(4):
        surrogate = phase_randomise(atoms, random_state=rng)  # no lock to the story
        subj = [gls_atom_maps(surrogate, Y) for Y in data]
        unc.append(group_effects(np.stack([m.effect for m in subj]), np.stack([m.z for m in subj]),
                                 method="random")[0])
        cal.append(stimulus_calibrated_maps(surrogate, data).z)
    unc, cal = np.concatenate(unc), np.concatenate(cal)
    # the t over subjects reads the chance correlation with the shared signal as an effect
    assert _rates(unc, 1.96) > 1.5 and _rates(unc, 3.0) > 3.0
    # the calibrated map sits at the nominal rate (and not far below it at 1.96)
    assert 0.8 < _rates(cal, 1.96) < 1.15
    assert _rates(cal, 3.0) < 1.2


def test_a_real_drivers_map_survives_calibration(study):
    atoms, data, driven = study
    z = stimulus_calibrated_maps(atoms, data).z
    assert np.mean(np.abs(z[0, driven]) > 3.0) > 0.95  # atom 0 is the first shared source
    assert np.median(z[0, driven]) > 5.0
    assert _rates(z[0, ~driven], 1.96) < 1.6  # elsewhere atom 0 drives nothing


def test_calibrated_maps_check_shapes():
    with pytest.raises(ShapeError, match="Subject 1"):
        stimulus_calibrated_maps(np.zeros((50, 3)), [np.zeros((50, 4)), np.zeros((40, 4))])
