"""Word -> volume alignment: the linear operator H (n_volumes × n_words).

A story's word activations ``A`` (n_words × n_ans) become responses at the scan's
volumes as ``X = H @ A`` (n_volumes × n_ans). ``H`` depends only on the word times,
the TR and the number of volumes, so it is computed once and windows of words are
streamed through it (``H[:, window] @ A[window]``, summed over windows).

Operators (``method``)
----------------------
``"glover"`` / ``"spm"``
    Each word an impulse (or a boxcar of its duration) of unit amplitude at its scan
    time on a grid oversampled ``oversampling`` times per TR, convolved with the
    canonical HRF and sampled at the volume times: exactly what
    :func:`nilearn.glm.first_level.compute_regressor` computes for one event per word.
``"lanczos"``
    Lanczos-windowed sinc resampling of the word events to the volume times (cutoff at
    the volumes' Nyquist rate), no HRF.
``"fir"``
    The mean of the words heard during each of the volumes ``fir_delays`` before each
    volume (a flat finite impulse response).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError, ShapeError, check_choice

if TYPE_CHECKING:  # pragma: no cover
    from ..io.stimuli import WordEvents

__all__ = [
    "ALIGNMENT_METHODS",
    "hrf_kernel",
    "hrf_operator",
    "volume_of_words",
    "words_per_volume",
]

#: Values of ``method`` in :func:`hrf_operator`.
ALIGNMENT_METHODS = ("glover", "spm", "lanczos", "fir")

# compute_regressor's default: its oversampled grid starts this many seconds before
# the first volume.
_MIN_ONSET = -24.0
# Length of nilearn's HRF kernels (seconds).
_HRF_LENGTH = 32.0
# Elements of one (volumes × words) block; bounds the temporaries of long stories.
_BLOCK = 2_000_000


def _check_tr(tr) -> float:
    try:
        value = float(tr)
    except (TypeError, ValueError):
        raise ConfigError(f"'tr' must be a positive number of seconds; {tr!r} was provided.") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"'tr' must be a positive number of seconds; {tr!r} was provided.")
    return value


def _check_n_volumes(n_volumes) -> int:
    if isinstance(n_volumes, bool) or not isinstance(n_volumes, (int, np.integer)) or n_volumes <= 0:
        raise ConfigError(f"'n_volumes' must be a positive integer; {n_volumes!r} was provided.")
    return int(n_volumes)


def _check_offset(frame_offset) -> float:
    try:
        value = float(frame_offset)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(
            f"'frame_offset' must be a finite number of seconds; {frame_offset!r} was provided."
        )
    return value


def _check_times(values, name: str, n: int | None = None) -> np.ndarray:
    if hasattr(values, "onsets") and name == "onsets":
        values = values.onsets  # a WordEvents
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1:
        raise ShapeError(f"{name!r} must be a 1D array of seconds, shape (n_words,); got shape {a.shape}.")
    if n is not None and a.shape[0] != n:
        raise ShapeError(f"{name!r} must have shape ({n},) like 'onsets'; got shape {a.shape}.")
    bad = ~np.isfinite(a)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ConfigError(
            f"{name!r} must be finite; {int(bad.sum())} value(s) are not (first: index {i}, {a[i]!r})."
        )
    return a


def _frame_times(n_volumes: int, tr: float, frame_offset: float) -> np.ndarray:
    return np.arange(n_volumes) * tr + frame_offset


def _oversampled_grid(frame_times: np.ndarray, tr: float, oversampling: int) -> np.ndarray:
    """The high-resolution grid of ``compute_regressor`` (``min_onset=-24``).

    Rebuilt with the same ``np.linspace`` call so that word times snap to the same
    samples (story times often fall exactly on grid points).
    """
    n = frame_times.size
    lo, hi = float(frame_times.min()), float(frame_times.max())
    if n == 1:
        step = tr / oversampling
        count = int(round((hi + tr - lo - _MIN_ONSET) / step)) + 1
        return lo + _MIN_ONSET + np.arange(count) * step
    n_high = (n - 1) / (hi - lo) * (hi * (1 + 1.0 / (n - 1)) - lo - _MIN_ONSET) * oversampling + 1
    return np.linspace(lo + _MIN_ONSET, hi * (1 + 1.0 / (n - 1)), int(np.rint(n_high)))


def _snap(times: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Index of the first grid sample at or after each time (``np.searchsorted``).

    Times outside the grid get the index they would have on its extension.
    """
    index = np.searchsorted(grid, times).astype(np.int64)
    step = (grid[-1] - grid[0]) / (grid.size - 1)
    outside = (times < grid[0]) | (times > grid[-1])
    if outside.any():
        index[outside] = np.ceil((times[outside] - grid[0]) / step).astype(np.int64)
    return index


