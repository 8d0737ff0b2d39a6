"""The spectral path (numpy): the test error of every α without the path's predictions.

For one factor (training eigenvalues ``e_j = s_j²``, test design in the factor's basis ``B``,
``C = B'B``) and one voxel, with ``u = U'(y_train - m)`` and ``z = B'(y_test - m)``::

    ||y_test - m - B diag(g) u||² = ||y_test - m||² - 2 Σ_j g_j z_j u_j + Σ_jk C_jk g_j g_k u_j u_k,
    g_j = 1 / (e_j + α).

The quadratic term is what costs: n_alphas × n_test × r per voxel when the
predictions are formed. Its off-diagonal part follows from the partial fractions
``g_j g_k = (g_j - g_k) / (e_k - e_j)``::

    Σ_{j≠k} C_jk g_j g_k u_j u_k = 2 Σ_j g_j u_j (D u)_j,   D_jk = C_jk / (e_k - e_j),

so a voxel's own work is ``D u`` (r × r) whatever the number of α, and the whole
path is one small product ``[g² diag(C), 2g] @ [u², u ∘ (D u - z)]``. Pairs of
components whose eigenvalues are too close for the difference to be accurate
(relative gap below ``_NEAR_GAP``: repeated singular values, components at zero)
are summed directly, α by α. The projections of the fMRI (``U'Y``) are BLAS
products in the data's precision; everything after them is float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._ridge_segments import _runs, test_moments, train_projection
from .scores import FLAT_RTOL

#: Relative eigenvalue gap below which a pair of components is summed directly.
_NEAR_GAP = 1e-6


@dataclass
class _Spectral:
    """One factor, prepared for the spectral path (see the module's notes)."""

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
    C: np.ndarray | None = None     # (r, r) float64: B'B
    near: tuple | None = None       # (J, K): components summed directly, (n_alphas·|J|, |J|)


def _spectral(f, train: np.ndarray, test: np.ndarray | None, alphas: np.ndarray,
              eig: np.ndarray, B64: np.ndarray | None) -> _Spectral:
    """Prepare the factor ``f`` (a ``_Factor`` of :mod:`._ridge_solver`) for the spectral path.

    Parameters
    ----------
    train, test : int ndarray of shape (n_train,) and (n_test,) or None
        The factor's volumes.
    alphas : float64 ndarray of shape (n_alphas,)
    eig : float64 ndarray of shape (r,)
        The training eigenvalues ``s²``.
    B64 : float64 ndarray of shape (n_test, r) or None
        The test design in the factor's basis, ``X_test X' U``.
    """
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
    C = sp.C = B64.T @ B64
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


def _direct_moments(sp: _Spectral, Yc: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``z = B'(y_test - m)``, ``Σ (y_test - m)²`` and the test sum of squares about its own
    mean, from the test rows of ``Yc``."""
    Yte = Yc[sp.test_rows]
    z = (sp.B.T @ Yte).astype(np.float64)                            # B'(y_test - m) = B'y_test - (B'1) m
    z -= sp.b1[:, None] * m[None, :]
    Yte = Yte.astype(np.float64)
    Yte -= m
    yy = np.einsum("nc,nc->c", Yte, Yte)
    Yte -= Yte.mean(0)
    ss_tot = np.einsum("nc,nc->c", Yte, Yte)
    ss_tot[ss_tot <= FLAT_RTOL * yy] = 0.0                          # flat up to rounding (scores.FLAT_RTOL)
    return z, yy, ss_tot


def _spectral_scores(sp: _Spectral, Yc: np.ndarray, metric: str, segments=None, stats=None) -> np.ndarray:
    """Score of every α on the factor's test set, every voxel: (n_alphas, c) float64.

    ``segments``, ``stats``: the factor's segment runs and the chunk's sums over them
    (:mod:`._ridge_segments`), from which the projections come without reading ``Yc``."""
    if stats is not None:
        m, u = train_projection(segments, stats)
        mo = test_moments(segments, stats, m)
        z, yy, ss_tot = mo.z, mo.yy, mo.ss_tot
    else:
        m, u = _project(sp, Yc)
        z, yy, ss_tot = _direct_moments(sp, Yc, m)
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
    ss_res += yy
    np.maximum(ss_res, 0.0, out=ss_res)                              # rounding below an exact fit
    n_test = len(sp.test)
    if metric == "neg_mse":
        return ss_res / -n_test
    flat = ss_tot <= 0
    ss_res /= ss_tot + flat
    np.subtract(1.0, ss_res, out=ss_res)
    ss_res *= ~flat
    return ss_res


def held_out_scores(sp: _Spectral, segments, stats, best) -> tuple[np.ndarray, np.ndarray]:
    """R² and Pearson r on the factor's test volumes of each voxel's prediction with its
    own α (index ``best``), from the chunk's sums over the segments (no prediction is
    formed): with ``w = g ∘ u`` the prediction about ``m`` is ``B w``, so
    ``Σ (y - m) p = z'w``, ``Σ p² = w'Cw``, ``Σ p = (B'1)'w``.

    Returns two (c,) float64 arrays, 0 where the test volumes or the prediction are flat
    (as :func:`~napari_brainorg.encoding.scores.r2_score_columns` and
    :func:`~napari_brainorg.encoding.scores.correlation_columns`)."""
    m, u = train_projection(segments, stats)
    mo = test_moments(segments, stats, m)
    w = sp.G[:, best] * u
    cross = np.einsum("rc,rc->c", mo.z, w)
    pp = np.einsum("rc,rc->c", w, sp.C @ w)
    p_sum = sp.b1 @ w
    n = len(sp.test)
    sse = np.maximum(mo.yy - 2.0 * cross + pp, 0.0)
    flat = mo.ss_tot <= 0
    r2 = np.where(flat, 0.0, 1.0 - sse / (mo.ss_tot + flat))
    cov = cross - mo.y_sum * p_sum / n
    var_p = pp - p_sum * p_sum / n
    var = mo.ss_tot * np.where(var_p <= FLAT_RTOL * pp, 0.0, var_p)
    flat = var <= 0
    return r2, np.where(flat, 0.0, cov / np.sqrt(var + flat))
