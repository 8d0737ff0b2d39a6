"""The ridge solver: one factorisation per training set, every α and every voxel from it.

For the training rows of the standardised regressors, ``X = U S V'`` (from the
eigendecomposition of the Gram ``X'X = V S² V'``, or with more regressors than training
volumes of the kernel ``X X' = U S² U'``); then for every voxel ``y``::

    coef(α)        = X' U diag(1 / (s² + α)) U' y
    prediction(α)  = X_test X' U diag(1 / (s² + α)) U' y

(:class:`_Factor`, :func:`_factorise`). :func:`_select_alphas` scores the α path on
the test rows of each factor, from the path's predictions (:func:`_path_scores`,
any backend) or without them (:mod:`._ridge_spectral`, numpy), and keeps each
voxel's best α; :func:`_refit` gives the weights with that α.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._backend import Backend
from ._ridge_spectral import _spectral, _spectral_scores


def _index(bk: Backend, idx: np.ndarray):
    if bk.name == "numpy":
        return idx
    import torch

    return torch.as_tensor(idx, dtype=torch.long, device=bk.device)


@dataclass
class _Factor:
    """One training set, factorised; optionally a test set projected on it."""

    train: Any                    # backend index (n_train,)
    test: Any                     # backend index (n_test,) or None
    x_mean: Any                   # (p,)
    x_scale: Any                  # (p,)
    U: Any                        # (n_train, r) left singular vectors / eigenvectors
    eig: Any                      # (r,) squared singular values (eigenvalues of X X')
    XtU: Any                      # (p, r) X' U = V S
    B: Any = None                 # (n_test, r) X_test X' U
    n_test: int = 0
    spectral: Any = None          # _Spectral (numpy backend, when α are given)
    train_idx: Any = None         # (n_train,) volumes, numpy
    test_idx: Any = None          # (n_test,) volumes, numpy, or None
    eig64: Any = None             # (r,) float64 (numpy backend)
    XtU64: Any = None             # (p, r) float64 (numpy backend)
    segments: Any = None          # _FactorSegments, when the fold sums are used (:mod:`._ridge_segments`)


def _factorise(bk: Backend, X, train: np.ndarray, test: np.ndarray | None, *,
               standardize: bool, solver: str, alphas: np.ndarray | None = None) -> _Factor:
    """Factorise the training rows of ``X``; project the test rows on the factors.

    With the numpy backend and ``alphas`` given, also prepares the spectral path
    (:class:`_Spectral`) that scores the whole α path without its predictions.
    """
    xp = bk.xp
    tr = _index(bk, train)
    Xtr = X[tr]
    x_mean = Xtr.mean(0)
    Xtr = Xtr - x_mean
    if standardize:
        sd = ((Xtr * Xtr).mean(0)) ** 0.5
        # A regressor that is constant in this training fold carries no information;
        # scaling by 1 leaves it at zero instead of dividing by zero.
        x_scale = sd + (sd <= 0) * 1.0
        Xtr = Xtr / x_scale
    else:
        x_scale = xp.ones_like(x_mean)
    n_train, p = Xtr.shape
    # The factorisation is small (n_train × p) and done in float64 whatever the data's
    # precision, so float32 data lose nothing to a near-collinear design.
    X64 = Xtr.astype(np.float64) if bk.name == "numpy" else Xtr.double()
    if solver == "svd":
        U, s, Vt = xp.linalg.svd(X64, full_matrices=False)
        eig = s * s
        XtU = Vt.T * s
    elif solver == "gram" or (solver == "auto" and p <= n_train):
        # The (p × p) Gram's eigendecomposition: X'X = V S² V', U = X V / S. The same
        # factors as the SVD for a few dozen times fewer operations with a few dozen
        # regressors (the SVD of n_train × p costs ~30 ms, this ~1 ms). Components at
        # rounding level of the largest carry nothing a ridge with α > 0 keeps
        # (weight s²/(s² + α)); they are set to zero, as the SVD's zero singular values are.
        eig, V = xp.linalg.eigh(X64.T @ X64)
        tol = max(p, 1) * np.finfo(np.float64).eps * eig[-1]
        keep = eig > tol
        eig = eig * keep
        s = eig ** 0.5
        XtU = V * s
        U = (X64 @ V) * (keep / (s + ~keep))
    else:
        # Kernel (dual) form: an (n_train × n_train) eigendecomposition is cheaper than
        # the SVD when there are more regressors than training volumes.
        eig, U = xp.linalg.eigh(X64 @ X64.T)
        eig = eig * (eig > 0)
        XtU = X64.T @ U
    eig64, XtU64 = eig, XtU
    U, eig, XtU = bk.asarray(U), bk.asarray(eig), bk.asarray(XtU)
    f = _Factor(train=tr, test=None, x_mean=x_mean, x_scale=x_scale, U=U, eig=eig, XtU=XtU,
                train_idx=np.asarray(train), test_idx=None if test is None else np.asarray(test))
    if bk.name == "numpy":
        f.eig64, f.XtU64 = eig64, XtU64
    Xte = None
    if test is not None:
        te = _index(bk, test)
        f.test = te
        Xte = (X[te] - x_mean) / x_scale
        f.B = Xte @ XtU
        f.n_test = len(test)
    if bk.name == "numpy" and alphas is not None:
        f.spectral = _spectral(f, np.asarray(train), None if test is None else np.asarray(test),
                               np.asarray(alphas, dtype=np.float64), eig64,
                               None if Xte is None else Xte.astype(np.float64) @ XtU64)
    return f


@contextlib.contextmanager
def _small_lapack(bk: Backend):
    """Run small CPU factorisations on one BLAS thread.

    LAPACK on a few hundred rows gains nothing from threads, and on a busy machine
    threads that spin-wait for each other make an SVD ten times slower.
    """
    if bk.name != "numpy":
        yield
        return
    from .._backend import blas_limit

    with blas_limit(1):
        yield


def _train_projection(f: _Factor, Yc):
    """Training mean of each voxel and ``U' (y - mean)``."""
    Ytr = Yc[f.train]
    y_mean = Ytr.mean(0)
    return y_mean, f.U.T @ (Ytr - y_mean)


