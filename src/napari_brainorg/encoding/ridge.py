"""Cross-validated ridge encoding: every voxel on the same regressors, all at once.

For one training set, the standardised regressors ``X`` (n_train × p) are factorised
once, ``X = U S V'`` (or, when p > n_train, ``X X' = U S² U'``), and the ridge
solution for every α and every voxel follows from that one factorisation::

    coef(α)        = X' U diag(1 / (s² + α)) U' y          (p × n_voxels)
    prediction(α)  = X_test X' U diag(1 / (s² + α)) U' y   (n_test × n_voxels)

with ``X' U = V S``. ``U' Y`` is one matrix product for all voxels, the path over α
is one more, and choosing a different α per voxel is a gather of the diagonal
factor. Nothing loops over voxels; voxels are processed in chunks so that memory
stays bounded for 200,000 voxels.

Choosing α scores the whole path on every inner test fold. On the numpy backend this
is done without forming the path's predictions (``path="spectral"``, the default
there): the test error of every α follows from the factorisation, the voxel's
projections ``U'y`` and ``B'y`` and one r × r product (partial fractions over pairs
of eigenvalues; see the section "spectral path" below), several times fewer
operations than the n_alphas × n_test × r of the predictions, with the same α and
scores. Chunks of voxels small enough for a core's cache run on as many threads as
BLAS may use.

Cross-validation follows METHOD §3:

- folds are contiguous blocks of volumes, never shuffled, and ``gap`` volumes on each
  side of a test block are left out of training (:func:`contiguous_folds`);
- the regressors are standardised with the training fold's mean and standard deviation,
  the voxels centred with the training fold's mean, and test data transformed with
  those training statistics only;
- each voxel's α is chosen inside the training fold by an inner contiguous CV, then
  the model is refit on the whole training fold with each voxel's own α
  (:func:`cv_ridge_scores`);
- R² and correlation are computed within each held-out fold and averaged over folds
  (pooling the folds' predictions would bias the correlation down through the
  per-fold intercepts).

:func:`ridge_cv_fit` is the single-level version (α chosen by CV on the data it is
then refit on, like himalaya's ``RidgeCV``); :class:`CVRidgeEncoder` wraps both with
scikit-learn's contract. The penalty is scikit-learn's and himalaya's:
``||y - X b||² + α ||b||²`` (a sum of squares, not a mean).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import numpy as np

from .._backend import Backend, get_backend
from .._progress import check_cancel, report
from ..errors import ConfigError, FMRIInputError, NotFittedError, ShapeError, check_choice
from .preprocessing import ConstantColumnsWarning, highpass, make_delays
from .scores import correlation_columns, r2_score_columns

from sklearn.base import BaseEstimator, RegressorMixin  # noqa: E402  (scikit-learn estimators)
from sklearn.exceptions import NotFittedError as _SkNotFittedError  # noqa: E402


class EncoderNotFittedError(NotFittedError, _SkNotFittedError):
    """``predict`` before ``fit`` (both this package's and scikit-learn's NotFittedError)."""

__all__ = [
    "DEFAULT_ALPHAS",
    "contiguous_folds",
    "cv_ridge_scores",
    "ridge_cv_fit",
    "CVRidgeScores",
    "RidgeCVFit",
    "CVRidgeEncoder",
]

#: Default grid of ridge penalties (15 values, 0.1 ... 1e6, log-spaced).
DEFAULT_ALPHAS = np.logspace(-1, 6, 15)

ALPHA_SCORES = ("r2", "neg_mse")
SOLVERS = ("auto", "svd", "eigh")

# Working set of one chunk of voxels: the predictions of the whole α path on one test
# fold, (n_alphas, n_test, chunk). Small enough to stay in cache on a CPU, large
# enough to keep a GPU busy.
_CHUNK_BYTES = {"numpy": 128 * 2**20, "torch": 512 * 2**20}
#: Voxels per chunk on the spectral path (numpy).
_SPECTRAL_CHUNK = 1024


# --------------------------------------------------------------------------- folds


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"{name!r} must be an integer >= {minimum}; {value!r} was provided.")
    return int(value)


def _folds_of(times: np.ndarray, n_folds: int, gap: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Contiguous folds over the sorted volume indices ``times`` (a subset of a run).

    Test blocks are consecutive runs of ``times``; a volume is dropped from training
    when it lies within ``gap`` volumes (in scan time) of any test volume.
    """
    times = np.asarray(times, dtype=np.intp)
    if len(times) < n_folds:
        raise ConfigError(
            f"'n_folds' must not exceed the number of volumes to split ({len(times)}); "
            f"{n_folds} was provided."
        )
    span = int(times.max()) + 1 if len(times) else 0
    window = np.ones(2 * gap + 1)
    folds = []
    for test in np.array_split(times, n_folds):
        is_test = np.zeros(span)
        is_test[test] = 1.0
        near = np.convolve(is_test, window, mode="same") > 0.5
        train = times[~near[times]]
        if len(train) == 0:
            raise ConfigError(
                f"With 'n_folds'={n_folds} and 'gap'={gap} a training set is empty "
                f"({len(times)} volumes); use fewer folds or a smaller gap."
            )
        folds.append((train, test.copy()))
    return folds


