"""Every fold's projections of the fMRI from one pass over it (numpy, few regressors).

The folds of a nested cross-validation cut the volumes into a few dozen segments (the
outer and inner test blocks and the gaps around them). For a chunk of voxels, the sums
over each segment of ``x y'`` (p × c), ``y`` and ``y²`` are made once, as running sums
over the segments, so that any run of segments' sums is one subtraction
(:class:`_ChunkStats`). A factor's projections (:mod:`._ridge_spectral`) follow from
them: with ``X̃ = (X - μ) / d`` standardised on the training volumes, ``X̃ = U S V'``,
``W = (X̃'U)' diag(1 / d)`` (r × p) and ``m`` a voxel's training mean::

    u = U'(y_train - m)  = S⁻² W (X_train'y - n_train μ m)
    z = B'(y_test - m)   = W (X_test'y - μ 1'y_test - (X_test - μ)'1 m)
    ||y_test - m||²      = Σ y_test² - 2 m Σ y_test + n_test m²

That is ``p × r`` operations per voxel and factor instead of ``(n_train + n_test) × r``
for the products with ``U`` and ``B``, and the fMRI is read once for the 25 factors of a
5 × 5 nested CV. It is used where the operation count says it pays
(:func:`segment_plan`): a few dozen regressors (atoms, nuisance regressors), not
thousands of ANs, whose ridge runs in the kernel form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scores import FLAT_RTOL


@dataclass
class _FactorSegments:
    """One factor's runs of segments and the matrices that turn sums into projections."""

    train: list                 # (i, j): segments i..j-1 of the plan are training volumes
    n_train: int
    mu: np.ndarray              # (p,) training mean of the regressors
    W: np.ndarray               # (r, p) (X̃'U)' diag(1 / d)
    Wu: np.ndarray              # (r, p) S⁻² W, zero rows for components at zero
    test: list | None = None    # (i, j) runs of the test volumes
    n_test: int = 0
    xc_test: np.ndarray | None = None   # (p,) Σ_test (x - μ)


@dataclass
class _SegmentPlan:
    """The segments' boundaries and the regressors' running sums over them."""

    bounds: np.ndarray          # (K + 1,) volume boundaries, 0 ... n_volumes
    X: np.ndarray               # (n_volumes, p) float64
    x_prefix: np.ndarray        # (K + 1, p) Σ x over segments 0..k-1

    def runs(self, runs) -> list[tuple[int, int]]:
        """Volume runs ``(start, stop)`` as segment runs ``(i, j)``."""
        return [(int(np.searchsorted(self.bounds, a)), int(np.searchsorted(self.bounds, b))) for a, b in runs]

    def sum_x(self, runs) -> np.ndarray:
        return sum(self.x_prefix[j] - self.x_prefix[i] for i, j in runs)


@dataclass
class _ChunkStats:
    """Running sums over the segments for one chunk of voxels (float64)."""

    xy: np.ndarray              # (K + 1, p, c)
    y: np.ndarray               # (K + 1, c)
    yy: np.ndarray              # (K + 1, c)


