"""One place for inference: stimulus nulls, permutation p-values, FDR, group tests.

Every test napari-brainorg reports goes through these functions, so that "p" means
the same thing in the voxel maps, the region tables and the atom × network tables.

Stimulus nulls
    The story is shared by every subject, so a null draw transforms the *regressors'*
    time courses once and the same draw is used for every subject. Two kinds of draw,
    both written as a phase vector over the frequencies of the real FFT, so that one
    engine serves both (:func:`apply_phases`, :func:`phase_cross_products`):

    - circular shifts (:func:`circular_shift_draws`): every regressor rolled by the
      same number of volumes, far beyond the hemodynamic response; a shift by ``s``
      volumes is the phase ``-2 pi f s / n``. At most ``n - 2 min_shift + 1`` distinct
      draws exist, so the smallest p-value is about ``1 / (n - 2 min_shift)``.
    - phase randomisation (:func:`phase_randomisation_draws`, Theiler et al. 1992):
      one random phase per frequency, the same for every regressor (their cross-
      spectra, hence their correlations with one another, are kept exactly); any
      number of distinct draws, for p-values small enough to survive FDR over many
      tests.

    Both keep every regressor's power spectrum and the Gram matrix of the regressors
    (circularly), and break only their lock to the fMRI.

p-values
    :func:`permutation_p`: ``p = (1 + #{null >= observed}) / (1 + n)``, never below
    what the draws support. :func:`gpd_tail_pvalues` refines p between draws with a
    generalised Pareto tail that is checked against the draws (goodness of fit) and
    floored at ``1 / (1 + n)``: a tail model never reports a p-value the draws could
    not have produced.

Multiple comparisons
    :func:`fdr` is the one false-discovery-rate function (Benjamini–Hochberg through
    :func:`scipy.stats.false_discovery_control`; NaN entries are not tests).

Group statistics
    :func:`stouffer_p` combines subjects' permutation p-values (mid-p, so that a subject
    whose observed score is the smallest of all draws gives a finite z);
    :func:`group_effects` is the one place that chooses random effects (one-sample t over
    subjects) or fixed effects (Stouffer) from the number of subjects
    (:data:`MIN_SUBJECTS_RANDOM_EFFECTS`).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ..errors import ConfigError, ShapeError, check_choice

__all__ = [
    "MIN_SUBJECTS_RANDOM_EFFECTS",
    "NULLS",
    "apply_phases",
    "between_subject_spectrum",
    "circular_shift_draws",
    "fdr",
    "gpd_tail_pvalues",
    "group_effects",
    "group_effects_method",
    "null_phases",
    "permutation_p",
    "phase_cross_products",
    "phase_randomisation_draws",
    "phase_randomise",
    "run_null_phases",
    "shift_phases",
    "stouffer_p",
]

#: Kinds of stimulus null draw.
NULLS = ("shift", "phase")

#: Smallest number of subjects for random-effects group statistics. A one-sample t over
#: subjects has n - 1 degrees of freedom; with 6 subjects (5 dof) its t -> z conversion
#: and a sign-flip null (2**6 = 64 patterns, smallest two-sided p 1/32) are usable, and
#: the between-subject variance is estimated from more than a handful of values. Below
#: it the group map is a fixed-effects statement about these subjects (Stouffer).
MIN_SUBJECTS_RANDOM_EFFECTS = 6


def _rng(random_state) -> np.random.Generator:
    return np.random.default_rng(random_state)


def _check_count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name!r} must be an integer >= {minimum}; {value!r} was provided.")
    return int(value)


# --------------------------------------------------------------------------- draws


def circular_shift_draws(n_volumes: int, n_draws: int, *, min_shift: int | None = None,
                         random_state=None) -> np.ndarray:
    """Circular shifts (in volumes) of the regressors, one per null draw.

    Parameters
    ----------
    n_volumes : int
    n_draws : int
        Draws wanted. When at least as many as the distinct shifts allowed, every
        allowed shift is returned once (an exhaustive null).
    min_shift : int, optional
        Smallest shift in either direction (default ``max(1, n_volumes // 10)``, far
        beyond the hemodynamic response).
    random_state : int or numpy Generator, optional

    Returns
    -------
    shifts : ndarray of shape (n_draws_used,), int
        Values in ``[min_shift, n_volumes - min_shift]``; drawn without replacement.
    """
    n_volumes = _check_count("n_volumes", n_volumes, 2)
    n_draws = _check_count("n_draws", n_draws)
    if min_shift is None:
        min_shift = max(1, n_volumes // 10)
    min_shift = _check_count("min_shift", min_shift)
    if 2 * min_shift > n_volumes:
        raise ConfigError(f"'min_shift' must be at most half the number of volumes ({n_volumes // 2}); "
                          f"{min_shift} was provided.")
    allowed = np.arange(min_shift, n_volumes - min_shift + 1)
    if n_draws >= allowed.size:
        return allowed
    return np.sort(_rng(random_state).choice(allowed, size=n_draws, replace=False))


def shift_phases(shifts, n_volumes: int) -> np.ndarray:
    """Phase vectors of circular shifts: ``np.roll(x, s)`` is ``irfft(rfft(x) * exp(i phase))``.

    Returns
    -------
    phases : ndarray of shape (n_shifts, n_volumes // 2 + 1)
    """
    f = np.arange(n_volumes // 2 + 1)
    return -2 * np.pi * np.outer(np.asarray(shifts, dtype=np.float64), f) / n_volumes


def phase_randomisation_draws(n_volumes: int, n_draws: int, random_state=None) -> np.ndarray:
    """Random phases, one per frequency, for phase-randomised surrogates.

    The zero frequency (and the Nyquist frequency for an even ``n_volumes``) keeps
    phase 0 so that surrogates stay real with the same mean.

    Returns
    -------
    phases : ndarray of shape (n_draws, n_volumes // 2 + 1)
    """
    n_volumes = _check_count("n_volumes", n_volumes, 2)
    n_draws = _check_count("n_draws", n_draws)
    n_freq = n_volumes // 2 + 1
    phases = _rng(random_state).uniform(0.0, 2 * np.pi, size=(n_draws, n_freq))
    phases[:, 0] = 0.0
    if n_volumes % 2 == 0:
        phases[:, -1] = 0.0
    return phases


def null_phases(kind: str, n_volumes: int, n_draws: int, *, min_shift: int | None = None,
                random_state=None) -> np.ndarray:
    """Phase vectors of ``n_draws`` stimulus-null draws of kind ``"shift"`` or ``"phase"``."""
    check_choice("null", kind, NULLS)
    if kind == "shift":
        return shift_phases(circular_shift_draws(n_volumes, n_draws, min_shift=min_shift,
                                                 random_state=random_state), n_volumes)
    return phase_randomisation_draws(n_volumes, n_draws, random_state)


def run_null_phases(kind: str, runs, n_draws: int, *, min_shift: int | None = None,
                    random_state=None) -> np.ndarray:
    """Null draws over stacked runs (stories): each run's phases drawn on its own.

    Returns the phases of every run's real-FFT bins, one run after the other, shape
    ``(n_draws, sum(m // 2 + 1 for m in runs))``; one run gives :func:`null_phases`.
    """
    if len(runs) == 1:
        return null_phases(kind, runs[0], n_draws, min_shift=min_shift, random_state=random_state)
    rng = np.random.default_rng(random_state)
    return np.concatenate([null_phases(kind, m, n_draws, random_state=rng) for m in runs], axis=1)


def apply_phases(X, phases) -> np.ndarray:
    """Surrogate time courses: every column of ``X`` turned by the same phases.

    Parameters
    ----------
    X : array of shape (n_volumes, n_columns)
    phases : array of shape (n_volumes // 2 + 1,) or (n_draws, n_volumes // 2 + 1)

    Returns
    -------
    ndarray of shape (n_volumes, n_columns) or (n_draws, n_volumes, n_columns)
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    phases = np.asarray(phases, dtype=np.float64)
    if phases.shape[-1] != n // 2 + 1:
        raise ShapeError(f"'phases' must have {n // 2 + 1} frequencies for {n} volumes; got shape {phases.shape}.")
    F = np.fft.rfft(X, axis=0)
    rot = np.exp(1j * phases)
    if phases.ndim == 1:
        return np.fft.irfft(F * rot[:, None], n=n, axis=0)
    return np.fft.irfft(F[None] * rot[:, :, None], n=n, axis=1)


def phase_randomise(X, random_state=None, runs=None) -> np.ndarray:
    """One phase-randomised surrogate of ``X`` (n_volumes, n_columns), phases shared by columns.

    ``runs`` (lengths of stacked runs, e.g. stories) randomises each run's phases on its
    own, so the surrogate of one story never carries another's time course.
    """
    X = np.asarray(X, dtype=np.float64)
    if runs is None or len(runs) == 1:
        return apply_phases(X, phase_randomisation_draws(X.shape[0], 1, random_state)[0])
    if sum(runs) != X.shape[0]:
        raise ShapeError(f"'runs' {list(runs)} must add up to the {X.shape[0]} volumes of 'X'.")
    phases = run_null_phases("phase", runs, 1, random_state=random_state)[0]
    ends, bins = np.cumsum(runs), np.cumsum([m // 2 + 1 for m in runs])
    return np.concatenate([apply_phases(X[e - m:e], phases[b - (m // 2 + 1):b])
                           for e, m, b in zip(ends, runs, bins)], axis=0)


def phase_cross_products(A, B, phases, *, chunk: int = 256) -> np.ndarray:
    """Inner products of phase-turned columns of ``A`` with columns of ``B``, every draw at once.

    ``out[d, i, j] = apply_phases(A, phases[d])[:, i] @ B[:, j]``, computed from the
    cross-spectrum of ``A`` and ``B`` (one FFT each): for circular shifts this is the
    circular cross-correlation at the shifts drawn.

    Parameters
    ----------
    A : array of shape (n_volumes, n_a)
    B : array of shape (n_volumes, n_b)
    phases : array of shape (n_draws, n_volumes // 2 + 1)

    Returns
    -------
    ndarray of shape (n_draws, n_a, n_b), float64
    """
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    n = A.shape[0]
    if B.shape[0] != n:
        raise ShapeError(f"'A' and 'B' must have the same number of volumes; got {A.shape} and {B.shape}.")
    phases = np.atleast_2d(np.asarray(phases, dtype=np.float64))
    nf = n // 2 + 1
    if phases.shape[1] != nf:
        raise ShapeError(f"'phases' must have {nf} frequencies for {n} volumes; got shape {phases.shape}.")
    # Parseval for real signals: sum_t a(t) b(t) = (1/n) sum_f w_f Re(A_f conj(B_f)),
    # w = 1 at f = 0 (and Nyquist for even n), 2 elsewhere.
    w = np.full(nf, 2.0)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    cross = np.einsum("fa,fb->fab", np.fft.rfft(A, axis=0), np.conj(np.fft.rfft(B, axis=0)))
    cross = (cross * (w / n)[:, None, None]).reshape(nf, -1)
    out = np.empty((phases.shape[0], cross.shape[1]))
    for start in range(0, phases.shape[0], chunk):
        rot = np.exp(1j * phases[start:start + chunk])
        out[start:start + chunk] = (rot @ cross).real
    return out.reshape(phases.shape[0], A.shape[1], B.shape[1])


# --------------------------------------------------------------------------- p-values


def permutation_p(observed, null, *, alternative: str = "greater", tolerance: float = 1e-12) -> np.ndarray:
    """Permutation p-values, ``(1 + #{null as or more extreme}) / (1 + #valid draws)``.

    Parameters
    ----------
    observed : array of shape (...)
    null : array of shape (n_draws, ...)
        NaN marks a draw without a value for that test (not counted).
    alternative : {"greater", "less", "two-sided"}
        ``"two-sided"`` compares absolute values.
    tolerance : float
        Relative tolerance under which a draw equal to the observed value (up to float
        rounding) counts as reaching it, so that ties keep the test valid.

    Returns
    -------
    p : ndarray of shape (...)
        In ``[1 / (1 + n), 1]``; NaN where the observed value is NaN or no draw is valid.
    """
    check_choice("alternative", alternative, ("greater", "less", "two-sided"))
    observed = np.asarray(observed, dtype=np.float64)
    null = np.asarray(null, dtype=np.float64)
    if null.shape[1:] != observed.shape:
        raise ShapeError(f"'null' must have shape (n_draws,) + {observed.shape}; got {null.shape}.")
    if alternative == "less":
        observed, null = -observed, -null
    elif alternative == "two-sided":
        observed, null = np.abs(observed), np.abs(null)
    valid = np.isfinite(null)
    with np.errstate(invalid="ignore"):
        reach = valid & (null >= observed[None] - tolerance * np.maximum(1.0, np.abs(observed[None])))
    n_valid = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = (1.0 + reach.sum(axis=0)) / (1.0 + n_valid)
    return np.where(np.isfinite(observed) & (n_valid > 0), p, np.nan)


def gpd_tail_pvalues(observed, top, n_draws, *, min_exceedances: int = 10, floor: float | None = None,
                     check_fit: bool = True) -> np.ndarray:
    """Permutation p-values refined in the tail by a validated generalised Pareto fit.

    Where fewer than ``min_exceedances`` null draws reach the observed score, the
    upper tail of the null (its ``m`` largest draws, over the threshold ``u`` halfway
    between the ``m``-th and ``(m+1)``-th largest) is fitted by a generalised Pareto
    distribution (probability weighted moments, Hosking & Wallis 1987) and
    ``p = (m / n) · S(observed − u)`` (Knijnenburg et al. 2009; Winkler et al. 2016).

    The fit is used only where it describes the draws: at least 5 distinct
    exceedances, a shape inside the estimator's range and a Kolmogorov–Smirnov distance
    between the fitted and the empirical tail below its 5 % critical value
    ``1.36 / sqrt(m)`` (``check_fit``). The result is never below ``floor`` (default
    ``1 / (1 + n_draws)``, the permutation resolution): an observed score beyond the
    fitted tail's end gets that floor, not a p-value the draws cannot support.

    Parameters
    ----------
    observed : ndarray of shape (...)
    top : ndarray of shape (m + 1, ...)
        The ``m + 1`` largest null draws of each test (any order; NaN for missing).
    n_draws : ndarray of shape (...)
        Valid null draws of each test.
    min_exceedances : int
    floor : float, optional
        Smallest p returned; default ``1 / (1 + n_draws)`` per test.
    check_fit : bool, default True

    Returns
    -------
    p : ndarray of shape (...)
        Tail p-values where the fit was used, NaN elsewhere.
    """
    observed = np.asarray(observed, dtype=np.float64)
    n_draws = np.asarray(n_draws, dtype=np.float64)
    top = np.sort(np.asarray(top, dtype=np.float64), axis=0)[::-1]  # descending, NaN last
    m = top.shape[0] - 1
    u = 0.5 * (top[m - 1] + top[m])
    y = np.sort(top[:m] - u[None], axis=0)  # ascending exceedances, (m, ...)
    j = np.arange(1, m + 1, dtype=np.float64).reshape((m,) + (1,) * (y.ndim - 1))
    a0 = y.mean(axis=0)
    a1 = (((m - j) / (m - 1)) * y).mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        shape = a0 / (a0 - 2 * a1) - 2.0  # Hosking's k: > 0 bounded tail, < 0 heavy tail
        scale = 2 * a0 * a1 / (a0 - 2 * a1)
        small = np.abs(shape) < 1e-6
        safe_shape = np.where(small, 1.0, shape)

        def survival(x):
            zz = x / scale
            base = np.clip(1.0 - shape * zz, 0.0, None)
            return np.where(small, np.exp(-zz), base ** (1.0 / safe_shape))

        surv = survival(observed - u)
        ok_fit = np.ones(np.shape(u), dtype=bool)
        if check_fit:
            fitted_cdf = 1.0 - survival(y)  # (m, ...)
            emp_hi = j / m
            emp_lo = (j - 1) / m
            ks = np.nanmax(np.maximum(np.abs(fitted_cdf - emp_hi), np.abs(fitted_cdf - emp_lo)), axis=0)
            ok_fit = ks < 1.36 / np.sqrt(m)
    distinct = (np.diff(y, axis=0) > 1e-12).sum(axis=0) + 1
    usable = (np.isfinite(y).all(axis=0) & (distinct >= 5) & (scale > 0) & (shape > -0.5) & ok_fit
              & np.isfinite(surv) & (n_draws >= 10 * min_exceedances) & (observed > u))
    resolution = 1.0 / (1.0 + np.maximum(n_draws, 0))
    lowest = resolution if floor is None else np.maximum(float(floor), 0.0)
    p = (m / np.maximum(n_draws, 1)) * surv
    return np.where(usable, np.maximum(p, lowest), np.nan)


# --------------------------------------------------------------------------- FDR


def fdr(p, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini–Hochberg false discovery rate over every finite entry of ``p``.

    Parameters
    ----------
    p : array of p-values, any shape
        NaN entries are not tests: they are ignored and never rejected.
    alpha : float, default 0.05
        Target false discovery rate.

    Returns
    -------
    reject : ndarray of bool, shape of ``p``
        ``q <= alpha``.
    q : ndarray, shape of ``p``
        Adjusted p-values from :func:`scipy.stats.false_discovery_control`; NaN where
        ``p`` is NaN.
    """
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise ConfigError(f"'alpha' must be a rate in (0, 1); {alpha!r} was provided.") from None
    if not 0 < alpha < 1:
        raise ConfigError(f"'alpha' must be a rate in (0, 1); {alpha!r} was provided.")
    p = np.asarray(p, dtype=np.float64)
    flat = p.ravel()
    valid = np.isfinite(flat)
    if np.any((flat[valid] < 0) | (flat[valid] > 1)):
        raise ConfigError("'p' must hold probabilities in [0, 1] (or NaN).")
    q = np.full(flat.shape, np.nan)
    if valid.any():
        q[valid] = stats.false_discovery_control(flat[valid], method="bh")
    reject = np.zeros(flat.shape, dtype=bool)
    reject[valid] = q[valid] <= alpha
    return reject.reshape(p.shape), q.reshape(p.shape)


# --------------------------------------------------------------------------- group


def stouffer_p(p, n_draws=None, *, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Combine one-sided p-values over subjects (Stouffer), finite for every p in (0, 1].

    A permutation p-value reaches 1 (the observed score is the smallest of all draws)
    but never 0, so ``norm.isf(p)`` would give ``-inf`` for one subject and hide the
    group's effect however strong the other subjects are. With ``n_draws`` given, each
    p is turned into its mid-p, ``p - 1 / (2 (1 + n))``, which lies in
    ``[1 / (2 (1 + n)), 1 - 1 / (2 (1 + n))]`` symmetrically and has mean 1/2 under the
    null; without it, p is clipped to ``[1e-300, 1 - 1e-16]``.

    Parameters
    ----------
    p : array of shape (n_subjects, ...) (``axis`` 0 by default)
    n_draws : int or array broadcastable to ``p``, optional
        Null draws behind each p.
    axis : int

    Returns
    -------
    z : ndarray
        ``sum(z_s) / sqrt(n_subjects)`` with ``z_s = norm.isf(p_s)``.
    p_group : ndarray
        One-sided ``norm.sf(z)``.
    """
    p = np.asarray(p, dtype=np.float64)
    if n_draws is not None:
        half = 0.5 / (1.0 + np.asarray(n_draws, dtype=np.float64))
        p = np.clip(p - half, half, 1.0 - half)
    else:
        p = np.clip(p, 1e-300, 1.0 - 1e-16)
    z_s = stats.norm.isf(p)
    n = p.shape[axis]
    z = np.nansum(z_s, axis=axis) / np.sqrt(n)
    return z, stats.norm.sf(z)


def group_effects_method(n_subjects: int, method: str = "auto", *,
                         min_random: int = MIN_SUBJECTS_RANDOM_EFFECTS) -> str:
    """``"random"`` or ``"fixed"``: the group model for ``n_subjects`` (``"auto"``: random from ``min_random``)."""
    check_choice("group_effects", method, ("auto", "random", "fixed"))
    if method != "auto":
        if method == "random" and n_subjects < 2:
            raise ConfigError("'group_effects' 'random' needs at least 2 subjects; 1 was provided.")
        return method
    return "random" if n_subjects >= min_random else "fixed"


def group_effects(effects, z=None, *, method: str = "auto",
                  min_random: int = MIN_SUBJECTS_RANDOM_EFFECTS) -> tuple[np.ndarray, str]:
    """Group z map from per-subject effects (random effects) or z maps (fixed effects).

    Parameters
    ----------
    effects : array of shape (n_subjects, ...)
        Per-subject effect estimates on a common scale (e.g. GLS coefficients of
        voxel-standardised fMRI).
    z : array of shape (n_subjects, ...), optional
        Per-subject z maps, needed for fixed effects.
    method : {"auto", "random", "fixed"}
        ``"random"``: one-sample t over subjects (n - 1 dof), converted to z with the
        same tail probability; it generalises to the population the subjects come
        from. ``"fixed"``: Stouffer's ``sum(z) / sqrt(n)``; it says the atom drives the
        voxel in these subjects. ``"auto"``: random from ``min_random`` subjects.

    Returns
    -------
    z_group : ndarray of shape ``effects.shape[1:]``
    method_used : str
    """
    effects = np.asarray(effects, dtype=np.float64)
    n = effects.shape[0]
    used = group_effects_method(n, method, min_random=min_random)
    if used == "fixed":
        if z is None:
            raise ShapeError("fixed-effects group maps need the per-subject z maps ('z').")
        z = np.asarray(z, dtype=np.float64)
        return z.sum(0) / np.sqrt(z.shape[0]), used
    mean = effects.mean(0)
    sd = effects.std(0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(sd > 0, mean / (sd / np.sqrt(n)), 0.0)
    logp = stats.t.logsf(np.abs(t), n - 1)
    zabs = stats.norm.isf(np.exp(logp))
    big = ~np.isfinite(zabs)
    if big.any():
        zabs[big] = np.sqrt(-2 * logp[big] - np.log(-4 * np.pi * logp[big]))
    return np.sign(t) * zabs, used


def between_subject_spectrum(series, smooth: int = 5) -> np.ndarray:
    """Spectral density of the subjects' deviations from their mean: the between-subject variance by frequency.

    The deviations ``y_s - mean_s y`` hold no stimulus-locked signal that every subject
    shares, only what differs between subjects (their noise, fluctuations and the part
    of the response that varies over subjects), so ``u' Sigma u / n_subjects`` with this
    spectrum is the variance of the subjects' mean projection on a regressor ``u``:
    ``sum_f w_f |U_f|^2 P_f / n`` (``w``: the real FFT's weights). It depends on the
    regressor alone, not on which subjects happen to agree in one null draw, so a null
    statistic divided by it is not inflated by the shared signal.

    Parameters
    ----------
    series : array of shape (n_subjects, n_volumes, n_series)
        At least two subjects.
    smooth : int, default 5
        Width (frequency bins) of the running mean over frequencies (Daniell window).

    Returns
    -------
    ndarray of shape (n_volumes // 2 + 1, n_series)
        ``P_f = sum_s |D_sf|^2 / ((n_subjects - 1) n_volumes)``, smoothed.
    """
    y = np.asarray(series, dtype=np.float64)
    if y.ndim != 3:
        raise ShapeError(f"'series' must have shape (n_subjects, n_volumes, n_series); got shape {y.shape}.")
    S, n = y.shape[:2]
    if S < 2:
        raise ShapeError("The between-subject spectrum needs at least 2 subjects; got 1.")
    d = y - y.mean(0, keepdims=True)
    P = (np.abs(np.fft.rfft(d, axis=1)) ** 2).sum(0) / ((S - 1) * n)
    if smooth > 1 and P.shape[0] > smooth:  # a run too short for the window keeps its raw periodogram
        kernel = np.ones(int(smooth)) / int(smooth)
        pad = int(smooth) // 2
        padded = np.concatenate([P[1:pad + 1][::-1], P, P[-pad - 1:-1][::-1]], axis=0)
        P = np.stack([np.convolve(padded[:, j], kernel, mode="valid") for j in range(P.shape[1])], axis=1)
    return P
