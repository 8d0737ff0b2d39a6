"""The dictionary objective ``0.5 ||X - D A||_F^2 + lam ||A||_1`` and the scale of λ."""

from __future__ import annotations

import math

import numpy as np

from .._backend import Backend
from ..errors import ShapeError
from ._arrays import _as_2d, _check_lam, _check_nonneg_real, _shape_of

#: Default relative sparsity penalty: lambda = DEFAULT_ALPHA * rms column norm of X.
#: For z-scored ANs the rms norm is sqrt(n_volumes), so an AN takes up an atom only
#: where its (partial) correlation with the atom's time course exceeds about 0.15,
#: about 2.6 standard deviations of the correlation of two independent white series
#: over 300 volumes (the bundled story's length), and about 4.7 over 1,000.
DEFAULT_ALPHA = 0.15


def _column_blocks(n_cols: int, n_rows: int, budget: int = 64 * 2**20):
    step = max(1, budget // max(1, 8 * n_rows))
    for start in range(0, n_cols, step):
        yield slice(start, min(start + step, n_cols))


def _rms_column_norm(X) -> float:
    """sqrt(mean over columns of the squared column norm), in float64, streamed."""
    n_rows, n_cols = _shape_of(X)
    if n_cols == 0:
        return 0.0
    total = 0.0
    for sl in _column_blocks(n_cols, n_rows):
        block = np.asarray(Backend().to_numpy(X[:, sl]), dtype=np.float64)
        total += float(np.einsum("ij,ij->", block, block))
    return math.sqrt(total / n_cols)


def lambda_from_alpha(X, alpha: float) -> float:
    """The absolute penalty λ for a relative one: ``λ = alpha * rms column norm of X``.

    Parameters
    ----------
    X : array of shape (n_volumes, n_ans)
    alpha : float >= 0

    Returns
    -------
    lam : float
        ``alpha * sqrt(mean_i ||x_i||^2)``; for z-scored columns this is
        ``alpha * sqrt(n_volumes)``, and an AN then uses an atom only where its
        partial correlation with the atom exceeds about ``alpha``.
    """
    X = _as_2d("X", X, "(n_volumes, n_ans)")
    return _check_nonneg_real("alpha", alpha) * _rms_column_norm(X)


def dictionary_objective(X, D, A, lam) -> float:
    """``0.5 * ||X - D A||_F^2 + lam * ||A||_1``, computed in float64 by column blocks.

    Parameters
    ----------
    X : array of shape (n_volumes, n_columns)
    D : array of shape (n_volumes, k)
    A : array of shape (k, n_columns)
    lam : float or array of shape (n_columns,)

    Returns
    -------
    float
    """
    to_np = Backend().to_numpy
    X = _as_2d("X", X, "(n_volumes, n_columns)")
    D = np.asarray(to_np(_as_2d("D", D, "(n_volumes, k)")), dtype=np.float64)
    A = _as_2d("A", A, "(k, n_columns)")
    n_volumes, n_cols = _shape_of(X)
    if D.shape[0] != n_volumes or _shape_of(A) != (D.shape[1], n_cols):
        raise ShapeError(
            f"'D' and 'A' must have shapes ({n_volumes}, k) and (k, {n_cols}); arrays of "
            f"shapes {D.shape} and {_shape_of(A)} were provided."
        )
    lam = _check_lam(lam, n_cols)
    total = 0.0
    for sl in _column_blocks(n_cols, n_volumes + D.shape[1]):
        xb = np.asarray(to_np(X[:, sl]), dtype=np.float64)
        ab = np.asarray(to_np(A[:, sl]), dtype=np.float64)
        resid = xb - D @ ab
        l1 = np.abs(ab).sum(0)
        total += 0.5 * float(np.einsum("ij,ij->", resid, resid))
        total += float(np.sum(l1 * (lam if isinstance(lam, float) else lam[sl])))
    return total


def _objective_from_stats(D, XAt, AAt, l1: float, x_sq: float) -> float:
    """0.5||X - D A||^2 + λ||A||_1 from X A' (n_volumes, k), A A' (k, k) and the λ-weighted |A|."""
    fit = x_sq - 2.0 * float(np.sum(D * XAt)) + float(np.sum((D.T @ D) * AAt))
    return 0.5 * max(fit, 0.0) + l1
