"""Contiguous cross-validation folds over the volumes of a run (METHOD §3).

Test blocks are consecutive volumes, never shuffled, and ``gap`` volumes on each
side of a test block are left out of training, so that the hemodynamic response
and the autocorrelation of the noise do not carry the test block into training.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

from ..errors import ConfigError

__all__ = ["contiguous_folds"]


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"{name!r} must be an integer >= {minimum}; {value!r} was provided.")
    return int(value)


def _folds_of(times: np.ndarray, n_folds: int, gap: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Contiguous folds over the sorted volume indices ``times`` (a subset of a run).

    Test blocks are consecutive runs of ``times``; a volume is dropped from training
    when it lies within ``gap`` volumes (in scan time) of any test volume.
    """
    times = np.asarray(times, dtype=np.intp)
    if len(times) < n_folds:
        raise ConfigError(
            f"'n_folds' must not exceed the number of volumes to split ({len(times)}); "
            f"{n_folds} was provided."
        )
    span = int(times.max()) + 1 if len(times) else 0
    window = np.ones(2 * gap + 1)
    folds = []
    for test in np.array_split(times, n_folds):
        is_test = np.zeros(span)
        is_test[test] = 1.0
        near = np.convolve(is_test, window, mode="same") > 0.5
        train = times[~near[times]]
        if len(train) == 0:
            raise ConfigError(
                f"With 'n_folds'={n_folds} and 'gap'={gap} a training set is empty "
                f"({len(times)} volumes); use fewer folds or a smaller gap."
            )
        folds.append((train, test.copy()))
    return folds


def contiguous_folds(n_volumes: int, n_folds: int = 5, gap: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Contiguous cross-validation folds with a gap around each test block.

    Parameters
    ----------
    n_volumes : int
        Number of volumes in the run.
    n_folds : int, default 5
        Number of test blocks: consecutive volumes, sizes differing by at most one,
        covering the run once, in time order (never shuffled).
    gap : int, default 5
        Volumes dropped from training on each side of the test block, so that the
        hemodynamic response and the autocorrelation of the noise do not carry
        information from the test block into training.

    Returns
    -------
    folds : list of (train, test) pairs of int arrays
        Sorted volume indices.

    Examples
    --------
    >>> [(int(tr.min()), int(tr.max()), int(te.min()), int(te.max()))
    ...  for tr, te in contiguous_folds(20, 2, 2)]
    [(12, 19, 0, 9), (0, 7, 10, 19)]
    """
    n_volumes = _check_int("n_volumes", n_volumes, 2)
    n_folds = _check_int("n_folds", n_folds, 2)
    gap = _check_int("gap", gap, 0)
    return _folds_of(np.arange(n_volumes), n_folds, gap)


def _check_folds(folds, n_volumes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    try:
        pairs = list(folds)
    except TypeError:
        raise ConfigError(f"'folds' must be a list of (train, test) index arrays; {folds!r} was provided.") from None
    if not pairs:
        raise ConfigError("'folds' must hold at least one (train, test) pair; an empty list was provided.")
    for i, pair in enumerate(pairs):
        try:
            train, test = pair
        except (TypeError, ValueError):
            raise ConfigError(f"'folds'[{i}] must be a (train, test) pair of index arrays.") from None
        train = np.asarray(train, dtype=np.intp).ravel()
        test = np.asarray(test, dtype=np.intp).ravel()
        for name, idx in (("train", train), ("test", test)):
            if len(idx) == 0 or idx.min() < 0 or idx.max() >= n_volumes:
                raise ConfigError(
                    f"'folds'[{i}] {name} indices must be non-empty and within [0, {n_volumes}); "
                    f"{len(idx)} indices ranging over "
                    f"[{idx.min() if len(idx) else None}, {idx.max() if len(idx) else None}] were provided."
                )
        if np.intersect1d(train, test).size:
            raise ConfigError(f"'folds'[{i}]: train and test indices overlap.")
        out.append((train, test))
    return out