def _shrinkage(bk: Backend, eig, alphas):
    """``1 / (s² + α)``, shape (n_alphas, r)."""
    return 1.0 / (eig[None, :] + alphas[:, None])


def _path_scores(bk: Backend, f: _Factor, Yc, alphas, metric: str):
    """Score of every α on the test set of ``f``, for every voxel of the chunk.

    Returns an array of shape (n_alphas, n_voxels_chunk).
    """
    y_mean, UtY = _train_projection(f, Yc)
    G = _shrinkage(bk, f.eig, alphas)                        # (a, r)
    n_alphas, r = G.shape
    Yte = Yc[f.test] - y_mean                                  # (n_te, c)
    BG = (f.B[None, :, :] * G[:, None, :]).reshape(n_alphas * f.n_test, r)
    P = (BG @ UtY).reshape(n_alphas, f.n_test, -1)             # predictions of the path
    # ||y - p||² = ||y||² - 2 y'p + ||p||², with y'p for every α from one small product
    # (y'p = sum_j g_j (B'y)_j (U'y)_j): one read of P instead of three passes over it.
    # numpy's einsum reduces without a temporary; torch's goes through a batched
    # matrix product that copies P, so there a product and a sum are faster.
    pp = np.einsum("anc,anc->ac", P, P) if bk.name == "numpy" else (P * P).sum(1)
    del P
    cross = G @ ((f.B.T @ Yte) * UtY)                          # (a, c)
    yy = (Yte * Yte).sum(0)
    ss_res = yy[None, :] - 2.0 * cross + pp
    ss_res = ss_res * (ss_res > 0)                             # rounding below an exact fit
    if metric == "neg_mse":
        return -ss_res / f.n_test
    Yd = Yte - Yte.mean(0)
    ss_tot = (Yd * Yd).sum(0)
    flat = ss_tot <= 0
    return (1.0 - ss_res / (ss_tot + flat * 1.0)) * (~flat)


def _select_alphas(bk: Backend, factors: list[_Factor], Yc, alphas, metric: str, stats=None):
    """Per-voxel index of the best α, averaged over the factors' test folds.

    Ties (e.g. a flat voxel) go to the largest α, the most regularised model. Factors
    prepared for the spectral path (numpy) are scored by it, in float64; with ``stats``
    (the chunk's sums over the segments, :mod:`._ridge_segments`) their projections
    come from those.
    """
    total = None
    for f in factors:
        if f.spectral is not None:
            s = _spectral_scores(f.spectral, Yc, metric, f.segments, stats if f.segments is not None else None)
        else:
            s = _path_scores(bk, f, Yc, alphas, metric)
        if total is None:
            total = s
        else:
            total += s
    mean = total / len(factors)
    n_alphas = mean.shape[0]
    if isinstance(mean, np.ndarray):
        best = (n_alphas - 1) - mean[::-1].argmax(0)
    else:
        rev = _index(bk, np.arange(n_alphas - 1, -1, -1))
        best = (n_alphas - 1) - mean[rev].argmax(0)
    return best, mean


def _refit(bk: Backend, f: _Factor, Yc, G_table, best):
    """Weights in the factor's basis with each voxel's own α: (r, c), and y_mean."""
    y_mean, UtY = _train_projection(f, Yc)
    return G_table[:, best] * UtY, y_mean
