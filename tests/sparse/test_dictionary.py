"""Sparse codes and dictionary learning (METHOD §2)."""

from __future__ import annotations

import importlib.util
import threading

import numpy as np
import pytest

from napari_brainorg.errors import CancelledError, ConfigError, ShapeError
from napari_brainorg.sparse.dictionary import sparse_encode

BACKENDS = ["numpy"] + (["torch"] if importlib.util.find_spec("torch") else [])


def _lasso_objective(X, D, A, lam):
    X, D, A = (np.asarray(a, dtype=np.float64) for a in (X, D, A))
    return 0.5 * ((X - D @ A) ** 2).sum(0) + lam * np.abs(A).sum(0)


def _smooth_atoms(rng, n_volumes, k, width=4.0):
    """Unit-norm random time courses, smoothed like slow BOLD-like signals."""
    t = np.arange(-3 * int(width), 3 * int(width) + 1)
    kernel = np.exp(-0.5 * (t / width) ** 2)
    white = rng.standard_normal((n_volumes + len(t) - 1, k))
    atoms = np.stack([np.convolve(white[:, j], kernel, mode="valid") for j in range(k)], 1)
    atoms -= atoms.mean(0)
    return atoms / np.linalg.norm(atoms, axis=0)


@pytest.fixture
def coding_problem(rng):
    n_volumes, k, n_cols = 80, 12, 300
    D = _smooth_atoms(rng, n_volumes, k)
    codes = rng.standard_normal((k, n_cols)) * (rng.random((k, n_cols)) < 0.25)
    X = D @ codes + 0.3 * rng.standard_normal((n_volumes, n_cols))
    return X, D


# ------------------------------------------------------------------- sparse_encode


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_encode_matches_sklearn_lasso(coding_problem, backend):
    from sklearn.decomposition import sparse_encode as sk_sparse_encode

    X, D = coding_problem
    lam = 0.8
    A = sparse_encode(X, D, lam, tol=1e-7, max_iter=5000, dtype="float64", backend=backend)
    # sklearn's lasso_cd minimises the same 0.5 ||x - D a||^2 + alpha ||a||_1.
    A_ref = sk_sparse_encode(X.T, D.T, alpha=lam, algorithm="lasso_cd", max_iter=10000).T
    assert A.shape == (D.shape[1], X.shape[1])
    np.testing.assert_allclose(A, A_ref, atol=1e-4)
    f, f_ref = _lasso_objective(X, D, A, lam), _lasso_objective(X, D, A_ref, lam)
    assert np.all(f <= f_ref + 1e-6 * np.abs(f_ref))


def test_sparse_encode_satisfies_optimality_conditions(coding_problem):
    X, D = coding_problem
    lam = 0.5
    A = sparse_encode(X, D, lam, tol=1e-8, max_iter=5000, dtype="float64")
    grad = D.T @ (D @ A - X)  # subgradient condition of the lasso
    active = A != 0
    np.testing.assert_allclose(grad[active], -lam * np.sign(A[active]), atol=1e-4)
    assert np.all(np.abs(grad[~active]) <= lam + 1e-4)
    assert 0 < active.mean() < 1


def test_sparse_encode_positive_codes(coding_problem):
    X, D = coding_problem
    A = sparse_encode(X, D, 0.5, positive=True, tol=1e-8, max_iter=5000, dtype="float64")
    assert A.min() >= 0
    grad = D.T @ (D @ A - X)
    # KKT for a >= 0: grad = -lam where a > 0, grad >= -lam where a == 0
    np.testing.assert_allclose(grad[A > 0], -0.5, atol=1e-4)
    assert np.all(grad[A == 0] >= -0.5 - 1e-4)


def test_sparse_encode_chunks_equal_one_block(coding_problem):
    X, D = coding_problem
    whole = sparse_encode(X, D, 0.5, tol=1e-9, max_iter=5000, dtype="float64")
    chunked = sparse_encode(X, D, 0.5, tol=1e-9, max_iter=5000, dtype="float64", chunk_size=37)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_sparse_encode_per_column_lambda(coding_problem):
    X, D = coding_problem
    lams = np.linspace(0.1, 3.0, X.shape[1])
    A = sparse_encode(X, D, lams, tol=1e-8, max_iter=5000, dtype="float64")
    for j in (0, 150, 299):
        Aj = sparse_encode(X[:, [j]], D, lams[j], tol=1e-8, max_iter=5000, dtype="float64")
        np.testing.assert_allclose(A[:, [j]], Aj, atol=1e-6)


def test_sparse_encode_warm_start_is_never_worse(coding_problem):
    X, D = coding_problem
    lam = 0.5
    best = sparse_encode(X, D, lam, tol=1e-9, max_iter=5000, dtype="float64")
    # One iteration from the optimum may not move it away.
    again = sparse_encode(X, D, lam, init=best, max_iter=1, dtype="float64")
    assert np.all(_lasso_objective(X, D, again, lam) <= _lasso_objective(X, D, best, lam) + 1e-9)


def test_sparse_encode_float32_by_default_and_zero_dictionary(coding_problem):
    X, D = coding_problem
    assert sparse_encode(X, D, 0.5).dtype == np.float32
    A = sparse_encode(X, np.zeros_like(D), 0.5)
    assert np.all(A == 0)


def test_sparse_encode_large_lambda_gives_zero_codes(coding_problem):
    X, D = coding_problem
    lam_max = np.abs(D.T @ X).max()
    assert np.all(sparse_encode(X, D, lam_max * 1.01) == 0)
    assert np.any(sparse_encode(X, D, lam_max * 0.9) != 0)


def test_sparse_encode_bad_input(coding_problem):
    X, D = coding_problem
    with pytest.raises(ShapeError, match=r"'D' must have one row per row of X.*\(80, k\).*\(79, 12\)"):
        sparse_encode(X, D[:-1], 0.5)
    with pytest.raises(ShapeError, match="'X' must be a 2D array"):
        sparse_encode(X[:, 0], D, 0.5)
    with pytest.raises(ValueError, match="'lam' must be a finite number >= 0; -1"):
        sparse_encode(X, D, -1)
    with pytest.raises(ShapeError, match=r"'lam' must be a number or an array of shape \(300,\)"):
        sparse_encode(X, D, np.ones(3))
    with pytest.raises(ShapeError, match=r"'init' must have shape \(12, 300\)"):
        sparse_encode(X, D, 0.5, init=np.zeros((12, 3)))
    with pytest.raises(ConfigError, match="'backend' must be one of"):
        sparse_encode(X, D, 0.5, backend="jax")
    bad = X.copy()
    bad[3, 7] = np.nan
    with pytest.raises(ValueError, match=r"'X' must contain only finite values; columns \[7\]"):
        sparse_encode(bad, D, 0.5)


def test_sparse_encode_progress_and_cancel(coding_problem):
    X, D = coding_problem
    calls = []
    sparse_encode(X, D, 0.5, chunk_size=100, progress=lambda *a: calls.append(a))
    assert calls[0] == ("sparse codes", 0, 3) and calls[-1] == ("sparse codes", 3, 3)
    stop = threading.Event()
    stop.set()
    with pytest.raises(CancelledError):
        sparse_encode(X, D, 0.5, cancel=stop)