# Canonical HRFs as differences of two gamma densities, with nilearn's parameters
# (nilearn.glm.first_level.glover_hrf / spm_hrf): delay, undershoot, dispersion,
# undershoot dispersion, ratio.
_HRF_PARAMETERS = {
    "glover": (6.0, 12.0, 0.9, 0.9, 0.48),
    "spm": (6.0, 16.0, 1.0, 1.0, 0.167),
}


def _gamma_pdf(t: np.ndarray, shape: float, loc: float, scale: float) -> np.ndarray:
    from scipy.special import gammaln

    z = (t - loc) / scale
    out = np.zeros_like(z)
    positive = z > 0
    zp = z[positive]
    out[positive] = np.exp((shape - 1.0) * np.log(zp) - zp - gammaln(shape)) / scale
    return out


def hrf_kernel(method: str, tr: float, oversampling: int = 50) -> np.ndarray:
    """The canonical HRF sampled on the oversampled grid, normalised to unit sum.

    The same samples as ``nilearn.glm.first_level.glover_hrf(tr, oversampling)`` (or
    ``spm_hrf``): 32 s, ``np.linspace(0, 32, round(32 / dt))`` with
    ``dt = tr / oversampling``, gamma densities shifted by ``dt``. Computed here so that
    building an operator does not import nilearn's GLM module.

    Parameters
    ----------
    method : {"glover", "spm"}
    tr : float
    oversampling : int

    Returns
    -------
    ndarray of shape (round(32 * oversampling / tr),), float64
    """
    check_choice("method", method, tuple(_HRF_PARAMETERS))
    delay, undershoot, dispersion, u_dispersion, ratio = _HRF_PARAMETERS[method]
    dt = tr / oversampling
    t = np.linspace(0, _HRF_LENGTH, int(np.rint(_HRF_LENGTH / dt)))
    hrf = _gamma_pdf(t, delay / dispersion, dt, dispersion) - ratio * _gamma_pdf(
        t, undershoot / u_dispersion, dt, u_dispersion
    )
    return hrf / hrf.sum()