def contiguous_folds(n_volumes: int, n_folds: int = 5, gap: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Contiguous cross-validation folds with a gap around each test block.

    Parameters
    ----------
    n_volumes : int
        Number of volumes in the run.
    n_folds : int, default 5
        Number of test blocks: consecutive volumes, sizes differing by at most one,
        covering the run once, in time order (never shuffled).
    gap : int, default 5
        Volumes dropped from training on each side of the test block, so that the
        hemodynamic response and the autocorrelation of the noise do not carry
        information from the test block into training.

    Returns
    -------
    folds : list of (train, test) pairs of int arrays
        Sorted volume indices.

    Examples
    --------
    >>> [(int(tr.min()), int(tr.max()), int(te.min()), int(te.max()))
    ...  for tr, te in contiguous_folds(20, 2, 2)]
    [(12, 19, 0, 9), (0, 7, 10, 19)]
    """
    n_volumes = _check_int("n_volumes", n_volumes, 2)
    n_folds = _check_int("n_folds", n_folds, 2)
    gap = _check_int("gap", gap, 0)
    return _folds_of(np.arange(n_volumes), n_folds, gap)


def _check_folds(folds, n_volumes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    try:
        pairs = list(folds)
    except TypeError:
        raise ConfigError(f"'folds' must be a list of (train, test) index arrays; {folds!r} was provided.") from None
    if not pairs:
        raise ConfigError("'folds' must hold at least one (train, test) pair; an empty list was provided.")
    for i, pair in enumerate(pairs):
        try:
            train, test = pair
        except (TypeError, ValueError):
            raise ConfigError(f"'folds'[{i}] must be a (train, test) pair of index arrays.") from None
        train = np.asarray(train, dtype=np.intp).ravel()
        test = np.asarray(test, dtype=np.intp).ravel()
        for name, idx in (("train", train), ("test", test)):
            if len(idx) == 0 or idx.min() < 0 or idx.max() >= n_volumes:
                raise ConfigError(
                    f"'folds'[{i}] {name} indices must be non-empty and within [0, {n_volumes}); "
                    f"{len(idx)} indices ranging over "
                    f"[{idx.min() if len(idx) else None}, {idx.max() if len(idx) else None}] were provided."
                )
        if np.intersect1d(train, test).size:
            raise ConfigError(f"'folds'[{i}]: train and test indices overlap.")
        out.append((train, test))
    return out


def _check_alphas(alphas) -> np.ndarray:
    a = np.atleast_1d(np.asarray(alphas, dtype=np.float64)).ravel()
    if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ConfigError(f"'alphas' must be one or more finite numbers > 0; {alphas!r} was provided.")
    return a


# --------------------------------------------------------------------------- solver


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
    if solver == "svd" or (solver == "auto" and p <= n_train):
        U, s, Vt = xp.linalg.svd(X64, full_matrices=False)
        eig = s * s
        XtU = Vt.T * s
    else:
        # Kernel (dual) form: an (n_train × n_train) eigendecomposition is cheaper than
        # the SVD when there are more regressors than training volumes.
        eig, U = xp.linalg.eigh(X64 @ X64.T)
        eig = eig * (eig > 0)
        XtU = X64.T @ U
    eig64, XtU64 = eig, XtU
    U, eig, XtU = bk.asarray(U), bk.asarray(eig), bk.asarray(XtU)
    f = _Factor(train=tr, test=None, x_mean=x_mean, x_scale=x_scale, U=U, eig=eig, XtU=XtU)
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
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(1):
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


def _select_alphas(bk: Backend, factors: list[_Factor], Yc, alphas, metric: str):
    """Per-voxel index of the best α, averaged over the factors' test folds.

    Ties (e.g. a flat voxel) go to the largest α, the most regularised model. Factors
    prepared for the spectral path (numpy) are scored by it, in float64.
    """
    total = None
    for f in factors:
        if f.spectral is not None:
            s = _spectral_scores(f.spectral, Yc, metric)
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


# --------------------------------------------------------------------------- spectral path (numpy)
#
# The test error of the whole α path without forming the path's predictions. For one
# factor (training eigenvalues ``e_j = s_j²``, test design in the factor's basis ``B``,
# ``C = B'B``) and one voxel, with ``u = U'(y_train - m)`` and ``z = B'(y_test - m)``:
#
#     ||y_test - m - B diag(g) u||² = ||y_test - m||² - 2 Σ_j g_j z_j u_j + Σ_jk C_jk g_j g_k u_j u_k,
#     g_j = 1 / (e_j + α).
#
# The quadratic term is what costs: n_alphas × n_test × r per voxel when the
# predictions are formed. Its off-diagonal part follows from the partial fractions
# ``g_j g_k = (g_j - g_k) / (e_k - e_j)``:
#
#     Σ_{j≠k} C_jk g_j g_k u_j u_k = 2 Σ_j g_j u_j (D u)_j,   D_jk = C_jk / (e_k - e_j),
#
# so a voxel's own work is ``D u`` (r × r) whatever the number of α, and the whole
# path is one small product ``[g² diag(C), 2g] @ [u², u ∘ (D u - z)]``. Pairs of
# components whose eigenvalues are too close for the difference to be accurate
# (relative gap below ``_NEAR_GAP``: repeated singular values, components at zero)
# are summed directly, α by α. The projections of the fMRI (``U'Y``) are BLAS
# products in the data's precision; everything after them is float64.

#: Relative eigenvalue gap below which a pair of components is summed directly.
_NEAR_GAP = 1e-6


@dataclass
class _Spectral:
    """One factor, prepared for the spectral path (see the section's comment)."""

    train_runs: list                # (start, stop, row of U) of each run of consecutive training volumes
    n_train: int
    U: np.ndarray                   # (n_train, r), data precision
    s1: np.ndarray                  # (r,) float64: U'1 (zero up to rounding: X is centred on train)
    G: np.ndarray                   # (r, n_alphas) float64: 1 / (e + α)
    test: np.ndarray | None = None  # (n_test,) volume indices
    test_rows: Any = None           # the same as a slice when they are consecutive
    B: np.ndarray | None = None     # (n_test, r), data precision
    b1: np.ndarray | None = None    # (r,) float64: B'1
    B64: np.ndarray | None = None   # (n_test, r) float64
    M: np.ndarray | None = None     # (n_alphas, 2r) float64: [g² diag(C), 2g]
    D: np.ndarray | None = None     # (r, r) float64 partial-fraction matrix (far pairs)
    c_diag: np.ndarray | None = None
    near: tuple | None = None       # (J, K): components summed directly, (n_alphas·|J|, |J|)


def _runs(idx: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of consecutive sorted indices: (first, last + 1, position of the first in idx)."""
    idx = np.asarray(idx)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.concatenate([[0], breaks]).astype(int)
    stops = np.concatenate([breaks, [idx.size]]).astype(int)
    return [(int(idx[a]), int(idx[b - 1]) + 1, int(a)) for a, b in zip(starts, stops)]


def _spectral(f: _Factor, train: np.ndarray, test: np.ndarray | None, alphas: np.ndarray,
              eig: np.ndarray, B64: np.ndarray | None) -> _Spectral:
    U = np.ascontiguousarray(f.U)
    # runs of consecutive volumes are read in place; folds given with repeated or
    # unsorted training indices are gathered as one block
    runs = _runs(train) if np.all(np.diff(train) > 0) else [(np.asarray(train), None, 0)]
    sp = _Spectral(train_runs=runs, n_train=len(train), U=U,
                   s1=U.astype(np.float64).sum(0), G=1.0 / (eig[:, None] + alphas[None, :]))
    if test is None:
        return sp
    sp.test, sp.B64 = np.asarray(test), np.ascontiguousarray(B64)
    runs = _runs(sp.test)
    sp.test_rows = slice(runs[0][0], runs[0][1]) if len(runs) == 1 else sp.test   # a view when contiguous
    sp.B = np.ascontiguousarray(f.B)
    sp.b1 = np.asarray(f.B, dtype=np.float64).sum(0)
    C = B64.T @ B64
    g = sp.G.T                                                       # (a, r)
    sp.c_diag = np.diag(C).copy()
    sp.M = np.concatenate([g * g * sp.c_diag[None, :], 2.0 * g], axis=1)
    diff = eig[None, :] - eig[:, None]                               # [j, k] = e_k - e_j
    scale = np.maximum(eig[:, None], eig[None, :]) + alphas.min()
    off = ~np.eye(len(eig), dtype=bool)
    near = (np.abs(diff) <= _NEAR_GAP * scale) & (C != 0) & off
    sp.D = np.where(near | ~off, 0.0, C / np.where(near | ~off, 1.0, diff))
    if near.any():
        J = np.flatnonzero(near.any(0))
        CJ = np.where(near[np.ix_(J, J)], C[np.ix_(J, J)], 0.0)
        gJ = g[:, J]                                                 # (a, |J|)
        K = CJ[None, :, :] * gJ[:, :, None] * gJ[:, None, :]         # (a, |J|, |J|)
        sp.near = (J, K.reshape(len(alphas) * len(J), len(J)))
    return sp


def _project(sp: _Spectral, Yc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training mean ``m`` and ``u = U'(y_train - m)`` of every voxel, float64.

    The training rows of ``Yc`` are read in place, run by run: no copy, no centring
    pass (``U'(Y - 1 m') = U'Y - (U'1) m'``; ``Yc`` comes centred on all its volumes, so
    ``m`` is small and the correction loses nothing).
    """
    UtY = total = None
    for start, stop, row in sp.train_runs:
        if stop is None:  # an index array
            block = Yc[start]
            part = sp.U.T @ block
        else:
            block = Yc[start:stop]
            part = sp.U[row:row + stop - start].T @ block
        s = block.sum(0, dtype=np.float64)
        if UtY is None:
            UtY, total = part, s
        else:
            UtY += part
            total += s
    m = total / sp.n_train
    u = UtY.astype(np.float64)
    u -= sp.s1[:, None] * m[None, :]
    return m, u


def _spectral_scores(sp: _Spectral, Yc: np.ndarray, metric: str) -> np.ndarray:
    """Score of every α on the factor's test set, every voxel: (n_alphas, c) float64."""
    m, u = _project(sp, Yc)
    Yte = Yc[sp.test_rows]
    z = (sp.B.T @ Yte).astype(np.float64)                            # B'(y_test - m) = B'y_test - (B'1) m
    z -= sp.b1[:, None] * m[None, :]
    r = u.shape[0]
    Z = np.empty((2 * r, u.shape[1]))
    np.multiply(u, u, out=Z[:r])                                     # diag(C) is folded into M
    Du = np.matmul(sp.D, u, out=Z[r:])
    Du -= z
    Du *= u
    # pp - 2 cross; (Z'M')' runs the small product with the voxels as its long side
    ss_res = (Z.T @ sp.M.T).T
    if sp.near is not None:
        J, K = sp.near
        uJ = u[J]
        ss_res += np.einsum("ajc,jc->ac", (K @ uJ).reshape(len(ss_res), len(J), -1), uJ)
    Yte = Yte.astype(np.float64)
    Yte -= m
    ss_res += np.einsum("nc,nc->c", Yte, Yte)
    np.maximum(ss_res, 0.0, out=ss_res)                              # rounding below an exact fit
    n_test = len(sp.test)
    if metric == "neg_mse":
        return ss_res / -n_test
    Yte -= Yte.mean(0)
    ss_tot = np.einsum("nc,nc->c", Yte, Yte)
    flat = ss_tot <= 0
    ss_res /= ss_tot + flat
    np.subtract(1.0, ss_res, out=ss_res)
    ss_res *= ~flat
    return ss_res


# --------------------------------------------------------------------------- functions


def _as_float_2d(name: str, a, expected: str) -> np.ndarray:
    if type(a).__module__.split(".")[0] == "torch":
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.ndim != 2:
        raise ShapeError(f"{name!r} must be an array of shape {expected}; an array of shape {a.shape} was provided.")
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    return a


def _check_XY(X, Y):
    X = _as_float_2d("X", X, "(n_volumes, n_features)")
    Y = _as_float_2d("Y", Y, "(n_volumes, n_voxels)")
    if X.shape[0] != Y.shape[0]:
        raise ShapeError(
            f"'X' and 'Y' must have the same number of volumes (rows); X has {X.shape[0]} "
            f"and Y has {Y.shape[0]}."
        )
    if not np.all(np.isfinite(X)):
        raise ShapeError(f"'X' holds {int(np.count_nonzero(~np.isfinite(X)))} NaN or infinite values.")
    return X, Y


def _sklearn_validate(estimator, X, Y, reset: bool) -> None:
    """scikit-learn's checks and bookkeeping of ``X`` (``n_features_in_``, ``feature_names_in_``).

    Sparse matrices and a missing ``Y`` get scikit-learn's messages; ``Y`` (fMRI) is
    otherwise checked by this module's own messages, which name the bad voxels.
    """
    from sklearn.utils.validation import validate_data

    name = type(estimator).__name__
    if reset and Y is None:
        raise ValueError(f"{name} requires y to be passed, but the target y is None; give the fMRI "
                         "time series, an array of shape (n_volumes, n_voxels).")
    if type(X).__module__.split(".")[0] == "torch":
        X = X.detach().cpu().numpy()
    validate_data(estimator, X, reset=reset, dtype=None, ensure_all_finite=reset, ensure_min_samples=1)


def _check_fitted(estimator) -> None:
    """Raise a NotFittedError (this package's and scikit-learn's) when ``fit`` has not run."""
    if not hasattr(estimator, "coef_"):
        raise EncoderNotFittedError(
            f"This {type(estimator).__name__} is not fitted yet; call 'fit' first.")


def _encoder_tags(tags):
    tags.target_tags.multi_output = True  # one output per voxel
    tags.target_tags.single_output = True
    return tags


def _check_finite_chunk(Yc: np.ndarray, start: int) -> None:
    bad = ~np.isfinite(Yc).all(0)
    if bad.any():
        cols = (np.flatnonzero(bad)[:5] + start).tolist()
        raise FMRIInputError(
            f"'Y' holds NaN or infinite values in voxel columns {cols}"
            f"{' and more' if bad.sum() > 5 else ''}; remove them (mask) before encoding."
        )


def _resolve(backend: str, device, dtype, X, Y) -> Backend:
    if dtype is None:
        dtype = "float64" if (X.dtype == np.float64 and Y.dtype == np.float64) else "float32"
    return get_backend(backend, device, dtype)


def _chunk_size(bk: Backend, chunk_size, n_alphas: int, n_test: int, n_voxels: int,
                spectral: bool = False) -> int:
    if chunk_size is not None:
        return _check_int("chunk_size", chunk_size, 1)
    if spectral:
        # the spectral path's working set is a few kB per voxel: chunks that stay in
        # each core's L2 cache (measured in benchmarks/bench_ridge.py)
        return int(max(1, min(n_voxels, _SPECTRAL_CHUNK)))
    itemsize = 8 if bk.dtype == "float64" else 4
    budget = _CHUNK_BYTES["numpy" if bk.name == "numpy" or bk.device == "cpu" else "torch"]
    return int(max(256, min(n_voxels, budget // max(1, n_alphas * n_test * itemsize))))


PATHS = ("auto", "spectral", "predictions")


def _use_spectral(path: str, bk: Backend) -> bool:
    check_choice("path", path, PATHS)
    if path == "spectral" and bk.name != "numpy":
        raise ConfigError(f"'path' 'spectral' runs on the numpy backend; backend {bk.name!r} was asked for "
                          "(use path='predictions' or 'auto').")
    return bk.name == "numpy" and path != "predictions"


def _load_chunk(bk: Backend, Y: np.ndarray, start: int, step: int, centre: bool):
    """Voxels ``start:start + step`` of ``Y`` in the backend's array type, checked finite.

    ``centre``: minus each voxel's mean over all volumes (one pass, which makes every
    later projection's mean correction small; scores do not depend on it), contiguous.
    """
    block = Y[:, start:start + step]
    _check_finite_chunk(block, start)
    if not centre:
        return bk.asarray(block)
    out = np.empty(block.shape, dtype=bk.dtype)
    np.subtract(block, block.mean(0, dtype=np.float64).astype(bk.dtype), out=out, casting="unsafe")
    return out


def _chunk_threads(bk: Backend) -> int:
    """Threads that process voxel chunks: the BLAS threads allowed now (numpy only).

    Each thread then runs BLAS single-threaded: the products are small, and one
    thread per core on separate chunks beats several threads on one small product. A
    limit set outside (``threadpoolctl``, ``OMP_NUM_THREADS`` on a Dask worker) is
    respected.
    """
    if bk.name != "numpy":
        return 1
    try:
        from threadpoolctl import threadpool_info

        counts = [int(i.get("num_threads", 1)) for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        counts = []
    return max(1, min(max(counts, default=1), os.cpu_count() or 1))


def _map_chunks(fn, starts, n_threads: int, cancel):
    """``fn(start)`` for every chunk, results in order; on ``n_threads`` threads.

    ``cancel`` is checked between chunks; chunks not yet started are dropped when the
    caller stops early.
    """
    if n_threads <= 1 or len(starts) <= 1:
        for start in starts:
            check_cancel(cancel)
            yield fn(start)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    todo = iter(starts)
    pending: deque = deque()
    with threadpool_limits(1), ThreadPoolExecutor(n_threads, thread_name_prefix="brainorg-ridge") as pool:
        try:
            check_cancel(cancel)
            for start in todo:
                pending.append(pool.submit(fn, start))
                if len(pending) >= 2 * n_threads:
                    break
            while pending:
                result = pending.popleft().result()
                check_cancel(cancel)
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(pool.submit(fn, nxt))
                yield result
        finally:
            for future in pending:
                future.cancel()


@dataclass
class CVRidgeScores:
    """Held-out scores of the nested cross-validated ridge (:func:`cv_ridge_scores`).

    Attributes
    ----------
    r2 : ndarray of shape (n_voxels,)
        Mean over outer folds of the R² computed within each held-out fold.
    r : ndarray of shape (n_voxels,)
        Mean over outer folds of the within-fold Pearson correlation.
    r2_folds, r_folds : ndarray of shape (n_folds, n_voxels)
    alpha_folds : ndarray of shape (n_folds, n_voxels)
        The α each voxel used in each outer fold (chosen by the inner CV).
    alphas : ndarray of shape (n_alphas,)
        The candidate grid, sorted.
    folds : list of (train, test)
    """

    r2: np.ndarray
    r: np.ndarray
    r2_folds: np.ndarray
    r_folds: np.ndarray
    alpha_folds: np.ndarray
    alphas: np.ndarray
    folds: list = field(repr=False)


def cv_ridge_scores(X, Y, folds, alphas=DEFAULT_ALPHAS, *, inner_folds: int = 4, gap: int = 5,
                    alpha_score: str = "r2", standardize: bool = True, solver: str = "auto",
                    backend: str = "numpy", device: str | None = None, dtype: str | None = None,
                    chunk_size: int | None = None, fixed_alpha=None, path: str = "auto",
                    progress=None, cancel=None) -> CVRidgeScores:
    """Nested cross-validated ridge: held-out R² and r of every voxel.

    For each outer fold: the regressors are standardised with the training fold's
    statistics; each voxel's α is the one with the best mean score over an inner
    contiguous CV of the training fold (``inner_folds`` blocks, ``gap`` volumes left
    out around each inner test block); the ridge is refit on the whole training fold
    with that α and scored on the test fold.

    Parameters
    ----------
    X : array of shape (n_volumes, n_features)
        Regressors (atoms, possibly delayed), filtered like ``Y``.
    Y : array of shape (n_volumes, n_voxels)
        fMRI time series, filtered.
    folds : list of (train, test) index arrays
        Outer folds, e.g. :func:`contiguous_folds`.
    alphas : array of shape (n_alphas,), default ``DEFAULT_ALPHAS``
        Candidate ridge penalties (> 0).
    inner_folds : int, default 4
        Folds of the inner CV; with a single α there is nothing to choose and no
        inner CV runs.
    gap : int, default 5
        Gap of the inner folds, in volumes.
    alpha_score : {"r2", "neg_mse"}, default "r2"
        Inner-CV criterion: mean within-fold R², or himalaya's mean negative MSE.
    standardize : bool, default True
        Standardise the regressors with training statistics (else only centre them).
    solver : {"auto", "svd", "eigh"}, default "auto"
        ``"svd"`` of the regressors, or ``"eigh"`` of the kernel ``X X'`` (cheaper
        when n_features > n_volumes); ``"auto"`` picks by shape.
    backend : {"numpy", "torch", "auto"}, default "numpy"
    device : str, optional
        torch device.
    dtype : {"float32", "float64"}, optional
        Default: float64 when both inputs are float64, else float32.
    chunk_size : int, optional
        Voxels per chunk; default bounds the α-path working set (128 MiB on CPU).
    fixed_alpha : float or array of shape (n_voxels,), optional
        Skip the inner CV and use this α for every fold (e.g. each voxel's α from a fit
        on the real data, to build a cheap permutation null); ``alphas`` is then ignored.
    path : {"auto", "spectral", "predictions"}, default "auto"
        How the α path is scored on each inner test fold: ``"predictions"`` forms the
        test predictions of every α (any backend); ``"spectral"`` gets the same errors
        from the factorisation without them (numpy backend; several times fewer
        operations, see the module's notes); ``"auto"``: spectral on numpy.
    progress : callable, optional
        ``progress("cross-validated ridge", done_chunks, n_chunks)``.
    cancel : object with ``is_set()``, optional
        Checked between chunks.

    Returns
    -------
    CVRidgeScores
    """
    X, Y = _check_XY(X, Y)
    n_volumes, n_voxels = Y.shape
    folds = _check_folds(folds, n_volumes)
    fixed_idx = None
    if fixed_alpha is not None:
        fixed = np.broadcast_to(_check_alphas(fixed_alpha), (n_voxels,)) if np.ndim(fixed_alpha) == 0 \
            else _check_alphas(fixed_alpha)
        if fixed.shape != (n_voxels,):
            raise ShapeError(
                f"'fixed_alpha' must be a number or an array of shape ({n_voxels},) (one per voxel); "
                f"shape {np.shape(fixed_alpha)} was provided."
            )
        alphas_np, fixed_idx = np.unique(fixed, return_inverse=True)
    else:
        alphas_np = np.sort(_check_alphas(alphas))
    inner_folds = _check_int("inner_folds", inner_folds, 2)
    gap = _check_int("gap", gap, 0)
    check_choice("alpha_score", alpha_score, ALPHA_SCORES)
    check_choice("solver", solver, SOLVERS)
    bk = _resolve(backend, device, dtype, X, Y)
    Xb = bk.asarray(X)
    alphas_b = bk.asarray(alphas_np)

    spectral = _use_spectral(path, bk)
    plans = []
    max_test = 1
    with _small_lapack(bk):
        for train, test in folds:
            inner = []
            if len(alphas_np) > 1 and fixed_idx is None:
                for itrain, itest in _folds_of(np.sort(train), inner_folds, gap):
                    inner.append(_factorise(bk, Xb, itrain, itest, standardize=standardize, solver=solver,
                                            alphas=alphas_np if spectral else None))
                    max_test = max(max_test, len(itest))
            outer = _factorise(bk, Xb, np.sort(train), np.sort(test), standardize=standardize, solver=solver,
                               alphas=alphas_np if spectral else None)
            plans.append((inner, outer, _shrinkage(bk, outer.eig, alphas_b).T))

    n_folds = len(folds)
    out_dtype = np.float32 if bk.dtype == "float32" else np.float64
    r2_folds = np.zeros((n_folds, n_voxels), dtype=out_dtype)
    r_folds = np.zeros_like(r2_folds)
    alpha_idx = np.zeros((n_folds, n_voxels), dtype=np.intp)
    step = _chunk_size(bk, chunk_size, len(alphas_np), max_test, n_voxels, spectral)

    def one_chunk(start: int):
        Yc = _load_chunk(bk, Y, start, step, spectral)
        width = Yc.shape[1]
        r2 = np.zeros((n_folds, width), dtype=out_dtype)
        r = np.zeros_like(r2)
        chosen = np.zeros((n_folds, width), dtype=np.intp)
        for o, (inner, outer, G_table) in enumerate(plans):
            if inner:
                best, _ = _select_alphas(bk, inner, Yc, alphas_b, alpha_score)
            elif fixed_idx is not None:
                best = _index(bk, np.ascontiguousarray(fixed_idx[start:start + step]))
            else:
                best = _index(bk, np.zeros(width, dtype=np.intp))
            if spectral:
                sp = outer.spectral
                m, u = _project(sp, Yc)
                pred = sp.B64 @ (sp.G[:, best] * u)
                pred += m
                Yte = Yc[sp.test].astype(np.float64)
            else:
                W, y_mean = _refit(bk, outer, Yc, G_table, best)
                pred = outer.B @ W + y_mean
                Yte = Yc[outer.test]
            r2[o] = bk.to_numpy(r2_score_columns(Yte, pred))
            r[o] = bk.to_numpy(correlation_columns(Yte, pred))
            chosen[o] = bk.to_numpy(best)
        return start, r2, r, chosen

    starts = range(0, n_voxels, step)
    for c, (start, r2, r, chosen) in enumerate(_map_chunks(one_chunk, starts, _chunk_threads(bk), cancel)):
        sl = slice(start, start + step)
        r2_folds[:, sl], r_folds[:, sl], alpha_idx[:, sl] = r2, r, chosen
        report(progress, "cross-validated ridge", c + 1, len(starts))
    return CVRidgeScores(
        r2=r2_folds.mean(0), r=r_folds.mean(0), r2_folds=r2_folds, r_folds=r_folds,
        alpha_folds=alphas_np[alpha_idx], alphas=alphas_np, folds=folds,
    )


@dataclass
class RidgeCVFit:
    """Single-level cross-validated ridge fit (:func:`ridge_cv_fit`).

    Attributes
    ----------
    alpha : ndarray of shape (n_voxels,)
        Each voxel's α, chosen by the mean CV score.
    cv_scores : ndarray of shape (n_alphas, n_voxels)
        Mean CV score of every candidate α (``alpha_score``).
    coef : ndarray of shape (n_features, n_voxels)
        Ridge coefficients on the standardised regressors, refit on all volumes given.
    intercept : ndarray of shape (n_voxels,)
    x_mean, x_scale : ndarray of shape (n_features,)
        Standardisation of the regressors: predictions are
        ``((X - x_mean) / x_scale) @ coef + intercept``.
    alphas : ndarray of shape (n_alphas,)
        The sorted candidate grid.
    """

    alpha: np.ndarray
    cv_scores: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    x_mean: np.ndarray
    x_scale: np.ndarray
    alphas: np.ndarray

    def predict(self, X) -> np.ndarray:
        """Predictions of shape (n_volumes, n_voxels) for regressors ``X``."""
        X = np.asarray(X, dtype=self.coef.dtype)
        return ((X - self.x_mean) / self.x_scale) @ self.coef + self.intercept


def ridge_cv_fit(X, Y, folds, alphas=DEFAULT_ALPHAS, *, alpha_score: str = "r2",
                 standardize: bool = True, solver: str = "auto", backend: str = "numpy",
                 device: str | None = None, dtype: str | None = None,
                 chunk_size: int | None = None, path: str = "auto", progress=None, cancel=None) -> RidgeCVFit:
    """Choose each voxel's α by cross-validation on ``folds``, then refit on all volumes.

    This is the single-level procedure of himalaya's ``RidgeCV`` (and the final fit
    of :class:`CVRidgeEncoder`); its CV scores are optimistic for the chosen α and are
    not held-out performance, which :func:`cv_ridge_scores` gives.

    Parameters
    ----------
    X : array of shape (n_volumes, n_features)
    Y : array of shape (n_volumes, n_voxels)
    folds : list of (train, test) index arrays
    alphas, alpha_score, standardize, solver, backend, device, dtype, chunk_size, path,
    progress, cancel
        As in :func:`cv_ridge_scores`.

    Returns
    -------
    RidgeCVFit
    """
    X, Y = _check_XY(X, Y)
    n_volumes, n_voxels = Y.shape
    folds = _check_folds(folds, n_volumes)
    alphas_np = np.sort(_check_alphas(alphas))
    check_choice("alpha_score", alpha_score, ALPHA_SCORES)
    check_choice("solver", solver, SOLVERS)
    bk = _resolve(backend, device, dtype, X, Y)
    Xb = bk.asarray(X)
    alphas_b = bk.asarray(alphas_np)
    spectral = _use_spectral(path, bk)
    with _small_lapack(bk):
        factors = [_factorise(bk, Xb, np.sort(tr), np.sort(te), standardize=standardize, solver=solver,
                              alphas=alphas_np if spectral else None) for tr, te in folds]
        full = _factorise(bk, Xb, np.arange(n_volumes), None, standardize=standardize, solver=solver)
    G_table = _shrinkage(bk, full.eig, alphas_b).T

    out_dtype = np.float32 if bk.dtype == "float32" else np.float64
    coef = np.zeros((X.shape[1], n_voxels), dtype=out_dtype)
    intercept = np.zeros(n_voxels, dtype=out_dtype)
    cv_scores = np.zeros((len(alphas_np), n_voxels), dtype=out_dtype)
    alpha_idx = np.zeros(n_voxels, dtype=np.intp)
    step = _chunk_size(bk, chunk_size, len(alphas_np), max(len(te) for _, te in folds), n_voxels, spectral)

    def one_chunk(start: int):
        Yc = _load_chunk(bk, Y, start, step, spectral)
        mean = None
        if len(alphas_np) > 1:
            best, mean = _select_alphas(bk, factors, Yc, alphas_b, alpha_score)
        else:
            best = _index(bk, np.zeros(Yc.shape[1], dtype=np.intp))
        W, y_mean = _refit(bk, full, Yc, G_table, best)
        if spectral:  # the chunk was centred on its own mean: put it back
            y_mean = y_mean + Y[:, start:start + step].mean(0, dtype=np.float64)
        return (start, None if mean is None else bk.to_numpy(mean), bk.to_numpy(full.XtU @ W),
                bk.to_numpy(y_mean), bk.to_numpy(best))

    starts = range(0, n_voxels, step)
    for c, (start, mean, W, y_mean, best) in enumerate(_map_chunks(one_chunk, starts, _chunk_threads(bk), cancel)):
        sl = slice(start, start + step)
        if mean is not None:
            cv_scores[:, sl] = mean
        coef[:, sl], intercept[sl], alpha_idx[sl] = W, y_mean, best
        report(progress, "ridge fit", c + 1, len(starts))
    return RidgeCVFit(
        alpha=alphas_np[alpha_idx], cv_scores=cv_scores, coef=coef, intercept=intercept,
        x_mean=bk.to_numpy(full.x_mean).astype(out_dtype),
        x_scale=bk.to_numpy(full.x_scale).astype(out_dtype), alphas=alphas_np,
    )


# --------------------------------------------------------------------------- estimator


class CVRidgeEncoder(RegressorMixin, BaseEstimator):
    """Voxel-wise encoding model: cross-validated ridge of fMRI on the regressors.

    ``fit`` runs, in order: FIR delays of the regressors (:func:`make_delays`); the same
    high-pass filter on regressors and fMRI (:func:`highpass`, cosine basis below
    ``1 / highpass_cutoff`` Hz plus a linear trend); z-scoring of each voxel
    (``standardize_Y``; constant voxels are reported and score 0); the nested CV of
    :func:`cv_ridge_scores` on contiguous folds (held-out scores); and a final fit on all
    volumes with each voxel's α chosen by an inner contiguous CV over the whole run
    (:func:`ridge_cv_fit`), which gives the atom maps.

    Parameters
    ----------
    alphas : array of shape (n_alphas,), default ``np.logspace(-1, 6, 15)``
        Candidate ridge penalties.
    n_folds : int, default 5
        Outer contiguous folds.
    gap : int, default 5
        Volumes left out of training on each side of each test block (outer and inner).
    inner_folds : int, default 4
        Contiguous folds used to choose α inside each training set.
    delays : sequence of int, default (0,)
        FIR delays in volumes (e.g. ``(1, 2, 3, 4)`` for un-convolved regressors).
    highpass_cutoff : float or None, default 128.0
        High-pass cut-off period in seconds; ``None``: only the mean and the trend are
        removed (``detrend``); both ``None``/``False``: only centring.
    tr : float, default 1.5
        Repetition time in seconds.
    detrend : bool or int, default True
        Polynomial trend removed with the drifts.
    standardize_Y : bool, default True
        z-score each voxel before fitting, so coefficients are in standard deviations
        of the voxel per standard deviation of the regressor (comparable across
        subjects). Scores and chosen α do not depend on it.
    alpha_score : {"r2", "neg_mse"}, default "r2"
        Criterion of the inner CV.
    solver : {"auto", "svd", "eigh"}, default "auto"
    backend : {"numpy", "torch", "auto"}, default "numpy"
    device : str, optional
    dtype : {"float32", "float64"}, optional
        Default: float64 when X and Y are float64, else float32.
    chunk_size : int, optional
        Voxels per chunk.

    Attributes
    ----------
    r2_, r_ : ndarray of shape (n_voxels,)
        Mean over outer folds of the within-fold held-out R² / correlation.
    r2_folds_, r_folds_ : ndarray of shape (n_folds, n_voxels)
    alpha_folds_ : ndarray of shape (n_folds, n_voxels)
        α chosen inside each outer training fold.
    alpha_ : ndarray of shape (n_voxels,)
        α of the final fit (inner CV over all volumes).
    cv_scores_ : ndarray of shape (n_alphas, n_voxels)
        Inner-CV score of each α in the final fit.
    coef_ : ndarray of shape (n_features * n_delays, n_voxels)
        Coefficients of the final fit on the standardised (delayed, filtered)
        regressors; delay-major rows (see :func:`make_delays`). For one delay, row
        ``j`` is atom ``j``'s map.
    intercept_ : ndarray of shape (n_voxels,)
    x_mean_, x_scale_ : ndarray of shape (n_features * n_delays,)
        Standardisation of the filtered regressors.
    y_mean_, y_scale_ : ndarray of shape (n_voxels,)
        Standardisation of the filtered voxels (mean 0 after the filter; scale 1 when
        ``standardize_Y`` is False).
    constant_voxels_ : ndarray of bool, shape (n_voxels,)
        Voxels with no variance after filtering.
    folds_ : list of (train, test)
        The outer folds.
    n_features_in_ : int

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> atoms = rng.standard_normal((200, 4))
    >>> Y = atoms[:, :1] + rng.standard_normal((200, 3))
    >>> model = CVRidgeEncoder(highpass_cutoff=None).fit(atoms, Y)
    >>> model.r2_.shape, model.coef_.shape
    ((3,), (4, 3))
    """

    def __init__(self, alphas=tuple(float(a) for a in DEFAULT_ALPHAS), n_folds=5, gap=5, inner_folds=4, delays=(0,),
                 highpass_cutoff=128.0, tr=1.5, detrend=True, standardize_Y=True,
                 alpha_score="r2", solver="auto", backend="numpy", device=None, dtype=None,
                 chunk_size=None):
        self.alphas = alphas
        self.n_folds = n_folds
        self.gap = gap
        self.inner_folds = inner_folds
        self.delays = delays
        self.highpass_cutoff = highpass_cutoff
        self.tr = tr
        self.detrend = detrend
        self.standardize_Y = standardize_Y
        self.alpha_score = alpha_score
        self.solver = solver
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.chunk_size = chunk_size

    def __sklearn_tags__(self):
        return _encoder_tags(super().__sklearn_tags__())

    def _filter(self, A: np.ndarray) -> np.ndarray:
        if self.highpass_cutoff is None and not self.detrend:
            return A - A.mean(0)
        return highpass(A, self.tr, self.highpass_cutoff, self.detrend)

    def _design(self, X) -> np.ndarray:
        X = _as_float_2d("X", X, "(n_volumes, n_features)")
        return self._filter(make_delays(X, self.delays))

    def fit(self, X, Y, progress=None, cancel=None):
        """Fit on regressors ``X`` (n_volumes, n_features) and fMRI ``Y`` (n_volumes, n_voxels).

        Returns
        -------
        self
        """
        _sklearn_validate(self, X, Y, reset=True)
        Y = np.asarray(Y) if type(Y).__module__.split(".")[0] != "torch" else Y
        self._y_1d = getattr(Y, "ndim", 2) == 1  # scikit-learn: a 1-D y gives a 1-D prediction
        if self._y_1d:
            Y = Y.reshape(-1, 1)
        X, Y = _check_XY(X, Y)
        Xp = self._design(X)
        Yp = self._filter(Y)
        y_level = Y.mean(0) - Yp.mean(0)  # what the filter removed on average (the mean)
        if not np.all(np.isfinite(Yp)):
            bad = np.flatnonzero(~np.isfinite(Yp).all(0))
            raise FMRIInputError(
                f"'Y' holds NaN or infinite values in {bad.size} voxel columns "
                f"(first {bad[:5].tolist()}); remove them (mask) before encoding."
            )
        # Filtered columns have zero mean, so their spread is their root mean square.
        std = np.sqrt(np.square(Yp).mean(0, dtype=np.float64))
        scale_ref = np.abs(Y).max(0) if Y.size else std
        constant = std <= 1e-6 * np.maximum(scale_ref, np.finfo(np.float32).tiny)
        if constant.any():
            import warnings

            warnings.warn(
                f"{int(constant.sum())} of {constant.size} voxels have no variance after "
                f"filtering (first {np.flatnonzero(constant)[:5].tolist()}); their scores are 0.",
                ConstantColumnsWarning, stacklevel=2,
            )
        y_scale = np.where(constant | (not self.standardize_Y), 1.0, std).astype(Yp.dtype)
        if self.standardize_Y:
            Yp /= y_scale
        Yp[:, constant] = 0.0

        folds = contiguous_folds(X.shape[0], self.n_folds, self.gap)
        common = dict(alpha_score=self.alpha_score, solver=self.solver, backend=self.backend,
                      device=self.device, dtype=self.dtype, chunk_size=self.chunk_size,
                      progress=progress, cancel=cancel)
        cv = cv_ridge_scores(Xp, Yp, folds, self.alphas, inner_folds=self.inner_folds,
                             gap=self.gap, **common)
        final_folds = contiguous_folds(X.shape[0], self.inner_folds, self.gap)
        final = ridge_cv_fit(Xp, Yp, final_folds, self.alphas, **common)

        self.r2_, self.r_ = cv.r2, cv.r
        self.r2_folds_, self.r_folds_, self.alpha_folds_ = cv.r2_folds, cv.r_folds, cv.alpha_folds
        self.alpha_ = final.alpha
        self.cv_scores_ = final.cv_scores
        self.coef_, self.intercept_ = final.coef, final.intercept
        self.x_mean_, self.x_scale_ = final.x_mean, final.x_scale
        self.y_mean_ = np.asarray(y_level, dtype=final.coef.dtype)
        self.y_scale_ = y_scale.astype(final.coef.dtype)
        self.constant_voxels_ = constant
        self.folds_ = folds
        self.alphas_ = cv.alphas
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X) -> np.ndarray:
        """Predicted fMRI for regressors ``X``, in the units of the ``Y`` given to ``fit``.

        ``X`` goes through the same delays and filter as in ``fit`` and is standardised
        with the statistics stored at fit time; the prediction is of the filtered fMRI
        (the slow drifts the high-pass removed are not predicted), scaled back to
        ``Y``'s units and mean.

        Returns
        -------
        Y_pred : ndarray of shape (n_volumes, n_voxels), or (n_volumes,) when ``fit`` got a 1-D ``Y``
        """
        _check_fitted(self)
        _sklearn_validate(self, X, None, reset=False)
        X = _as_float_2d("X", X, "(n_volumes, n_features)")
        if X.shape[1] != self.n_features_in_:
            raise ShapeError(
                f"X has {X.shape[1]} features, but CVRidgeEncoder is expecting {self.n_features_in_} "
                f"features as input: 'X' must have {self.n_features_in_} columns (regressors) as in fit."
            )
        if not np.all(np.isfinite(X)):
            raise ShapeError(f"'X' holds {int(np.count_nonzero(~np.isfinite(X)))} NaN or infinite values.")
        Xp = self._design(X).astype(self.coef_.dtype)
        pred = (((Xp - self.x_mean_) / self.x_scale_) @ self.coef_ + self.intercept_) * self.y_scale_ + self.y_mean_
        return pred[:, 0] if getattr(self, "_y_1d", False) else pred
