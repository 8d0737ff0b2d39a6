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
of eigenvalues; see :mod:`._ridge_spectral`), several times fewer
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

The functions and the estimator live here; the pieces they are made of beside them:
the folds in :mod:`.folds`, the factorisation and the choice of each voxel's α in
:mod:`._ridge_solver` and :mod:`._ridge_spectral`, the input checks and the chunks
of voxels in :mod:`._ridge_chunks`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import NotFittedError as _SkNotFittedError

from .._backend import get_backend  # noqa: F401  (the tests reach it through this module)
from .._progress import report
from ..errors import FMRIInputError, NotFittedError, ShapeError, check_choice
from ._ridge_chunks import (
    _as_float_2d,
    _check_alphas,
    _check_XY,
    _chunk_size,
    _chunk_threads,
    _load_chunk,
    _map_chunks,
    _resolve,
    _use_spectral,
)
from ._ridge_solver import _factorise, _index, _refit, _select_alphas, _shrinkage, _small_lapack
from ._ridge_segments import chunk_stats, segment_plan, train_projection
from ._ridge_spectral import _project, held_out_scores
from .folds import _check_folds, _check_int, _folds_of, contiguous_folds
from .preprocessing import ConstantColumnsWarning, highpass, make_delays
from .scores import correlation_columns, r2_score_columns

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
SOLVERS = ("auto", "gram", "svd", "eigh")


class EncoderNotFittedError(NotFittedError, _SkNotFittedError):
    """``predict`` before ``fit`` (both this package's and scikit-learn's NotFittedError)."""


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
    solver : {"auto", "gram", "svd", "eigh"}, default "auto"
        ``"gram"``: eigendecomposition of the regressors' Gram ``X'X`` (n_features
        squared); ``"svd"`` of the regressors (the same factors, slower); ``"eigh"`` of
        the kernel ``X X'`` (cheaper when n_features > n_volumes); ``"auto"``: ``"gram"``
        or ``"eigh"`` by shape.
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

    # every factor's projections from the chunk's sums over the folds' segments, where that pays
    seg = segment_plan([f for inner, outer, _ in plans for f in (*inner, outer)], X) if spectral else None
    n_folds = len(folds)
    out_dtype = np.float32 if bk.dtype == "float32" else np.float64
    r2_folds = np.zeros((n_folds, n_voxels), dtype=out_dtype)
    r_folds = np.zeros_like(r2_folds)
    alpha_idx = np.zeros((n_folds, n_voxels), dtype=np.intp)
    step = _chunk_size(bk, chunk_size, len(alphas_np), max_test, n_voxels, spectral)

    def one_chunk(start: int):
        Yc = _load_chunk(bk, Y, start, step, spectral)
        st = None if seg is None else chunk_stats(seg, Yc)
        width = Yc.shape[1]
        r2 = np.zeros((n_folds, width), dtype=out_dtype)
        r = np.zeros_like(r2)
        chosen = np.zeros((n_folds, width), dtype=np.intp)
        for o, (inner, outer, G_table) in enumerate(plans):
            if inner:
                best, _ = _select_alphas(bk, inner, Yc, alphas_b, alpha_score, st)
            elif fixed_idx is not None:
                best = _index(bk, np.ascontiguousarray(fixed_idx[start:start + step]))
            else:
                best = _index(bk, np.zeros(width, dtype=np.intp))
            if st is not None:
                r2[o], r[o] = held_out_scores(outer.spectral, outer.segments, st, best)
                chosen[o] = best
                continue
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
    seg = segment_plan([*factors, full], X) if spectral else None

    out_dtype = np.float32 if bk.dtype == "float32" else np.float64
    coef = np.zeros((X.shape[1], n_voxels), dtype=out_dtype)
    intercept = np.zeros(n_voxels, dtype=out_dtype)
    cv_scores = np.zeros((len(alphas_np), n_voxels), dtype=out_dtype)
    alpha_idx = np.zeros(n_voxels, dtype=np.intp)
    step = _chunk_size(bk, chunk_size, len(alphas_np), max(len(te) for _, te in folds), n_voxels, spectral)

    def one_chunk(start: int):
        Yc = _load_chunk(bk, Y, start, step, spectral)
        st = None if seg is None else chunk_stats(seg, Yc)
        mean = None
        if len(alphas_np) > 1:
            best, mean = _select_alphas(bk, factors, Yc, alphas_b, alpha_score, st)
        else:
            best = _index(bk, np.zeros(Yc.shape[1], dtype=np.intp))
        if st is not None:
            y_mean, u = train_projection(full.segments, st)
            W = G_table[:, best] * u
        else:
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
    solver : {"auto", "gram", "svd", "eigh"}, default "auto"
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
