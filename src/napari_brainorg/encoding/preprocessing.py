"""Temporal preprocessing shared by the regressors and the fMRI.

The encoding models compare the atoms' time courses with voxel time courses, so both
go through the same filter (METHOD §3): a discrete-cosine high-pass (the drift basis
of SPM and nilearn, default cut-off 128 s) plus a constant and a polynomial trend,
projected out by least squares. FIR delays expand each regressor into shifted copies
so a voxel can pick its own hemodynamic lag.

Filtering is applied once to the whole run before cross-validation, as is usual for
fMRI encoding: the drift basis holds only frequencies below the cut-off, so what a
training block learns about a test block through it is limited to those slow drifts.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..errors import BrainorgWarning, ConfigError, ShapeError

__all__ = [
    "ConstantColumnsWarning",
    "cosine_drift_basis",
    "drift_basis",
    "highpass",
    "zscore",
    "make_delays",
]

# Columns per block when projecting a large (n_volumes, n_voxels) array, so that the
# float64 working copy stays near 64 MiB whatever the number of voxels.
_BLOCK_BYTES = 64 * 2**20


class ConstantColumnsWarning(BrainorgWarning):
    """Columns (voxels or regressors) with no variance were set to zero."""


def _check_tr(tr) -> float:
    try:
        tr = float(tr)
    except (TypeError, ValueError):
        raise ConfigError(f"'tr' must be a positive number of seconds; {tr!r} was provided.") from None
    if not np.isfinite(tr) or tr <= 0:
        raise ConfigError(f"'tr' must be a positive number of seconds; {tr!r} was provided.")
    return tr


def cosine_drift_basis(n_volumes: int, tr: float, cutoff: float = 128.0) -> np.ndarray:
    """Discrete-cosine drift regressors with periods longer than ``cutoff`` seconds.

    The same DCT-II basis as :func:`nilearn.signal.create_cosine_drift` (and SPM's
    ``spm_filter``) with ``high_pass = 1 / cutoff`` Hz, without nilearn's trailing
    constant column: column ``k`` (k = 1 ... order) is
    ``sqrt(2 / n) * cos(pi / n * (t + 0.5) * k)`` with
    ``order = min(n - 1, floor(2 * n * tr / cutoff))``.

    Parameters
    ----------
    n_volumes : int
        Number of volumes (time points).
    tr : float
        Repetition time in seconds.
    cutoff : float, default 128.0
        Longest period kept by the high-pass filter, in seconds. Drifts slower than
        this are in the basis.

    Returns
    -------
    basis : ndarray of shape (n_volumes, order)
        Orthonormal columns (``order`` may be 0 for a short run).
    """
    n_volumes = int(n_volumes)
    if n_volumes < 2:
        raise ShapeError(f"'n_volumes' must be at least 2; {n_volumes} was provided.")
    tr = _check_tr(tr)
    try:
        cutoff = float(cutoff)
    except (TypeError, ValueError):
        raise ConfigError(f"'cutoff' must be a positive number of seconds; {cutoff!r} was provided.") from None
    if not np.isfinite(cutoff) or cutoff <= 0:
        raise ConfigError(f"'cutoff' must be a positive number of seconds; {cutoff!r} was provided.")
    order = int(min(n_volumes - 1, np.floor(2 * n_volumes * tr / cutoff)))
    t = np.arange(n_volumes, dtype=np.float64)[:, None]
    k = np.arange(1, order + 1, dtype=np.float64)[None, :]
    return np.sqrt(2.0 / n_volumes) * np.cos(np.pi / n_volumes * (t + 0.5) * k)


def drift_basis(n_volumes: int, tr: float, cutoff: float | None = 128.0,
                detrend: bool | int = True) -> np.ndarray:
    """Orthonormal basis of everything :func:`highpass` removes.

    A constant, polynomial trends up to order ``detrend`` (``True`` means linear) and
    the cosine drifts of :func:`cosine_drift_basis`, orthonormalised together.

    Returns
    -------
    Q : ndarray of shape (n_volumes, n_drifts)
        Orthonormal columns spanning the removed subspace.
    """
    n_volumes = int(n_volumes)
    order = int(detrend) if not isinstance(detrend, bool) else (1 if detrend else 0)
    if order < 0:
        raise ConfigError(f"'detrend' must be a bool or a polynomial order >= 0; {detrend!r} was provided.")
    t = np.linspace(-1.0, 1.0, n_volumes)
    columns = [t**p for p in range(order + 1)]
    if cutoff is not None:
        columns.extend(cosine_drift_basis(n_volumes, tr, cutoff).T)
    basis = np.stack(columns, axis=1)
    q, r = np.linalg.qr(basis)
    # Drop directions that are numerically dependent (a linear trend is almost
    # spanned by the first cosine in very short runs).
    keep = np.abs(np.diag(r)) > 1e-10 * np.abs(r[0, 0])
    return q[:, keep]


def highpass(Y, tr: float, cutoff: float | None = 128.0, detrend: bool | int = True, *,
             copy: bool = True) -> np.ndarray:
    """Remove slow drifts from every column: cosine high-pass plus polynomial trend.

    ``Y - Q (Q' Y)`` with ``Q`` from :func:`drift_basis`: the least-squares residual of
    each column on a constant, a polynomial trend and the cosine drifts (nilearn's
    ``signal.clean(..., filter="cosine")`` / SPM's high-pass, both by projection).
    Apply the same call to the fMRI and to the regressors.

    Parameters
    ----------
    Y : array of shape (n_volumes, n_columns)
        Voxel time series or regressors.
    tr : float
        Repetition time in seconds.
    cutoff : float or None, default 128.0
        High-pass cut-off period in seconds; ``None`` removes only the mean and trend.
    detrend : bool or int, default True
        ``True``: remove a linear trend; an int: polynomial order; ``False``: mean only.
    copy : bool, default True
        ``False`` filters a float array in place (saves a copy of a large ``Y``).

    Returns
    -------
    filtered : ndarray of shape (n_volumes, n_columns)
        Same dtype as ``Y`` (floats) with zero-mean columns.
    """
    Y = np.asarray(Y)
    if Y.ndim == 1:
        return highpass(Y[:, None], tr, cutoff, detrend, copy=copy)[:, 0]
    if Y.ndim != 2:
        raise ShapeError(f"'Y' must be an array of shape (n_volumes, n_columns); shape {Y.shape} was provided.")
    _check_tr(tr)
    if not np.issubdtype(Y.dtype, np.floating):
        Y = Y.astype(np.float64)
    elif copy:
        Y = Y.copy()
    q = drift_basis(Y.shape[0], tr, cutoff, detrend)
    block = max(1, _BLOCK_BYTES // (8 * max(Y.shape[0], 1)))
    for start in range(0, Y.shape[1], block):
        if Y.dtype == np.float64:  # in place: no copy of the block
            part = Y[:, start:start + block]
            part -= q @ (q.T @ part)
            continue
        part = Y[:, start:start + block].astype(np.float64)
        part -= q @ (q.T @ part)
        Y[:, start:start + block] = part
    return Y


def zscore(Y, axis: int = 0, *, return_constant: bool = False, copy: bool = True):
    """Standardise to zero mean and unit variance (``ddof=0``) along ``axis``.

    Columns (for ``axis=0``) with no variance cannot be scaled; they are set to zero,
    counted in a :class:`ConstantColumnsWarning`, and their mask is returned on request.

    Parameters
    ----------
    Y : array of shape (n_volumes, n_columns)
    axis : int, default 0
        Axis along which mean and standard deviation are taken (volumes).
    return_constant : bool, default False
        Also return the boolean mask of constant columns.
    copy : bool, default True
        ``False`` standardises a float array in place (saves a copy of a large ``Y``).

    Returns
    -------
    Z : ndarray, same shape as ``Y`` (float32 stays float32, else float64)
    constant : ndarray of bool, only with ``return_constant=True``
        Shape of ``Y`` with ``axis`` removed.
    """
    Y = np.asarray(Y)
    dtype = Y.dtype if Y.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    mean = Y.mean(axis=axis, keepdims=True, dtype=np.float64)
    if not copy and Y.dtype == dtype:
        Z = Y
        Z -= mean.astype(dtype)
    else:
        Z = np.subtract(Y, mean.astype(dtype), dtype=dtype)
    std = np.sqrt(np.square(Z).mean(axis=axis, keepdims=True, dtype=np.float64))
    # A float32 column of a constant value has a tiny non-zero spread from rounding;
    # treat a spread below a relative 1e-6 of its mean magnitude as constant.
    constant = (std <= 1e-6 * np.abs(mean)) | (std == 0) | ~np.isfinite(std)
    Z /= np.where(constant, 1.0, std).astype(dtype)
    Z *= ~constant
    constant = np.squeeze(constant, axis=axis)
    n_const = int(np.count_nonzero(constant))
    if n_const:
        first = np.flatnonzero(constant)[:5].tolist()
        warnings.warn(
            f"{n_const} of {constant.size} columns have no variance along axis {axis} "
            f"(first indices {first}); they were set to 0.",
            ConstantColumnsWarning,
            stacklevel=2,
        )
    return (Z, constant) if return_constant else Z


def make_delays(X, delays: Sequence[int] = (0,)) -> np.ndarray:
    """Finite-impulse-response expansion: one shifted copy of every regressor per delay.

    A positive delay ``d`` shifts a time course down by ``d`` volumes (the response at
    volume ``t`` uses the regressor at ``t - d``), filling the first ``d`` volumes with
    zeros; a negative delay shifts up.

    Parameters
    ----------
    X : array of shape (n_volumes, n_features)
    delays : sequence of int, default (0,)
        Delays in volumes.

    Returns
    -------
    X_delayed : ndarray of shape (n_volumes, n_features * n_delays)
        Delay-major: columns ``[i * n_features:(i + 1) * n_features]`` hold every
        regressor at ``delays[i]`` (the order of himalaya's ``Delayer``).
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ShapeError(f"'X' must be an array of shape (n_volumes, n_features); shape {X.shape} was provided.")
    given = delays
    try:
        delays = [int(d) for d in given]
        ok = bool(delays) and all(float(d) == float(g) for d, g in zip(delays, given))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"'delays' must be a non-empty sequence of integers; {given!r} was provided.")
    n, p = X.shape
    if any(abs(d) >= n for d in delays):
        raise ConfigError(f"'delays' must be shorter than the run ({n} volumes); {delays!r} was provided.")
    out = np.zeros((n, p * len(delays)), dtype=X.dtype)
    for i, d in enumerate(delays):
        block = out[:, i * p:(i + 1) * p]
        if d > 0:
            block[d:] = X[:-d]
        elif d < 0:
            block[:d] = X[-d:]
        else:
            block[:] = X
    return out
