"""Per-subject GLM statistics of the atoms, valid under autocorrelated noise, and group maps.

The paper's maps are sparse coefficients, which have no standard error. To threshold
an atom's map with a known false-positive rate we fit, per subject, a GLM with all
atoms together (so a voxel driven by one atom does not light up the atoms correlated
with it) and turn each coefficient into a z value.

fMRI noise is autocorrelated, with an AR structure that differs between tissues; an
OLS z ignores it and is far too liberal (under AR(1) rho = 0.4, 17 % of null voxels pass
|z| > 1.96 instead of 5 %). :func:`gls_atom_maps` (the default) estimates each voxel's
AR(1) coefficient *without the atoms*, from the fMRI after removing only the drifts
and the confounds, corrects it for the bias of that projection (Worsley et al. 2002),
and refits by generalised least squares (prewhitening, voxels binned by their AR
coefficient as nilearn does). Estimating the noise from the residuals of the atoms
does not work here: 64 smooth atoms absorb the noise's autocorrelation (residual lag-1
autocorrelation 0.002 for a true 0.4).

:func:`ols_zmaps` keeps the plain OLS z (exact under white noise). Group maps come from
:func:`napari_brainorg.encoding.inference.group_effects` (random effects from 6
subjects, fixed effects below); :func:`stouffer` is the fixed-effects combination.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import stats

from typing import NamedTuple


from .._backend import blas_limit
from .._progress import check_cancel
from ..errors import ConfigError, ShapeError


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


def _t_logsf_far(a: np.ndarray, dof: float) -> np.ndarray:
    """log P(T > a) for a Student t far in its tail, where ``stats.t.logsf`` underflows to
    -inf (below 1e-308; e.g. t = 38 at 10⁵ dof, t = 60 at 1,350): the series of the
    incomplete beta function in log space, ``P(T > t) = I_x(ν/2, 1/2) / 2`` with
    ``x = ν / (ν + t²)`` and ``I_x(a, b) = x^a (1-x)^b / (a B(a, b)) Σ_n c_n``,
    ``c_0 = 1``, ``c_{n+1} = c_n x (a + b + n) / (a + 1 + n)``."""
    from scipy import special

    A, B = dof / 2.0, 0.5
    x = dof / (dof + a * a)
    total = np.ones_like(x)
    term = np.ones_like(x)
    for n in range(100_000):  # ratio about x: a few dozen terms unless t² << ν
        term = term * x * (A + B + n) / (A + 1 + n)
        total += term
        if np.all(term <= 1e-17 * total):
            break
    return (np.log(0.5) + A * np.log(x) + B * np.log1p(-x) - np.log(A) - special.betaln(A, B) + np.log(total))


def _z_of_logsf(logp: np.ndarray) -> np.ndarray:
    """The z with ``log P(Z > z) = logp`` where ``exp(logp)`` underflows: the asymptotic
    start ``sqrt(-2 logp - log(-4π logp))`` refined by Newton steps on ``log_ndtr(-z)``."""
    from scipy import special

    z = np.sqrt(-2 * logp - np.log(-4 * np.pi * logp))
    for _ in range(6):
        lsf = special.log_ndtr(-z)
        # d/dz log P(Z > z) = -φ(z) / P(Z > z)
        z = z + (lsf - logp) / np.exp(stats.norm.logpdf(z) - lsf)
    return z


def _t_to_z_exact(a: np.ndarray, dof: float) -> np.ndarray:
    """z of ``|t|`` values ``a`` (>= 0) with the same upper-tail probability."""
    # the log survival function keeps precision far in the tail
    logp = stats.t.logsf(a, dof)
    under = np.isneginf(logp)
    if under.any():
        logp[under] = _t_logsf_far(a[under], dof)
    # below e^-700 the tail probability is a subnormal float (few significant bits) or 0
    far = logp < -700.0
    z = np.empty_like(logp)
    z[~far] = -stats.norm.ppf(np.exp(logp[~far]))
    if far.any():
        z[far] = _z_of_logsf(logp[far])
    return z


#: t→z by a table: |t| on a grid of this step up to _T_TABLE_MAX (cubic Hermite between the
#: nodes, with the exact slope f_t(t) / φ(z): error below 1e-10 for dof >= _T_TABLE_MIN_DOF,
#: tests/encoding/test_glm.py), used for arrays of at least _T_TABLE_MIN_SIZE values
_T_TABLE_STEP = 1.0 / 128
_T_TABLE_MAX = 40.0
_T_TABLE_MIN_DOF = 20.0
_T_TABLE_MIN_SIZE = 50_000


@functools.lru_cache(maxsize=16)
def _t_to_z_table(dof: float) -> tuple[np.ndarray, np.ndarray]:
    """z and dz/dt at the grid's nodes, for ``dof``."""
    grid = np.arange(0.0, _T_TABLE_MAX + _T_TABLE_STEP / 2, _T_TABLE_STEP)
    z = _t_to_z_exact(grid, dof)
    slope = np.exp(stats.t.logpdf(grid, dof) - stats.norm.logpdf(z))
    return z, slope


