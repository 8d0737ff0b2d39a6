"""Significance, noise ceiling and group statistics of voxel-wise encoding.

- :func:`circular_shift_null` and :func:`block_permutation_null` build the null
  distribution of any voxel-wise score by breaking the alignment of the regressors
  with the fMRI while keeping the regressors' own temporal structure (autocorrelation),
  then refitting with the same folds. :func:`make_ridge_score_fn` gives the usual
  score function (held-out R² of the cross-validated ridge).
- :func:`fdr_bh` controls the false discovery rate over voxels (Benjamini–Hochberg, the
  one implementation in :func:`napari_brainorg.encoding.inference.fdr`);
  :func:`fwe_p_values` gives family-wise p-values from the maximum statistic.
- :func:`noise_ceiling_split_half` is the noise ceiling: split-half reliability of the
  group's mean time course, corrected by Spearman–Brown to one subject (and to the whole
  group); :func:`noise_ceiling_isc` is the leave-one-subject-out inter-subject
  correlation, a lower reference level with few subjects.
- :func:`group_one_sample` tests maps across subjects (sign-flip permutation or t).

Every function is vectorised over voxels; loops run over permutations only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from .._progress import check_cancel, report
from ..errors import ConfigError, ShapeError, check_choice
from .inference import fdr
from .ridge import DEFAULT_ALPHAS, cv_ridge_scores

__all__ = [
    "PermutationNull",
    "circular_shift_null",
    "block_permutation_null",
    "make_ridge_score_fn",
    "fwe_p_values",
    "fdr_bh",
    "noise_ceiling_isc",
    "noise_ceiling_split_half",
    "sign_flip_p",
    "NoiseCeiling",
    "group_one_sample",
]

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class PermutationNull(NamedTuple):
    """Null distribution of a voxel-wise score and the permutation p-values.

    Attributes
    ----------
    null : ndarray of shape (n_permutations, n_voxels), or None
        Scores with the regressors shifted/permuted (None with ``keep_null=False``).
    p_values : ndarray of shape (n_voxels,)
        ``(1 + #{null >= observed}) / (1 + n_permutations)``, one-sided (a score larger
        than chance).
    """

    null: np.ndarray | None
    p_values: np.ndarray


def _check_n(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name!r} must be an integer >= {minimum}; {value!r} was provided.")
    return int(value)


def _scores_of(score_fn: ScoreFn, X, Y, n_voxels: int) -> np.ndarray:
    s = np.asarray(score_fn(X, Y), dtype=np.float64).ravel()
    if s.shape != (n_voxels,):
        raise ShapeError(
            f"'score_fn' must return one score per voxel, shape ({n_voxels},); it returned shape {s.shape}."
        )
    return s


def _permutation_null(X, Y, score_fn, permute, n_permutations, observed, keep_null,
                      stage, progress, cancel) -> PermutationNull:
    X = np.asarray(X)
    Y = np.asarray(Y)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ShapeError(
            f"'X' must be (n_volumes, n_features) and 'Y' (n_volumes, n_voxels) with the same "
            f"n_volumes; shapes {X.shape} and {Y.shape} were provided."
        )
    n_voxels = Y.shape[1]
    if observed is None:
        observed = _scores_of(score_fn, X, Y, n_voxels)
    else:
        observed = np.asarray(observed, dtype=np.float64).ravel()
        if observed.shape != (n_voxels,):
            raise ShapeError(f"'observed' must have shape ({n_voxels},); shape {observed.shape} was provided.")
    null = np.empty((n_permutations, n_voxels), dtype=np.float32) if keep_null else None
    exceed = np.zeros(n_voxels, dtype=np.int64)
    for i in range(n_permutations):
        check_cancel(cancel)
        s = _scores_of(score_fn, permute(i, X), Y, n_voxels)
        # A tiny tolerance so that a null score equal to the observed one (up to
        # float rounding) counts as "as extreme", keeping the test valid.
        exceed += s >= observed - 1e-12 * np.maximum(1.0, np.abs(observed))
        if keep_null:
            null[i] = s
        report(progress, stage, i + 1, n_permutations)
    return PermutationNull(null, (1.0 + exceed) / (1.0 + n_permutations))


def circular_shift_null(X, Y, score_fn: ScoreFn, n_permutations: int = 1000,
                        min_shift: int | None = None, random_state=None, *, observed=None,
                        keep_null: bool = True, progress=None, cancel=None) -> PermutationNull:
    """Null distribution of a voxel-wise score by circular shifts of the regressors.

    Each permutation rolls every regressor's time course by the same random number of
    volumes (``np.roll`` along time), which keeps each regressor's autocorrelation and
    the regressors' correlations with one another, and breaks only their alignment with
    the fMRI. ``score_fn`` is then run again, with the same folds it closes over.

    Parameters
    ----------
    X : array of shape (n_volumes, n_features)
        Regressors (already filtered / delayed as ``score_fn`` expects).
    Y : array of shape (n_volumes, n_voxels)
    score_fn : callable ``(X, Y) -> (n_voxels,)``
        E.g. :func:`make_ridge_score_fn` or
        ``lambda X, Y: SparseAtomEncoder(alpha).fit(X, Y).r2_``.
    n_permutations : int, default 1000
    min_shift : int, optional
        Smallest shift, in volumes, in either direction; shifts are drawn uniformly from
        ``[min_shift, n_volumes - min_shift]``. Default ``max(1, n_volumes // 10)``, far
        beyond the hemodynamic response, so a shifted regressor does not still align with
        its own response.
    random_state : int or numpy Generator, optional
    observed : array of shape (n_voxels,), optional
        Score on the unshifted data, if already computed.
    keep_null : bool, default True
        Keep every null score (n_permutations × n_voxels float32); ``False`` keeps only
        the counts needed for the p-values.
    progress, cancel
        Reported / checked after every permutation.

    Returns
    -------
    PermutationNull
        ``(null, p_values)``.
    """
    n_permutations = _check_n("n_permutations", n_permutations)
    n_volumes = np.shape(X)[0]
    if min_shift is None:
        min_shift = max(1, n_volumes // 10)
    min_shift = _check_n("min_shift", min_shift)
    if 2 * min_shift > n_volumes:
        raise ConfigError(
            f"'min_shift' must be at most half the number of volumes ({n_volumes // 2}); "
            f"{min_shift} was provided."
        )
    rng = np.random.default_rng(random_state)
    shifts = rng.integers(min_shift, n_volumes - min_shift + 1, size=n_permutations)
    return _permutation_null(X, Y, score_fn, lambda i, A: np.roll(A, int(shifts[i]), axis=0),
                             n_permutations, observed, keep_null, "circular-shift null",
                             progress, cancel)


def block_permutation_null(X, Y, score_fn: ScoreFn, n_permutations: int = 1000,
                           block_size: int = 20, random_state=None, *, observed=None,
                           keep_null: bool = True, progress=None, cancel=None) -> PermutationNull:
    """Null distribution of a voxel-wise score by permuting blocks of volumes.

    The regressors' rows are cut into ``n_volumes // block_size`` contiguous blocks of
    near-equal length (at least ``block_size``), whose order is shuffled; each block
    keeps its internal time course, so the autocorrelation within ``block_size``
    volumes survives.

    Parameters
    ----------
    X, Y, score_fn, n_permutations, random_state, observed, keep_null, progress, cancel
        As in :func:`circular_shift_null`.
    block_size : int, default 20
        Minimum block length in volumes (30 s at a TR of 1.5 s); longer than the
        hemodynamic response.

    Returns
    -------
    PermutationNull
    """
    n_permutations = _check_n("n_permutations", n_permutations)
    block_size = _check_n("block_size", block_size)
    n_volumes = np.shape(X)[0]
    n_blocks = n_volumes // block_size
    if n_blocks < 2:
        raise ConfigError(
            f"'block_size' must leave at least 2 blocks in {n_volumes} volumes; {block_size} was provided."
        )
    blocks = np.array_split(np.arange(n_volumes), n_blocks)
    rng = np.random.default_rng(random_state)
    orders = [np.concatenate([blocks[j] for j in rng.permutation(n_blocks)]) for _ in range(n_permutations)]
    return _permutation_null(X, Y, score_fn, lambda i, A: A[orders[i]], n_permutations, observed,
                             keep_null, "block-permutation null", progress, cancel)


def make_ridge_score_fn(folds, alphas=DEFAULT_ALPHAS, *, fixed_alpha=None, score: str = "r2",
                        **kwargs) -> ScoreFn:
    """Score function ``(X, Y) -> (n_voxels,)`` of the cross-validated ridge on fixed folds.

    Parameters
    ----------
    folds : list of (train, test)
        The folds of the real fit (e.g. ``CVRidgeEncoder.folds_``).
    alphas : array of shape (n_alphas,)
        Candidate grid for the nested CV.
    fixed_alpha : float or array of shape (n_voxels,), optional
        Use these α (e.g. the real fit's ``alpha_``) instead of re-running the inner CV for
        every permutation: about ``inner_folds + 1`` times cheaper. The null is then
        slightly narrower than the real fit's selection process, so p-values are a little
        optimistic; leave ``None`` for the exact procedure.
    score : {"r2", "r"}, default "r2"
        Mean within-fold held-out R² or correlation.
    **kwargs
        Passed to :func:`~napari_brainorg.encoding.ridge.cv_ridge_scores`
        (``inner_folds``, ``gap``, ``backend``, ...).
    """
    check_choice("score", score, ("r2", "r"))

    def score_fn(X, Y):
        res = cv_ridge_scores(X, Y, folds, alphas, fixed_alpha=fixed_alpha, **kwargs)
        return res.r2 if score == "r2" else res.r

    return score_fn


def fwe_p_values(null: np.ndarray, observed) -> np.ndarray:
    """Family-wise error p-values from the maximum statistic over voxels.

    Parameters
    ----------
    null : ndarray of shape (n_permutations, n_voxels)
    observed : ndarray of shape (n_voxels,)

    Returns
    -------
    p_fwe : ndarray of shape (n_voxels,)
        ``(1 + #{max_v null[i, v] >= observed}) / (1 + n_permutations)``.
    """
    null = np.asarray(null)
    observed = np.asarray(observed, dtype=np.float64)
    if null.ndim != 2 or observed.shape != (null.shape[1],):
        raise ShapeError(
            f"'null' must be (n_permutations, n_voxels) and 'observed' (n_voxels,); shapes "
            f"{null.shape} and {observed.shape} were provided."
        )
    peak = np.sort(null.max(1).astype(np.float64))
    count = len(peak) - np.searchsorted(peak, observed, side="left")
    return (1.0 + count) / (1.0 + len(peak))


def fdr_bh(p, q: float = 0.05):
    """Benjamini–Hochberg false-discovery-rate control (:func:`.inference.fdr`).

    Parameters
    ----------
    p : array of p-values, any shape
        NaN entries are ignored (not tested, never rejected).
    q : float, default 0.05
        Target false discovery rate.

    Returns
    -------
    reject : ndarray of bool, shape of ``p``
    q_values : ndarray, shape of ``p``
        BH-adjusted p-values (``scipy.stats.false_discovery_control``), NaN where ``p`` is.
    """
    try:
        q = float(q)
    except (TypeError, ValueError):
        raise ConfigError(f"'q' must be a rate in (0, 1); {q!r} was provided.") from None
    if not 0 < q < 1:
        raise ConfigError(f"'q' must be a rate in (0, 1); {q!r} was provided.")
    return fdr(p, q)


def noise_ceiling_isc(Ys: Sequence[np.ndarray], squared: bool = False) -> np.ndarray:
    """Leave-one-subject-out inter-subject correlation: a noise ceiling per voxel.

    For each subject, the Pearson correlation of each voxel's time series with the mean
    time series of the other subjects (same voxel), then the mean over subjects. It
    measures how much of a voxel's signal is shared by everyone who heard the story,
    i.e. stimulus-driven: no stimulus model, however good, should correlate with a
    subject's voxel much better than the other subjects' average does.

    ``squared=True`` returns the R² form, ``sign(r) · r²``: the share of a subject's
    variance that the group's mean time course explains linearly, the ceiling for the
    held-out R² of an encoding model. The mean of the others still holds their noise, so
    with few subjects this under-estimates the true ceiling (Nastase et al., 2019,
    "Measuring shared responses across subjects using intersubject correlation"); compare
    it with encoding scores as a reference level, not as an exact bound.

    Parameters
    ----------
    Ys : sequence of arrays of shape (n_volumes, n_voxels)
        One array per subject, same volumes and voxels (at least 2 subjects).
    squared : bool, default False

    Returns
    -------
    ceiling : ndarray of shape (n_voxels,)
        Mean leave-one-out ISC (or its signed square); 0 where a series is constant.
    """
    from .scores import correlation_columns

    Ys = [np.asarray(Y) for Y in Ys]
    if len(Ys) < 2:
        raise ShapeError(f"'Ys' must hold at least 2 subjects; {len(Ys)} was provided.")
    shape = Ys[0].shape
    if len(shape) != 2 or any(Y.shape != shape for Y in Ys):
        raise ShapeError(
            "'Ys' must hold arrays of the same shape (n_volumes, n_voxels); shapes "
            f"{[Y.shape for Y in Ys]} were provided."
        )
    dtype = np.float64 if all(Y.dtype == np.float64 for Y in Ys) else np.float32
    total = np.zeros(shape, dtype=np.float64)
    for Y in Ys:
        total += Y
    n = len(Ys)
    isc = np.zeros(shape[1], dtype=np.float64)
    for Y in Ys:
        others = ((total - Y) / (n - 1)).astype(dtype)
        isc += correlation_columns(Y.astype(dtype, copy=False), others)
    isc /= n
    return (np.sign(isc) * isc**2 if squared else isc).astype(dtype)


def _t_from_sums(mean, sum_sq, n):
    var = (sum_sq - n * mean * mean) / (n - 1)
    var = np.maximum(var, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / np.sqrt(var / n)
    # No spread across subjects: an exactly zero mean is no effect; a non-zero mean
    # shared by every subject is an infinitely strong one.
    t = np.where(var > 0, t, np.where(mean == 0, 0.0, np.sign(mean) * np.inf))
    return t


def group_one_sample(maps, method: str = "sign_flip", n_permutations: int = 10000, *,
                     max_stat: bool = False, alternative: str = "two-sided",
                     random_state=None, progress=None, cancel=None):
    """One-sample test across subjects, voxel by voxel (random effects).

    Parameters
    ----------
    maps : array of shape (n_subjects, ...)
        One map per subject (e.g. an atom's coefficients, or held-out R² minus 0).
    method : {"sign_flip", "t"}, default "sign_flip"
        ``"t"``: Student's one-sample t-test (:func:`scipy.stats.ttest_1samp`).
        ``"sign_flip"``: the same t statistic, with its null from flipping the sign of
        whole subject maps (valid when each subject's map is symmetric about 0 under
        the null). With ``2**n_subjects <= n_permutations`` every sign pattern is
        enumerated and the p-value is exact (its smallest value is then
        ``2 / 2**n_subjects`` two-sided).
    n_permutations : int, default 10000
        Random sign patterns when not enumerating.
    max_stat : bool, default False
        With ``"sign_flip"``: compare each voxel with the maximum statistic over all
        voxels of each permutation, which controls the family-wise error rate.
    alternative : {"two-sided", "greater", "less"}, default "two-sided"
    random_state : int or numpy Generator, optional
    progress, cancel
        Reported / checked between batches of permutations.

    Returns
    -------
    stat : ndarray of shape ``maps.shape[1:]``
        One-sample t statistic (``inf`` where all subjects agree exactly on a non-zero value).
    p : ndarray of shape ``maps.shape[1:]``
    """
    check_choice("method", method, ("sign_flip", "t"))
    check_choice("alternative", alternative, ("two-sided", "greater", "less"))
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim < 2 or maps.shape[0] < 2:
        raise ShapeError(
            f"'maps' must be an array of shape (n_subjects, ...) with at least 2 subjects; "
            f"shape {maps.shape} was provided."
        )
    if not np.all(np.isfinite(maps)):
        raise ShapeError("'maps' holds NaN or infinite values.")
    n = maps.shape[0]
    flat = maps.reshape(n, -1)
    mean = flat.mean(0)
    sum_sq = (flat * flat).sum(0)
    t = _t_from_sums(mean, sum_sq, n)
    if method == "t":
        from scipy import stats

        p = stats.ttest_1samp(flat, 0.0, axis=0, alternative=alternative).pvalue
        # scipy returns NaN where subjects do not vary; the exact answer is p = 0 for a
        # shared non-zero value in the tested direction, 1 otherwise.
        side = {"two-sided": np.abs(t), "greater": t, "less": -t}[alternative]
        p = np.where(np.isnan(p), np.where(side == np.inf, 0.0, 1.0), p)
        return t.reshape(maps.shape[1:]), p.reshape(maps.shape[1:])

    n_permutations = _check_n("n_permutations", n_permutations)

    def transform(stat):
        return {"two-sided": np.abs, "greater": lambda a: a, "less": lambda a: -a}[alternative](stat)

    observed = transform(t)
    exact = 2**n <= n_permutations
    if exact:
        codes = np.arange(2**n)[:, None] >> np.arange(n)[None, :] & 1
        signs = 1.0 - 2.0 * codes                      # row 0 is the identity
    else:
        rng = np.random.default_rng(random_state)
        signs = rng.choice([-1.0, 1.0], size=(n_permutations, n))
    n_perm = len(signs)
    n_vox = flat.shape[1]
    batch = max(1, int(2e7 // max(1, n_vox)))
    exceed = np.zeros(n_vox, dtype=np.int64)
    for start in range(0, n_perm, batch):
        check_cancel(cancel)
        s = signs[start:start + batch]
        stat = transform(_t_from_sums(s @ flat / n, sum_sq, n))     # (b, n_vox)
        if max_stat:
            peak = stat.max(1)
            exceed += (peak[:, None] >= observed[None, :] - 1e-12).sum(0)
        else:
            exceed += (stat >= observed[None, :] - 1e-12).sum(0)
        report(progress, "sign-flip permutations", min(start + batch, n_perm), n_perm)
    p = exceed / n_perm if exact else (1.0 + exceed) / (1.0 + n_perm)
    return t.reshape(maps.shape[1:]), p.reshape(maps.shape[1:])


def sign_flip_p(differences, *, n_draws: int = 10000, random_state=None) -> tuple[float, str]:
    """One-sided p that the subjects' mean difference is above 0, by flipping their signs.

    Exact (every sign pattern, the observed one included, so p >= 2**-n) for up to 16
    subjects; else ``n_draws`` random patterns with ``p = (1 + #) / (1 + n_draws)``. A
    draw equal to the observed mean up to rounding counts as reaching it.

    Parameters
    ----------
    differences : array of shape (n_subjects,)
    n_draws : int, default 10000
    random_state : int or numpy Generator, optional

    Returns
    -------
    p : float
    test : str
        How it was computed, for tables.
    """
    import itertools

    diff = np.asarray(differences, dtype=np.float64).ravel()
    n = diff.size
    tol = 1e-9 * max(1.0, float(np.abs(diff).max(initial=0.0)))
    if n <= 16:
        null = (np.array(list(itertools.product([1.0, -1.0], repeat=n))) * diff).mean(1)
        return float(np.mean(null >= diff.mean() - tol)), "exact sign-flip over subjects, one-sided"
    signs = np.random.default_rng(random_state).choice([1.0, -1.0], size=(n_draws, n))
    p = float((1 + np.sum((signs * diff).mean(1) >= diff.mean() - tol)) / (n_draws + 1))
    return p, f"sign-flip over subjects ({n_draws:,} draws), one-sided"


class NoiseCeiling(NamedTuple):
    """Noise ceiling of voxel-wise encoding (see :func:`noise_ceiling_split_half`).

    Attributes
    ----------
    subject_r : ndarray of shape (n_voxels,)
        Highest correlation a perfect stimulus model can reach with ONE subject's
        series: ``sqrt(rho_1)``. Compare with per-subject encoding r (averaged).
    group_r : ndarray of shape (n_voxels,)
        The same for the mean of all ``n`` subjects: ``sqrt(rho_n)``.
    reliability : ndarray of shape (n_voxels,)
        ``rho_1``, the share of one subject's variance that is shared (stimulus-driven).
    split_half_r : ndarray of shape (n_voxels,)
        Correlation of the two halves' mean series, averaged over splits.
    n_splits : int
    """

    subject_r: np.ndarray
    group_r: np.ndarray
    reliability: np.ndarray
    split_half_r: np.ndarray
    n_splits: int


def _spearman_brown(rho1, m):
    """Reliability of the mean of ``m`` parallel measurements of reliability ``rho1``."""
    return m * rho1 / (1.0 + (m - 1.0) * rho1)


def _single_reliability(r_half, m_a: int, m_b: int) -> np.ndarray:
    """Invert ``r = sqrt(SB(rho, m_a) SB(rho, m_b))`` for ``rho`` in [0, 1] (bisection,
    vectorised; closed form ``r / (m - (m - 1) r)`` when ``m_a == m_b == m``)."""
    r = np.clip(np.asarray(r_half, np.float64), 0.0, 1.0)
    if m_a == m_b:
        return r / (m_a - (m_a - 1.0) * r)
    lo, hi = np.zeros_like(r), np.ones_like(r)
    for _ in range(60):  # the map is increasing in rho: halve the bracket 60 times
        mid = 0.5 * (lo + hi)
        above = np.sqrt(_spearman_brown(mid, m_a) * _spearman_brown(mid, m_b)) > r
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return 0.5 * (lo + hi)


def noise_ceiling_split_half(Ys: Sequence[np.ndarray], n_splits: int = 100,
                             random_state=0, cancel=None) -> NoiseCeiling:
    """Split-half noise ceiling with the Spearman–Brown correction.

    Estimator. The subjects are split at random into two halves (sizes ``floor(n/2)``
    and ``ceil(n/2)``; every distinct split when there are at most ``n_splits`` of them);
    for each split, the Pearson r of each voxel's two half-mean series; r averaged over
    splits. Under the classical model (every subject's series = a shared stimulus-driven
    signal + independent noise of the same variance), the correlation of two means of
    ``a`` and ``b`` subjects is ``sqrt(SB(rho_1, a) SB(rho_1, b))`` with the
    Spearman–Brown formula ``SB(rho, m) = m rho / (1 + (m - 1) rho)`` and ``rho_1`` the
    single-subject reliability (shared variance / total variance). Inverting it gives
    ``rho_1`` (negative r: 0); the ceiling of a model's correlation with one subject is
    ``sqrt(rho_1)``, with the mean of all ``n`` subjects ``sqrt(SB(rho_1, n))``.
    (Spearman 1910, Brown 1910; the split-half use for fMRI encoding ceilings follows
    e.g. Hsu et al. 2004, Lage-Castellanos et al. 2019.)

    The leave-one-out ISC (:func:`noise_ceiling_isc`) correlates a subject with the
    mean of the others, which still holds their noise: ``sqrt(rho_1 SB(rho_1, n-1))``,
    below ``sqrt(rho_1)``, markedly so with few subjects.

    Parameters
    ----------
    Ys : sequence of arrays of shape (n_volumes, n_voxels)
        One array per subject (at least 2), same volumes and voxels, preprocessed like
        the encoding's fMRI (e.g. high-passed).
    n_splits : int
        Random splits averaged (all distinct splits when there are fewer).
    random_state : int, Generator or None
    cancel : object with ``is_set()``, optional
        Checked before each split (``CancelledError`` once set).

    Returns
    -------
    NoiseCeiling
    """
    from itertools import combinations
    from math import comb

    from .scores import correlation_columns

    Ys = [np.asarray(Y, dtype=np.float64) for Y in Ys]
    n = len(Ys)
    if n < 2:
        raise ShapeError(f"'Ys' must hold at least 2 subjects for a split-half noise ceiling; {n} was provided.")
    shape = Ys[0].shape
    if len(shape) != 2 or any(Y.shape != shape for Y in Ys):
        raise ShapeError(
            "'Ys' must hold arrays of the same shape (n_volumes, n_voxels); shapes "
            f"{[Y.shape for Y in Ys]} were provided."
        )
    n_splits = _check_n("n_splits", n_splits)
    a = n // 2
    stack = np.stack(Ys)
    total = stack.sum(0)
    n_distinct = comb(n, a) // (2 if 2 * a == n else 1)
    if n_distinct <= n_splits:
        halves = [np.array(c) for c in combinations(range(n), a)]
        if 2 * a == n:  # {A, B} and {B, A} are one split
            halves = [h for h in halves if 0 in h]
    else:
        rng = np.random.default_rng(random_state)
        halves = [np.sort(rng.choice(n, a, replace=False)) for _ in range(n_splits)]
    r = np.zeros(shape[1])
    for h in halves:
        check_cancel(cancel)
        part = stack[h].sum(0)
        r += correlation_columns(part / a, (total - part) / (n - a))
    r /= len(halves)
    rho1 = _single_reliability(r, a, n - a)
    return NoiseCeiling(subject_r=np.sqrt(rho1), group_r=np.sqrt(_spearman_brown(rho1, n)),
                        reliability=rho1, split_half_r=r, n_splits=len(halves))
