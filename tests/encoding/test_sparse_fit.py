"""The paper's sparse fit of voxels on fixed atoms."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brainorg.encoding.preprocessing import ConstantColumnsWarning
from napari_brainorg.encoding.sparse_fit import SparseAtomEncoder, alpha_max, sparse_r2_null
from napari_brainorg.errors import ConfigError, FMRIInputError, NotFittedError, ShapeError


def _planted(rng, n=300, k=10, v=60, noise=0.8):
    """Labelled simulation: voxels driven by known atoms with known signs."""
    atoms = rng.standard_normal((n, k)).cumsum(0) * 0.2 + rng.standard_normal((n, k))
    atoms /= np.linalg.norm(atoms, axis=0)
    W = np.zeros((k, v))
    W[2, : v // 2] = 1.0
    W[7, v // 3:] = -0.8
    Y = atoms @ W * np.sqrt(n) + noise * rng.standard_normal((n, v)) + 100.0
    return atoms, Y, W


def _design(model, atoms):
    return (atoms - model.atom_mean_) / model.atom_norm_


def test_codes_satisfy_the_lasso_optimality_conditions(rng):
    atoms, Y, _ = _planted(rng)
    model = SparseAtomEncoder(alpha=0.1, tol=1e-10, max_iter=5000).fit(atoms, Y)
    D = _design(model, atoms)
    Yz = (Y - model.y_mean_) / model.y_scale_
    np.testing.assert_allclose(model.lambda_, 0.1 * np.sqrt(len(atoms)))    # the documented scale
    grad = D.T @ (Yz - D @ model.coef_)
    lam = model.lambda_
    on = model.coef_ != 0
    # KKT of 0.5||y - Dw||^2 + lam ||w||_1: gradient = lam * sign(w) on the support,
    # |gradient| <= lam off it.
    np.testing.assert_allclose(grad[on], lam * np.sign(model.coef_[on]), atol=1e-4 * lam)
    assert np.abs(grad[~on]).max() <= lam * (1 + 1e-4)


def test_recovers_the_planted_atoms_and_signs(rng):
    atoms, Y, W = _planted(rng)
    model = SparseAtomEncoder(alpha=0.15).fit(atoms, Y)
    assert model.coef_.shape == W.shape and model.coef_.dtype == np.float64
    on = W != 0
    # Every planted code is found with its sign; the lasso may add a few small codes
    # where autocorrelated atoms correlate by chance, but far below the planted ones.
    np.testing.assert_array_equal(np.sign(model.coef_[on]), np.sign(W[on]))
    assert np.count_nonzero(model.coef_[~on]) <= 0.02 * (~on).sum()
    assert np.abs(model.coef_[~on]).max() < 0.3 * np.abs(model.coef_[on]).min()
    # Shrinkage costs some in-sample R²: it stays well above chance and below the R² of
    # least squares on all atoms, the most any fit on these atoms can explain.
    Ac = atoms - atoms.mean(0)
    Yc = Y - Y.mean(0)
    beta, *_ = np.linalg.lstsq(Ac, Yc, rcond=None)
    ols_r2 = 1 - ((Yc - Ac @ beta) ** 2).sum(0) / (Yc**2).sum(0)
    assert np.all(model.r2_ > 0.3) and np.all(model.r2_ <= ols_r2 + 1e-9)
    assert np.all(model.r2_ > ols_r2 - 0.2)


def test_r2_is_the_variance_explained_by_predict(rng):
    atoms, Y, _ = _planted(rng, v=12)
    model = SparseAtomEncoder(alpha=0.05).fit(atoms, Y)
    pred = model.predict(atoms)
    resid = Y - pred
    expected = 1 - (resid**2).sum(0) / ((Y - Y.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(model.r2_, expected, atol=1e-8)


def test_alpha_zero_is_least_squares(rng):
    atoms, Y, _ = _planted(rng, v=8)
    model = SparseAtomEncoder(alpha=0.0, tol=1e-12, max_iter=20000).fit(atoms, Y)
    D = _design(model, atoms)
    Yz = (Y - model.y_mean_) / model.y_scale_
    ols, *_ = np.linalg.lstsq(D, Yz, rcond=None)
    np.testing.assert_allclose(model.coef_, ols, atol=1e-5)


def test_alpha_max_is_the_threshold_of_the_first_atom(rng):
    atoms, Y, _ = _planted(rng, v=6)
    amax = alpha_max(atoms, Y)
    Yc = Y - Y.mean(0)
    Ac = atoms - atoms.mean(0)
    corr = (Ac / np.linalg.norm(Ac, axis=0)).T @ (Yc / np.linalg.norm(Yc, axis=0))
    np.testing.assert_allclose(amax, np.abs(corr).max(0), rtol=1e-10)
    above = SparseAtomEncoder(alpha=float(amax.max()) * 1.001).fit(atoms, Y)
    assert not above.coef_.any()
    below = SparseAtomEncoder(alpha=float(amax.min()) * 0.9).fit(atoms, Y)
    assert np.all((below.coef_ != 0).any(0))


def test_positive_codes_and_float32(rng):
    atoms, Y, _ = _planted(rng, v=20)
    model = SparseAtomEncoder(alpha=0.1, positive=True).fit(atoms.astype(np.float32), Y.astype(np.float32))
    assert model.coef_.dtype == np.float32 and model.r2_.dtype == np.float32
    assert model.coef_.min() >= 0
    assert (model.coef_[2] > 0).sum() >= 10          # the positively driven voxels keep atom 2
    assert not model.coef_[7].any()                    # atom 7 drives voxels negatively only


def test_torch_backend_matches_numpy(rng):
    pytest.importorskip("torch")
    atoms, Y, _ = _planted(rng, v=10)
    a = SparseAtomEncoder(alpha=0.1, tol=1e-10, max_iter=3000).fit(atoms, Y)
    b = SparseAtomEncoder(alpha=0.1, tol=1e-10, max_iter=3000, backend="torch", device="cpu").fit(atoms, Y)
    np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-6)


def test_constant_voxels_and_bad_inputs(rng):
    atoms, Y, _ = _planted(rng, v=5)
    Y[:, 1] = 3.0
    with pytest.warns(ConstantColumnsWarning, match="1 of 5 voxels"):
        model = SparseAtomEncoder().fit(atoms, Y)
    assert not model.coef_[:, 1].any() and model.r2_[1] == 0 and model.constant_voxels_[1]
    with pytest.raises(ShapeError, match="same number of volumes"):
        SparseAtomEncoder().fit(atoms[:-1], Y)
    Y[3, 4] = np.nan
    with pytest.raises(FMRIInputError, match=r"first \[4\]"):
        SparseAtomEncoder().fit(atoms, Y)
    with pytest.raises(ConfigError, match="'alpha'"):
        SparseAtomEncoder(alpha=-1).fit(atoms, Y)
    flat_atoms = atoms.copy()
    flat_atoms[:, 0] = 1.0
    with pytest.raises(ShapeError, match="constant"):
        SparseAtomEncoder().fit(flat_atoms, Y[:, :1])
    with pytest.raises(NotFittedError):
        SparseAtomEncoder().predict(atoms)


def test_the_shift_null_is_the_fit_with_every_atom_shifted(rng):
    """The null rolls the prepared atoms, the fMRI prepared once: the same fits as refitting shifted atoms."""
    atoms, Y, _ = _planted(rng)
    shifts = [40, 117, 250]
    null = sparse_r2_null(atoms, Y, shifts, alpha=0.1)
    assert null.shape == (3, Y.shape[1])
    for row, s in zip(null, shifts):
        refit = SparseAtomEncoder(alpha=0.1).fit(np.roll(atoms, s, axis=0), Y).r2_
        np.testing.assert_allclose(row, refit, atol=1e-5)
    observed = SparseAtomEncoder(alpha=0.1).fit(atoms, Y).r2_
    driven = observed > 0.2
    assert driven.any() and np.all(null[:, driven] < observed[driven])
    assert sparse_r2_null(atoms, Y, [], alpha=0.1).shape == (0, Y.shape[1])
    # the fit and its null from one preparation of the voxels: the same fit, the same null
    from napari_brainorg.encoding.sparse_fit import fit_with_shift_null

    enc, both = fit_with_shift_null(atoms, Y, shifts, alpha=0.1)
    np.testing.assert_array_equal(both, null)
    reference = SparseAtomEncoder(alpha=0.1).fit(atoms, Y)
    np.testing.assert_array_equal(enc.coef_, reference.coef_)
    np.testing.assert_array_equal(enc.r2_, reference.r2_)