def t_to_z(t: np.ndarray, dof: float) -> np.ndarray:
    """Convert t values to z values with the same tail probability (sign kept).

    Large arrays (the maps: atoms x voxels per subject) read ``|t| <= 40`` from a table
    of the exact conversion for this ``dof`` (cubic Hermite interpolation with the exact
    slopes, error below 1e-10; 3 to 5 times faster than the incomplete beta function per
    value); the rest, small arrays and small ``dof`` are converted exactly, far tails included.
    """
    t = np.asarray(t, dtype=np.float64)
    a = np.abs(t)
    if a.size < _T_TABLE_MIN_SIZE or not np.isfinite(dof) or dof < _T_TABLE_MIN_DOF:
        return np.sign(t) * _t_to_z_exact(a, dof)
    zs, slopes = _t_to_z_table(float(dof))
    inside = a <= _T_TABLE_MAX
    z = np.empty_like(a)
    x = a[inside] / _T_TABLE_STEP
    i = np.minimum(x.astype(np.intp), len(zs) - 2)
    u = x - i
    u2, u3 = u * u, u * u * u
    h00, h10, h01, h11 = 2 * u3 - 3 * u2 + 1, u3 - 2 * u2 + u, -2 * u3 + 3 * u2, u3 - u2
    z[inside] = (h00 * zs[i] + h01 * zs[i + 1]
                 + _T_TABLE_STEP * (h10 * slopes[i] + h11 * slopes[i + 1]))
    if not inside.all():
        z[~inside] = _t_to_z_exact(a[~inside], dof)
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


class AtomMaps(NamedTuple):
    """Per-subject atom maps from :func:`gls_atom_maps`.

    Attributes
    ----------
    effect : ndarray of shape (k, n_voxels), float32
        Coefficients in standard units: the change of the voxel (in SD of its
        drift-and-confound-free time series) per SD of the atom (after the same
        nuisance removal); comparable across subjects, for random-effects group maps.
    z : ndarray of shape (k, n_voxels), float32
        GLS t statistics converted to z (same two-sided tail probability).
    rho : ndarray of shape (n_voxels,), float32
        The AR(1) coefficient used for each voxel (bias-corrected, clipped to
        ``[0, max_rho]``; 0 for the ``"ols"`` noise model).
    dof : int
        Residual degrees of freedom (volumes minus the rank of atoms + nuisance).
    noise_model : str
    """

    effect: np.ndarray
    z: np.ndarray
    rho: np.ndarray
    dof: int
    noise_model: str


NOISE_MODELS = ("ar1", "ols")


def _orthonormal(N: np.ndarray) -> np.ndarray:
    if N.shape[1] == 0:
        return N
    q, r = np.linalg.qr(N)
    keep = np.abs(np.diag(r)) > 1e-10 * max(np.abs(np.diag(r)).max(), 1e-300)
    return q[:, keep]