def _blocks(n_volumes: int, n_words: int):
    rows = max(1, _BLOCK // max(n_words, 1))
    for start in range(0, n_volumes, rows):
        yield slice(start, min(start + rows, n_volumes))


def _hrf_convolved(onsets, durations, frame_times, tr, method, oversampling) -> np.ndarray:
    grid = _oversampled_grid(frame_times, tr, oversampling)
    step = (grid[-1] - grid[0]) / (grid.size - 1)
    kernel = hrf_kernel(method, tr, oversampling)
    # cumulative[m] = kernel[0] + ... + kernel[m - 1]: a boxcar over samples
    # [first, stop) seen from sample i is cumulative[i - first + 1] - cumulative[i - stop + 1].
    cumulative = np.concatenate([[0.0], np.cumsum(kernel)])
    last = cumulative.size - 1

    first = _snap(onsets, grid)
    if durations is None:
        stop = first + 1
    else:
        stop = _snap(onsets + durations, grid)
    # compute_regressor gives an event shorter than one sample one sample.
    stop = np.maximum(stop, first + 1)

    # Volume times on the grid: sample index and linear-interpolation weight.
    position = (frame_times - grid[0]) / step
    sample = np.floor(position + 1e-9).astype(np.int64)
    weight = position - sample
    weight[np.abs(weight) < 1e-9] = 0.0

    def boxcar_at(i):  # i: (n_rows, 1) sample indices -> (n_rows, n_words)
        a = np.clip(i - first[None, :] + 1, 0, last)
        b = np.clip(i - stop[None, :] + 1, 0, last)
        return cumulative[a] - cumulative[b]

    H = np.empty((frame_times.size, onsets.size), dtype=np.float64)
    for rows in _blocks(frame_times.size, onsets.size):
        i = sample[rows, None]
        w = weight[rows, None]
        block = boxcar_at(i)
        if np.any(w):
            block = (1.0 - w) * block + w * boxcar_at(i + 1)
        H[rows] = block
    return H


def _lanczos(onsets, frame_times, tr, window) -> np.ndarray:
    H = np.empty((frame_times.size, onsets.size), dtype=np.float64)
    for rows in _blocks(frame_times.size, onsets.size):
        x = (frame_times[rows, None] - onsets[None, :]) / tr
        H[rows] = np.where(np.abs(x) <= window, np.sinc(x) * np.sinc(x / window), 0.0)
    return H


def _fir(onsets, n_volumes, tr, frame_offset, delays) -> np.ndarray:
    volume = volume_of_words(onsets, n_volumes, tr, frame_offset)
    inside = volume >= 0
    counts = np.bincount(volume[inside], minlength=n_volumes).astype(np.float64)
    # Mean over the words heard during each volume ...
    heard = np.zeros((n_volumes, onsets.size), dtype=np.float64)
    words = np.flatnonzero(inside)
    heard[volume[words], words] = 1.0 / counts[volume[words]]
    # ... then the mean of that over the delayed volumes.
    H = np.zeros_like(heard)
    for d in delays:
        if d < n_volumes:
            H[d:] += heard[: n_volumes - d]
    return H / len(delays)


def hrf_operator(
    onsets,
    n_volumes: int,
    tr: float,
    *,
    method: str = "glover",
    durations=None,
    oversampling: int = 50,
    frame_offset: float = 0.0,
    lanczos_window: int = 3,
    fir_delays: Sequence[int] = (2, 3, 4),
) -> np.ndarray:
    """The linear operator H that turns word activations into volume responses.

    Parameters
    ----------
    onsets : array-like of shape (n_words,) or WordEvents
        Scan time of each word in seconds (the story's onset already added).
    n_volumes : int
        Number of fMRI volumes.
    tr : float
        Repetition time in seconds.
    method : {"glover", "spm", "lanczos", "fir"}
        See the module's description.
    durations : array-like of shape (n_words,) or None
        ``"glover"``/``"spm"`` only: each word a boxcar of this many seconds instead of
        an impulse.
    oversampling : int
        ``"glover"``/``"spm"``: samples per TR of the grid the events are convolved on.
    frame_offset : float
        Time of volume 0 in seconds: volume ``v`` is sampled at
        ``v * tr + frame_offset`` (e.g. ``tr / 2`` for the middle of the acquisition).
    lanczos_window : int
        ``"lanczos"``: number of lobes of the window on each side.
    fir_delays : sequence of int
        ``"fir"``: delays in volumes; each volume gets the mean of the words heard during
        the volumes that many TRs before it.

    Returns
    -------
    H : ndarray of shape (n_volumes, n_words), float64
        ``H @ A`` (``A`` of shape (n_words, n_ans)) gives the responses at the volumes.

    Notes
    -----
    ``"glover"``/``"spm"`` reproduce
    ``nilearn.glm.first_level.compute_regressor([[onset], [duration], [1.0]], hrf_model,
    frame_times=np.arange(n_volumes) * tr + frame_offset, oversampling=oversampling)``
    for every word, column by column (``min_onset=-24``): the same oversampled grid (an
    ``np.linspace`` from 24 s before the first volume, with the same number of samples),
    the same snapping of an event's start and end to the first grid sample at or after
    it (an impulse and any event shorter than a sample last one sample), the kernels of
    nilearn's ``glover_hrf``/``spm_hrf`` (:func:`hrf_kernel`: 32 s, normalised to unit
    sum, so a long boxcar reaches a plateau of 1), and linear interpolation at the volume times. Instead of a
    convolution per word, ``H[v, w]`` is read off the kernel's cumulative sum at the
    lag between volume ``v`` and word ``w``: exact, and vectorised over all words.
    One difference: words more than 24 s before the first volume stay at their own
    time (compute_regressor moves them to the start of its grid).

    ``"lanczos"``: ``H[v, w] = sinc(x) sinc(x / a)`` for ``|x| <= a`` with
    ``x = (t_v - onset_w) / tr`` and ``a = lanczos_window``, unnormalised, so a
    constant amplitude gives (words per TR) × amplitude.

    Examples
    --------
    >>> H = hrf_operator([1.0, 2.5, 4.0], n_volumes=20, tr=1.5)
    >>> H.shape
    (20, 3)
    """
    check_choice("method", method, ALIGNMENT_METHODS)
    n_volumes = _check_n_volumes(n_volumes)
    tr = _check_tr(tr)
    frame_offset = _check_offset(frame_offset)
    onsets = _check_times(onsets, "onsets")
    if durations is not None:
        if method not in ("glover", "spm"):
            raise ConfigError(
                f"'durations' apply to the methods 'glover' and 'spm' only; method {method!r} "
                "uses the word onsets. Pass durations=None."
            )
        durations = _check_times(durations, "durations", onsets.size)
        if (durations < 0).any():
            i = int(np.flatnonzero(durations < 0)[0])
            raise ConfigError(f"'durations' must be >= 0; index {i} is {durations[i]!r}.")
    if isinstance(oversampling, bool) or not isinstance(oversampling, (int, np.integer)) or oversampling < 1:
        raise ConfigError(f"'oversampling' must be a positive integer; {oversampling!r} was provided.")
    if onsets.size == 0:
        return np.zeros((n_volumes, 0), dtype=np.float64)

    frame_times = _frame_times(n_volumes, tr, frame_offset)
    if method in ("glover", "spm"):
        return _hrf_convolved(onsets, durations, frame_times, tr, method, int(oversampling))
    if method == "lanczos":
        if isinstance(lanczos_window, bool) or not isinstance(lanczos_window, (int, np.integer)) or lanczos_window < 1:
            raise ConfigError(f"'lanczos_window' must be a positive integer; {lanczos_window!r} was provided.")
        return _lanczos(onsets, frame_times, tr, int(lanczos_window))
    delays = list(fir_delays) if fir_delays is not None else []
    if not delays or any(
        isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0 for d in delays
    ):
        raise ConfigError(
            f"'fir_delays' must be a non-empty sequence of integers >= 0 (volumes); "
            f"{fir_delays!r} was provided."
        )
    return _fir(onsets, n_volumes, tr, frame_offset, [int(d) for d in delays])


def volume_of_words(onsets, n_volumes: int, tr: float, frame_offset: float = 0.0) -> np.ndarray:
    """The volume during which each word starts.

    Volume ``v`` covers ``[v * tr + frame_offset, (v + 1) * tr + frame_offset)``.

    Parameters
    ----------
    onsets : array-like of shape (n_words,) or WordEvents
    n_volumes : int
    tr : float
    frame_offset : float

    Returns
    -------
    ndarray of shape (n_words,), int64
        The volume index, or -1 for a word before the first or after the last volume.
    """
    n_volumes = _check_n_volumes(n_volumes)
    tr = _check_tr(tr)
    frame_offset = _check_offset(frame_offset)
    onsets = _check_times(onsets, "onsets")
    volume = np.floor((onsets - frame_offset) / tr).astype(np.int64)
    volume[(volume < 0) | (volume >= n_volumes)] = -1
    return volume


def words_per_volume(
    words: WordEvents, n_volumes: int, tr: float, frame_offset: float = 0.0
) -> list[str]:
    """The text heard during each volume (words joined by spaces), for plots.

    Parameters
    ----------
    words : WordEvents
    n_volumes : int
    tr : float
    frame_offset : float

    Returns
    -------
    list of str, length n_volumes
        ``""`` for a volume during which no word starts.
    """
    volume = volume_of_words(words.onsets, n_volumes, tr, frame_offset)
    order = np.argsort(volume, kind="stable")
    sorted_volume = volume[order]
    bounds = np.searchsorted(sorted_volume, np.arange(n_volumes + 1))
    text = np.asarray(words.words, dtype=object)[order]
    return [" ".join(text[bounds[v] : bounds[v + 1]]) for v in range(n_volumes)]