def _runs(idx: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of consecutive sorted indices: (first, last + 1, position of the first in idx)."""
    idx = np.asarray(idx)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.concatenate([[0], breaks]).astype(int)
    stops = np.concatenate([breaks, [idx.size]]).astype(int)
    return [(int(idx[a]), int(idx[b - 1]) + 1, int(a)) for a, b in zip(starts, stops)]


def _volume_runs(idx: np.ndarray) -> list[tuple[int, int]] | None:
    """Runs of consecutive volumes ``(start, stop)`` of sorted unique ``idx``; None otherwise."""
    idx = np.asarray(idx)
    if idx.size == 0 or np.any(np.diff(idx) <= 0):
        return None
    return [(a, b) for a, b, _ in _runs(idx)]


def segment_plan(factors: list, X: np.ndarray) -> _SegmentPlan | None:
    """The segment plan of ``factors`` (``_Factor`` of :mod:`._ridge_solver`, numpy) on
    the regressors ``X`` (n_volumes, p), each factor given its :class:`_FactorSegments`
    (``f.segments``); None (every factor keeps its own projections) when a factor's
    volumes are not sorted runs, when a factor has more regressors than training volumes,
    or when the sums would cost more operations than the projections they replace."""
    if not factors or any(f.XtU64 is None for f in factors):
        return None
    n_volumes, p = X.shape
    train_runs, test_runs = [], []
    for f in factors:
        tr = _volume_runs(f.train_idx)
        te = None if f.test_idx is None else _volume_runs(f.test_idx)
        if tr is None or (f.test_idx is not None and te is None) or p > len(f.train_idx):
            return None
        train_runs.append(tr)
        test_runs.append(te)
    bounds = np.unique(np.concatenate([[0, n_volumes]] + [np.ravel(r) for r in train_runs + test_runs if r]))
    # operations per voxel: the factors' own products with U and B, against one pass of
    # x y' over the volumes, the running sums and two (r × p) products per factor
    own = sum((len(f.train_idx) + (0 if f.test_idx is None else len(f.test_idx))) * f.XtU64.shape[1]
              for f in factors)
    via = n_volumes * p + len(bounds) * p + sum(2 * f.XtU64.shape[1] * p for f in factors)
    if 2 * via > own:
        return None
    X64 = np.asarray(X, dtype=np.float64)
    x_prefix = np.zeros((len(bounds), p))
    np.cumsum(np.add.reduceat(X64, bounds[:-1], axis=0), axis=0, out=x_prefix[1:])
    plan = _SegmentPlan(bounds=bounds, X=X64, x_prefix=x_prefix)
    for f, tr, te in zip(factors, train_runs, test_runs):
        mu = np.asarray(f.x_mean, np.float64)
        W = (f.XtU64 / np.asarray(f.x_scale, np.float64)[:, None]).T
        eig = np.asarray(f.eig64, np.float64)
        inv = np.where(eig > 0, 1.0 / np.where(eig > 0, eig, 1.0), 0.0)
        fs = _FactorSegments(train=plan.runs(tr), n_train=len(f.train_idx), mu=mu, W=W, Wu=inv[:, None] * W)
        if te is not None:
            fs.test, fs.n_test = plan.runs(te), len(f.test_idx)
            fs.xc_test = plan.sum_x(fs.test) - fs.n_test * mu
        f.segments = fs
    return plan


def chunk_stats(plan: _SegmentPlan, Yc: np.ndarray) -> _ChunkStats:
    """The running sums of one chunk of voxels ``Yc`` (n_volumes, c), in float64."""
    Y64 = np.asarray(Yc, dtype=np.float64)
    K = len(plan.bounds) - 1
    p, c = plan.X.shape[1], Y64.shape[1]
    xy = np.empty((K + 1, p, c))
    y = np.empty((K + 1, c))
    yy = np.empty((K + 1, c))
    xy[0], y[0], yy[0] = 0.0, 0.0, 0.0
    # segment by segment, each sum added to the previous one (contiguous rows: a cumsum
    # along the first axis walks the array with strides and is several times slower)
    for k in range(K):
        a, b = plan.bounds[k], plan.bounds[k + 1]
        block = Y64[a:b]
        np.matmul(plan.X[a:b].T, block, out=xy[k + 1])
        xy[k + 1] += xy[k]
        np.add(y[k], block.sum(0), out=y[k + 1])
        np.add(yy[k], np.einsum("nc,nc->c", block, block), out=yy[k + 1])
    return _ChunkStats(xy=xy, y=y, yy=yy)


def _run_sum(prefix: np.ndarray, runs) -> np.ndarray:
    i, j = runs[0]
    out = prefix[j] - prefix[i]
    for i, j in runs[1:]:
        out += prefix[j]
        out -= prefix[i]
    return out


def train_projection(fs: _FactorSegments, st: _ChunkStats) -> tuple[np.ndarray, np.ndarray]:
    """Training mean ``m`` (c,) and ``u = U'(y_train - m)`` (r, c) of every voxel."""
    m = _run_sum(st.y, fs.train) / fs.n_train
    xy = _run_sum(st.xy, fs.train)
    xy -= fs.n_train * fs.mu[:, None] * m[None, :]
    return m, fs.Wu @ xy


@dataclass
class _TestMoments:
    """A factor's test volumes, per voxel: ``z = B'(y - m)``, ``Σ (y - m)²``, the sum of
    squares about their own mean and ``Σ (y - m)``."""

    z: np.ndarray               # (r, c)
    yy: np.ndarray              # (c,)
    ss_tot: np.ndarray          # (c,)
    y_sum: np.ndarray           # (c,)


def test_moments(fs: _FactorSegments, st: _ChunkStats, m: np.ndarray) -> _TestMoments:
    """The test volumes' moments of every voxel, about the training mean ``m``."""
    ys = _run_sum(st.y, fs.test)
    yy = _run_sum(st.yy, fs.test)
    xy = _run_sum(st.xy, fs.test)
    xy -= fs.mu[:, None] * ys[None, :]
    xy -= fs.xc_test[:, None] * m[None, :]
    n = fs.n_test
    ss_tot = yy - ys * ys / n
    # a voxel constant on the test volumes has no variance to explain: at rounding level
    # of its sum of squares, it is flat (scored 0, as the explicit scores do)
    ss_tot[ss_tot <= FLAT_RTOL * yy] = 0.0
    return _TestMoments(z=fs.W @ xy, yy=yy - 2.0 * m * ys + n * m * m, ss_tot=ss_tot, y_sum=ys - n * m)