def _ar1_bias_table(Q: np.ndarray, n: int, grid: np.ndarray) -> np.ndarray:
    """Expected lag-1 autocorrelation of AR(1) noise after projecting out ``Q``.

    ``E[e' A e] / E[e' e]`` with ``e = M eps``, ``M = I - Q Q'``, ``A`` the symmetric
    lag-1 operator, ``Cov(eps)_ij = rho^|i-j|`` (the ratio of expectations, Worsley et
    al. 2002, NeuroImage 15:1).
    """
    from scipy.signal import lfilter

    out = np.empty(len(grid))
    # trace identities for M V M with M = I - Q Q' (Q orthonormal): no n x n products;
    # V Q with V_ij = rho^|i-j| is a causal plus an anti-causal AR(1) filter of Q, minus Q
    QT = np.ascontiguousarray(Q.T)  # the filters run along contiguous rows
    QT_reversed = np.ascontiguousarray(QT[:, ::-1])
    for i, rho in enumerate(grid):
        if rho == 0:
            VQ = Q.copy()
        else:
            VQ = (lfilter([1.0], [1.0, -rho], QT, axis=1) + lfilter([1.0], [1.0, -rho], QT_reversed, axis=1)[:, ::-1]
                  - QT).T
        B = Q.T @ VQ
        total = n - np.trace(B)
        lag1 = ((n - 1) * rho - (Q[1:] * VQ[:-1]).sum() - (VQ[1:] * Q[:-1]).sum()
                + ((Q[1:] @ B) * Q[:-1]).sum())
        out[i] = lag1 / total
    return out


#: bias tables by nuisance: every subject of a study shares its drifts and confounds
_BIAS_TABLES: dict[str, np.ndarray] = {}


def _bias_table_of(Q: np.ndarray, n: int, grid: np.ndarray) -> np.ndarray:
    """:func:`_ar1_bias_table`, computed once per nuisance basis (it depends on nothing else)."""
    import hashlib

    key = hashlib.sha256(np.ascontiguousarray(Q).tobytes() + np.ascontiguousarray(grid).tobytes()
                         + str((Q.shape, n)).encode()).hexdigest()
    table = _BIAS_TABLES.get(key)
    if table is None:
        if len(_BIAS_TABLES) >= 32:
            _BIAS_TABLES.pop(next(iter(_BIAS_TABLES)))
        table = _BIAS_TABLES[key] = _ar1_bias_table(Q, n, grid)
    return table.copy()


