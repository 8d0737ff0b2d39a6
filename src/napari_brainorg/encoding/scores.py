"""Column-wise scores of predicted against measured time series (one per voxel).

Both functions work on numpy arrays and on torch tensors alike (the result has the
input's type), reduce over the sample axis (``axis=-2``: volumes) and broadcast over
any leading axes, so the predictions of a whole regularisation path
``(n_alphas, n_volumes, n_voxels)`` are scored against ``(n_volumes, n_voxels)`` at
once. A column whose measured values do not vary scores 0 (not NaN), so a map of
scores never holds NaN for flat voxels outside the brain; "do not vary" is up to
rounding (:data:`FLAT_RTOL`), since a constant column's deviations from its computed
mean are rounding, not zero, and would make R² any number.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError

__all__ = ["r2_score_columns", "correlation_columns", "FLAT_RTOL"]

#: a column is flat when its sum of squares about its mean is at most this fraction of its
#: sum of squares (rounding leaves ~1e-16 of it in float64, ~1e-14 in float32)
FLAT_RTOL = 1e-12


def _is_torch(a) -> bool:
    return type(a).__module__.split(".")[0] == "torch"


def _where(cond, a, b):
    if _is_torch(cond):
        import torch

        return torch.where(cond, a, b)
    return np.where(cond, a, b)


def _check_pair(name_a: str, a, name_b: str, b):
    if not _is_torch(a):
        a = np.asarray(a)
    if not _is_torch(b):
        b = np.asarray(b)
    if a.ndim < 2 or b.ndim < 2 or tuple(a.shape[-2:]) != tuple(b.shape[-2:]):
        raise ShapeError(
            f"{name_a!r} and {name_b!r} must be arrays of shape (..., n_volumes, n_voxels) "
            f"with the same last two dimensions; shapes {tuple(a.shape)} and "
            f"{tuple(b.shape)} were provided."
        )
    return a, b


def r2_score_columns(y_true, y_pred):
    """Coefficient of determination of each column, as :func:`sklearn.metrics.r2_score`.

    ``R2 = 1 - sum((y - y_hat)**2) / sum((y - mean(y))**2)``, with the mean taken over
    ``y_true``'s own samples (the test fold's mean when scoring held-out data), so a
    prediction that is off by a constant is penalised.

    Parameters
    ----------
    y_true : array of shape (n_volumes, n_voxels) or (..., n_volumes, n_voxels)
        Measured time series.
    y_pred : array of shape (..., n_volumes, n_voxels)
        Predictions; leading axes broadcast against ``y_true``.

    Returns
    -------
    r2 : array of shape (..., n_voxels)
        One score per column; 0 where ``y_true`` is constant. Can be negative.
    """
    y_true, y_pred = _check_pair("y_true", y_true, "y_pred", y_pred)
    centred = y_true - y_true.mean(-2, keepdims=True)
    ss_tot = (centred * centred).sum(-2)
    resid = y_true - y_pred
    ss_res = (resid * resid).sum(-2)
    flat = ss_tot <= FLAT_RTOL * (y_true * y_true).sum(-2)
    safe = _where(flat, ss_tot + 1, ss_tot)
    return _where(flat, ss_res * 0, 1 - ss_res / safe)


def correlation_columns(a, b):
    """Pearson correlation of each column of ``a`` with the same column of ``b``.

    Parameters
    ----------
    a, b : arrays of shape (..., n_volumes, n_voxels)
        Leading axes broadcast.

    Returns
    -------
    r : array of shape (..., n_voxels)
        Correlations in [-1, 1]; 0 where either column is constant.
    """
    a, b = _check_pair("a", a, "b", b)
    ac = a - a.mean(-2, keepdims=True)
    bc = b - b.mean(-2, keepdims=True)
    cov = (ac * bc).sum(-2)
    var_a, var_b = (ac * ac).sum(-2), (bc * bc).sum(-2)
    var = var_a * var_b
    flat = (var <= 0) | (var_a <= FLAT_RTOL * (a * a).sum(-2)) | (var_b <= FLAT_RTOL * (b * b).sum(-2))
    safe = _where(flat, var + 1, var)
    r = cov / safe**0.5
    return _where(flat, r * 0, r)
