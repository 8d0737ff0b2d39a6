"""Several stories per subject: per-run preprocessing and leave-one-story-out scoring.

When the subjects heard several stories, each story is its own scan (run): its own
TR, its own slow drifts and its own mean. The runs are analysed one after another
(rows of one array, in story order), and everything that follows the time axis is
done within a run, never across a boundary:

- :func:`run_drift_basis` is block-diagonal: a constant, a trend and cosine drifts
  per run (``drift_basis`` of each run, with its own TR);
- :func:`highpass_runs` removes them run by run (the same call for fMRI and atoms);
- :func:`make_delays_runs` shifts regressors inside a run (FIR delays never carry one
  story into the next);
- :func:`leave_one_story_out` scores the nested cross-validated ridge with one fold
  per story: trained on the other stories (each voxel's alpha chosen by an inner
  contiguous CV of the training runs), tested on the held-out one.

A run is given as ``(name, n_volumes, tr)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, ShapeError
from .preprocessing import drift_basis, make_delays

Run = tuple[str, int, float]


def _check_runs(runs: Sequence[Run], n_volumes: int | None = None) -> list[Run]:
    runs = [(str(n), int(v), float(t)) for n, v, t in runs]
    if not runs:
        raise ConfigError("'runs' must hold at least one (name, n_volumes, tr).")
    if any(v < 1 for _, v, _ in runs) or any(not t > 0 for _, _, t in runs):
        raise ConfigError(f"every run needs n_volumes >= 1 and tr > 0; {runs} was provided.")
    if n_volumes is not None and sum(v for _, v, _ in runs) != n_volumes:
        raise ShapeError(f"the runs {[(n, v) for n, v, _ in runs]} add up to {sum(v for _, v, _ in runs)} volumes; "
                         f"the data has {n_volumes}.")
    return runs


def run_slices(runs: Sequence[Run]) -> list[slice]:
    """The rows of each run in the stacked series."""
    out, start = [], 0
    for _, n, _ in _check_runs(runs):
        out.append(slice(start, start + n))
        start += n
    return out


def run_rows(runs: Sequence[Run], names: Sequence[str] | None) -> np.ndarray:
    """Row indices of the runs named ``names`` (all rows when None), in run order."""
    runs = _check_runs(runs)
    if names is None:
        return np.arange(sum(n for _, n, _ in runs))
    known = [r[0] for r in runs]
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"{bad} are not runs; the runs are {known}.")
    return np.concatenate([np.arange(s.start, s.stop) for (name, _, _), s in zip(runs, run_slices(runs))
                           if name in names])


def run_drift_basis(runs: Sequence[Run], cutoff: float | None = 128.0) -> np.ndarray:
    """Block-diagonal drift basis: each run's constant, trend and cosines (its own TR).

    Returns
    -------
    Q : ndarray of shape (n_volumes_total, n_drifts), orthonormal columns
        Equal to :func:`~napari_brainorg.encoding.preprocessing.drift_basis` for one run.
    """
    runs = _check_runs(runs)
    blocks = [drift_basis(n, tr, cutoff) for _, n, tr in runs]
    Q = np.zeros((sum(n for _, n, _ in runs), sum(b.shape[1] for b in blocks)))
    r = c = 0
    for b in blocks:
        Q[r:r + b.shape[0], c:c + b.shape[1]] = b
        r += b.shape[0]
        c += b.shape[1]
    return Q


def highpass_runs(Y, runs: Sequence[Run], cutoff: float | None = 128.0, *, copy: bool = True) -> np.ndarray:
    """Remove each run's drifts (constant, trend, cosines) within the run.

    Parameters
    ----------
    Y : array of shape (n_volumes_total, n_columns)
    runs : list of (name, n_volumes, tr)
    cutoff : float or None
    copy : bool, default True
        ``False`` filters a float array in place (no copy of a large ``Y``).

    Returns
    -------
    filtered : ndarray of shape (n_volumes_total, n_columns), float64 (float32 kept)
        For one run, identical to ``highpass(Y, tr, cutoff)``.
    """
    from .preprocessing import highpass

    Y = np.asarray(Y)
    squeeze = Y.ndim == 1
    Y = Y[:, None] if squeeze else Y
    runs = _check_runs(runs, Y.shape[0])
    if not np.issubdtype(Y.dtype, np.floating):
        Y = Y.astype(np.float64)
    elif copy:
        Y = Y.copy()
    for (_, _, tr), s in zip(runs, run_slices(runs)):
        highpass(Y[s], tr, cutoff, copy=False)
    return Y[:, 0] if squeeze else Y


def make_delays_runs(X, runs: Sequence[Run], delays: Sequence[int] = (0,)) -> np.ndarray:
    """FIR delays within each run (:func:`make_delays` per run, zeros at each run's start)."""
    X = np.asarray(X)
    runs = _check_runs(runs, X.shape[0])
    return np.concatenate([make_delays(X[s], tuple(delays)) for s in run_slices(runs)], axis=0)


def story_folds(runs: Sequence[Run]) -> list[tuple[np.ndarray, np.ndarray]]:
    """One (train, test) fold per run: test on the run, train on every other run."""
    runs = _check_runs(runs)
    if len(runs) < 2:
        raise ConfigError(f"leave-one-story-out needs at least 2 stories; {[r[0] for r in runs]} was given.")
    total = np.arange(sum(n for _, n, _ in runs))
    folds = []
    for s in run_slices(runs):
        test = total[s]
        folds.append((np.setdiff1d(total, test), test))
    return folds


@dataclass
class LeaveOneStoryOut:
    """Held-out scores of the ridge trained on the other stories (:func:`leave_one_story_out`).

    Attributes
    ----------
    stories : list of str
        The held-out story of each row.
    r2, r : ndarray of shape (n_stories, n_voxels)
        R² and Pearson r within the held-out story.
    alpha : ndarray of shape (n_stories, n_voxels)
        The alpha each voxel used for each held-out story (inner CV of the training runs).
    scheme : dict
        How it was scored (for provenance).
    """

    stories: list[str]
    r2: np.ndarray
    r: np.ndarray
    alpha: np.ndarray
    scheme: dict = field(default_factory=dict)

    @property
    def r2_mean(self) -> np.ndarray:
        """Mean over held-out stories, shape (n_voxels,)."""
        return self.r2.mean(0)

    @property
    def r_mean(self) -> np.ndarray:
        return self.r.mean(0)


def leave_one_story_out(atoms, Y, runs: Sequence[Run], alphas, *, delays: Sequence[int] = (0,),
                        highpass_cutoff: float | None = 128.0, inner_folds: int = 4, gap: int = 5,
                        filtered: bool = False, progress=None, cancel=None) -> LeaveOneStoryOut:
    """Nested cross-validated ridge scored leave-one-story-out.

    Parameters
    ----------
    atoms : array of shape (n_volumes_total, k)
        Regressors (the atoms' time courses over every story, in run order).
    Y : array of shape (n_volumes_total, n_voxels)
        One subject's fMRI over the same runs.
    runs : list of (name, n_volumes, tr)
    alphas : array of shape (n_alphas,)
    delays : sequence of int
        FIR delays in volumes (within each run).
    highpass_cutoff : float or None
        Cosine high-pass of each run (fMRI and regressors alike).
    inner_folds, gap : int
        The inner contiguous CV over the training runs that picks each voxel's alpha.
    filtered : bool
        ``Y`` is already high-passed per run (skips filtering it again).

    Returns
    -------
    LeaveOneStoryOut
    """
    from .ridge import cv_ridge_scores

    Y = np.asarray(Y)
    X = np.asarray(atoms, np.float64)
    if X.shape[0] != Y.shape[0]:
        raise ShapeError(f"'atoms' has {X.shape[0]} volumes; 'Y' has {Y.shape[0]}.")
    runs = _check_runs(runs, Y.shape[0])
    X = highpass_runs(make_delays_runs(X, runs, delays), runs, highpass_cutoff)
    if not filtered:
        Y = highpass_runs(Y, runs, highpass_cutoff)
    scores = cv_ridge_scores(X, Y, story_folds(runs), np.asarray(alphas, np.float64), inner_folds=inner_folds,
                             gap=gap, progress=progress, cancel=cancel)
    return LeaveOneStoryOut(
        stories=[r[0] for r in runs], r2=np.asarray(scores.r2_folds), r=np.asarray(scores.r_folds),
        alpha=np.asarray(scores.alpha_folds),
        scheme=loso_scheme(runs, delays, highpass_cutoff, inner_folds=inner_folds, gap=gap))


def loso_scheme(runs: Sequence[Run], delays=(0,), highpass_cutoff: float | None = 128.0, *,
                inner_folds: int = 4, gap: int = 5) -> dict:
    """How :func:`leave_one_story_out` scores, as recorded in provenance and summary."""
    return {"cv": "leave-one-story-out", "folds": [str(r[0]) for r in runs],
            "train": "every other story",
            "inner_cv": f"{inner_folds} contiguous folds of the training runs, gap {gap} volumes, picks each "
                        "voxel's alpha",
            "preprocessing": f"cosine high-pass ({highpass_cutoff} s) and trend per run, FIR delays "
                             f"{list(delays)} within each run",
            "score": "R2 and r within the held-out story (r2_loso_stories); r2_loso: their mean"}