def ar1_coefficients(Y, nuisance=None, *, bias_correct: bool = True, max_rho: float = 0.95) -> np.ndarray:
    """Each voxel's AR(1) coefficient, estimated without the atoms.

    Parameters
    ----------
    Y : array of shape (n_volumes, n_voxels)
        fMRI (unfiltered or filtered alike: the nuisance is projected out).
    nuisance : array of shape (n_volumes, n_nuisance), optional
        Drift basis and confounds (e.g. a constant, trends, cosines, word rate); the
        lag-1 autocorrelation is taken of ``Y``'s residual on them.
    bias_correct : bool, default True
        Map the residual autocorrelation back to the AR coefficient that produces it in
        expectation after this projection (projection lowers it: a 128 s high-pass
        takes about 0.04 off rho = 0.6 at 300 volumes).
    max_rho : float, default 0.95

    Returns
    -------
    rho : ndarray of shape (n_voxels,)
    """
    Y = np.asarray(Y)
    n = Y.shape[0]
    N = np.ones((n, 1)) if nuisance is None else np.column_stack([np.ones(n), np.asarray(nuisance, np.float64)])
    Q = _orthonormal(N)
    rho = np.empty(Y.shape[1])
    chunk = max(1, int(2e7 // max(n, 1)))
    for start in range(0, Y.shape[1], chunk):
        R = np.asarray(Y[:, start:start + chunk], dtype=np.float64)
        R = R - Q @ (Q.T @ R)
        den = (R * R).sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            rho[start:start + chunk] = np.where(den > 0, (R[1:] * R[:-1]).sum(0) / den, 0.0)
    if bias_correct:
        grid = np.linspace(-0.5, 0.99, 76)
        expected = _bias_table_of(Q, n, grid)
        order = np.argsort(expected)
        rho = np.interp(rho, expected[order], grid[order])
    return np.clip(rho, 0.0, max_rho)


class _LagProducts:
    """The inner products a Prais–Winsten-whitened least-squares fit needs, for every AR(1)
    coefficient at once.

    With ``w_0 = sqrt(1 - rho^2) a_0`` and ``w_t = a_t - rho a_{t-1}``, the whitened inner
    product of two series is ``(1 + rho^2) a'b - rho (a_1:'b_:-1 + a_:-1'b_1:) -
    rho^2 (a_0 b_0 + a_n-1 b_n-1)``: the design's products with every voxel are made once
    (three matrix products over the volumes), and each bin of voxels sharing a rho
    combines them, instead of whitening its voxels' series and refitting them.
    """

    def __init__(self, design: np.ndarray, Y, chunk_values: float = 2e7):
        n, p = design.shape
        v = Y.shape[1]
        self.design = design
        self.gram = (design.T @ design, design[1:].T @ design[:-1])
        self.edges = (design[0], design[-1])
        self.dy = np.empty((p, v))
        self.dy_lag = np.empty((p, v))  # d_1:' y_:-1 + d_:-1' y_1:
        self.yy = np.empty(v)
        self.yy_lag = np.empty(v)  # 2 y_1:' y_:-1
        self.y_edges = np.empty((2, v))
        # d_1:'y_:-1 + d_:-1'y_1: = (S d)'y with (S d)_t = d_t+1 + d_t-1 (zero beyond the
        # ends): one product with [d, S d] gives both, a third fewer operations than three
        lagged = np.zeros_like(design)
        lagged[:-1] += design[1:]
        lagged[1:] += design[:-1]
        both = np.ascontiguousarray(np.concatenate([design, lagged], axis=1).T)
        chunk = max(1, int(chunk_values // max(n, 1)))
        for start in range(0, v, chunk):
            c = slice(start, start + chunk)
            Yc = np.asarray(Y[:, c], dtype=np.float64)
            prod = both @ Yc
            self.dy[:, c] = prod[:p]
            self.dy_lag[:, c] = prod[p:]
            self.yy[c] = np.einsum("ij,ij->j", Yc, Yc)
            self.yy_lag[c] = 2.0 * np.einsum("ij,ij->j", Yc[1:], Yc[:-1])
            self.y_edges[:, c] = Yc[[0, -1]]

    def whitened(self, rho: float, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The whitened design's Gram matrix, its products with the voxels ``cols`` and
        those voxels' whitened sums of squares."""
        g0, g1 = self.gram
        d0, d1 = self.edges
        y0, y1 = self.y_edges[0, cols], self.y_edges[1, cols]
        r2 = rho * rho
        gram = (1 + r2) * g0 - rho * (g1 + g1.T) - r2 * (np.outer(d0, d0) + np.outer(d1, d1))
        dy = ((1 + r2) * self.dy[:, cols] - rho * self.dy_lag[:, cols]
              - r2 * (d0[:, None] * y0[None] + d1[:, None] * y1[None]))
        yy = (1 + r2) * self.yy[cols] - rho * self.yy_lag[cols] - r2 * (y0 * y0 + y1 * y1)
        return gram, dy, yy


def gls_atom_maps(X, Y, *, nuisance=None, confounds=None, noise_model: str = "ar1", bin_width: float = 0.02,
                  max_rho: float = 0.95, rho=None, cancel=None) -> AtomMaps:
    """Per-subject atom maps whose z is valid under AR(1) noise (GLS, noise without the atoms).

    Parameters
    ----------
    X : array of shape (n_volumes, k)
        The atoms' time courses (unfiltered: the drift basis goes into the model).
    Y : array of shape (n_volumes, n_voxels)
        One subject's fMRI (unfiltered).
    nuisance : array of shape (n_volumes, n_nuisance), optional
        Regressors of no interest fitted with the atoms: the drift basis
        (:func:`~napari_brainorg.encoding.preprocessing.drift_basis`) and confounds
        (word rate, word length/frequency, pauses). A constant is always included.
    confounds : array of shape (n_volumes, n_confounds), optional
        More nuisance regressors (e.g. the story's nuisance table), added to ``nuisance``.
    noise_model : {"ar1", "ols"}, default "ar1"
        ``"ar1"``: each voxel's AR(1) coefficient from :func:`ar1_coefficients` (the
        fMRI minus the nuisance only; bias-corrected), voxels binned by it
        (``bin_width``) and each bin fitted by prewhitened least squares.
        ``"ols"``: white noise assumed (only valid when it is).
    bin_width : float, default 0.02
    max_rho : float, default 0.95
    rho : array of shape (n_voxels,), optional
        The voxels' AR(1) coefficients as :func:`ar1_coefficients` gives them for this
        ``Y``, ``nuisance`` and ``confounds`` (they do not depend on the atoms: one
        subject's maps for several models share them); computed when not given.
    cancel : object with ``is_set()``, optional
        Checked between the stages and the AR(1) bins (``CancelledError`` once set).

    Returns
    -------
    AtomMaps
    """
    check = ("ar1", "ols")
    if noise_model not in check:
        raise ConfigError(f"'noise_model' must be one of {list(check)}; {noise_model!r} was provided.")
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ShapeError(
            f"X must be (n_volumes, k) and Y (n_volumes, n_voxels) with the same n_volumes; "
            f"got X {X.shape} and Y {Y.shape}."
        )
    n, k = X.shape
    extra = [np.asarray(a, np.float64).reshape(n, -1) for a in (nuisance, confounds) if a is not None]
    nuis = np.column_stack([np.ones((n, 1))] + extra)
    Q = _orthonormal(nuis)
    design = np.column_stack([X, Q])
    rank = np.linalg.matrix_rank(design.T @ design, hermitian=True)
    dof = n - rank
    if dof < 1:
        raise ShapeError(f"{n} volumes cannot fit {k} atoms and {Q.shape[1]} nuisance regressors.")
    # standard units: SD of the nuisance-free atom and voxel
    Xr = X - Q @ (Q.T @ X)
    sd_x = Xr.std(0)
    if noise_model == "ar1":
        check_cancel(cancel)
        if rho is None:
            rho = ar1_coefficients(Y, nuis[:, 1:] if nuis.shape[1] > 1 else None, max_rho=max_rho)
        elif np.shape(rho) != (Y.shape[1],):
            raise ShapeError(f"'rho' must have one value per voxel ({Y.shape[1]}); shape {np.shape(rho)} was provided.")
        rho_used = np.round(rho / bin_width) * bin_width
    else:
        rho_used = np.zeros(Y.shape[1])
    check_cancel(cancel)
    lags = _LagProducts(design, Y)
    effect = np.empty((k, Y.shape[1]), dtype=np.float32)
    z = np.empty((k, Y.shape[1]), dtype=np.float32)
    # the SD of each voxel's nuisance-free series (Q holds the constant: its residual has mean 0)
    q_y = lags.dy[k:]
    sd_y = np.sqrt(np.maximum(lags.yy - (q_y * q_y).sum(0), 0.0) / n)
    for value in np.unique(rho_used):
        check_cancel(cancel)
        cols = np.flatnonzero(rho_used == value)
        gram, dy, yy = lags.whitened(float(value), cols)
        # normal equations (small, p x p) rather than an SVD per bin
        with blas_limit(1):  # small matrices: threads only cost here
            gram_inv = np.linalg.pinv(gram, hermitian=True)
        beta = gram_inv @ dy
        sigma2 = np.maximum(yy - (beta * dy).sum(0), 0.0) / dof  # residual sum of squares of the whitened fit
        se = np.sqrt(np.outer(np.diag(gram_inv)[:k], sigma2))
        sd = sd_y[cols]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(se > 0, beta[:k] / se, 0.0)
            eff = np.where(sd[None] > 0, beta[:k] * sd_x[:, None] / sd[None], 0.0)
        z[:, cols] = t_to_z(t, dof)
        effect[:, cols] = eff
    return AtomMaps(effect, z, rho_used.astype(np.float32), int(dof), noise_model)
