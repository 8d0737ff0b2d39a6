"""Per-subject GLM statistics of the atoms and their fixed-effects group map.

The paper's maps are sparse coefficients, which have no standard error. To threshold
an atom's map with a known false-positive rate we also fit, per subject, ordinary
least squares with all atoms together (so a voxel driven by one atom does not light
up the atoms correlated with it), turn each coefficient into a z value, and combine
subjects with Stouffer's method (a fixed-effects group map: it asks whether the atom
drives the voxel in these subjects, which is what a map over 2-5 simulated or real
subjects can support; with many subjects use a random-effects test,
:func:`napari_brainorg.encoding.stats.group_one_sample`).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ..errors import ShapeError


def ols_zmaps(X: np.ndarray, Y: np.ndarray, *, n_nuisance: int = 0) -> np.ndarray:
    """z value of each regressor's OLS coefficient in each voxel.

    Parameters
    ----------
    X : ndarray of shape (n_volumes, n_regressors)
        Regressors (the atoms), already filtered like ``Y``; centred inside.
    Y : ndarray of shape (n_volumes, n_voxels)
        fMRI, already filtered (high-pass); centred inside.
    n_nuisance : int
        Degrees of freedom already spent on the data (the drift regressors that the
        high-pass removed), subtracted from the residual degrees of freedom.

    Returns
    -------
    z : ndarray of shape (n_regressors, n_voxels)
        t statistics converted to z through their p-values (two-sided sign kept).
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ShapeError(
            f"X must be (n_volumes, n_regressors) and Y (n_volumes, n_voxels) with the same "
            f"n_volumes; got X {X.shape} and Y {Y.shape}."
        )
    n, p = X.shape
    dof = n - p - 1 - int(n_nuisance)
    if dof < 1:
        raise ShapeError(f"{n} volumes cannot fit {p} regressors and {n_nuisance} nuisance terms.")
    Xc = X - X.mean(0)
    pinv = np.linalg.pinv(Xc)                       # (p, n)
    cov_unscaled = np.diag(pinv @ pinv.T)           # (p,)
    z = np.empty((p, Y.shape[1]), dtype=np.float32)
    chunk = max(1, int(2e7 // max(n, 1)))
    for start in range(0, Y.shape[1], chunk):
        Yc = np.asarray(Y[:, start:start + chunk], dtype=np.float64)
        Yc = Yc - Yc.mean(0)
        beta = pinv @ Yc                             # (p, c)
        resid = Yc - Xc @ beta
        sigma2 = (resid ** 2).sum(0) / dof           # (c,)
        se = np.sqrt(np.outer(cov_unscaled, sigma2))
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(se > 0, beta / se, 0.0)
        z[:, start:start + chunk] = t_to_z(t, dof)
    return z


def t_to_z(t: np.ndarray, dof: float) -> np.ndarray:
    """Convert t values to z values with the same tail probability (sign kept)."""
    t = np.asarray(t, dtype=np.float64)
    # the log survival function keeps precision far in the tail
    logp = stats.t.logsf(np.abs(t), dof)
    z = -stats.norm.ppf(np.exp(logp))
    big = ~np.isfinite(z)
    if big.any():
        z[big] = np.sqrt(-2 * logp[big] - np.log(-4 * np.pi * logp[big]))  # asymptotic form
    return np.sign(t) * z


def stouffer(z_maps: np.ndarray) -> np.ndarray:
    """Fixed-effects combination of per-subject z maps.

    Parameters
    ----------
    z_maps : ndarray of shape (n_subjects, ...)

    Returns
    -------
    ndarray of shape (...)
        ``sum(z) / sqrt(n_subjects)``: standard normal under the null in every subject.
    """
    z_maps = np.asarray(z_maps, dtype=np.float64)
    return (z_maps.sum(0) / np.sqrt(z_maps.shape[0])).astype(np.float32)
