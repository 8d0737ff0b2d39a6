"""Chance levels of held-out scores, one per feature set, and what one set adds to another.

A richer feature set reaches a higher held-out r by chance alone: the ridge picks each
voxel's α on the training folds, and more regressors fit more of the training noise that
happens to carry over. A comparison between feature sets (a model's atoms against the
nuisance regressors, say) must therefore subtract each set's own chance level (METHOD
§4b). The chance level here is measured as the test measures the real fit: the features
are shifted circularly in time (each keeps its autocorrelation; only the lock to the
story is broken), and the whole nested cross-validation runs again on the shifted
features, α chosen again in every draw.

The same draws serve "what the atoms add beyond the nuisance regressors": the joint model
(atoms and nuisance regressors) is refitted with only the atoms shifted, so the chance
level of the gain is the gain that shifted atoms bring to the same nuisance regressors.

When every column of the design is shifted, the fMRI is shifted instead (by the opposite
amount: the same lock between features and fMRI is broken, the folds then hold the
design's own volumes): the design's factorisations serve every draw, and all draws run
as one fit of the stacked shifted fMRI, each column with its own α chosen again.

Scores are summarised by their median over voxels (or regions); with many voxels a fixed
random subset (:func:`summary_voxels`, the same for every subject and feature set) keeps
the draws cheap while estimating that median.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._progress import check_cancel
from ..errors import ShapeError
from .inference import circular_shift_draws
from .ridge import cv_ridge_scores

__all__ = ["HeldOutChance", "held_out_chance", "summary_voxels"]


def summary_voxels(n_voxels: int, max_voxels: int = 2000, random_state=0) -> np.ndarray:
    """The voxels whose median scores summarise a subject: all of them, or at most
    ``max_voxels`` drawn once (sorted indices; the same draw for the same arguments).

    Parameters
    ----------
    n_voxels : int
    max_voxels : int, default 2000
    random_state : int or numpy Generator, default 0

    Returns
    -------
    ndarray of int of shape (min(n_voxels, max_voxels),)
    """
    n_voxels, max_voxels = int(n_voxels), int(max_voxels)
    if max_voxels < 1:
        raise ValueError(f"'max_voxels' must be at least 1; {max_voxels} was provided.")
    if n_voxels <= max_voxels:
        return np.arange(n_voxels)
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(n_voxels, size=max_voxels, replace=False))


@dataclass
class HeldOutChance:
    """A feature set's held-out r on some voxels, beside the same under circular shifts.

    Attributes
    ----------
    observed : ndarray of shape (n_voxels,)
        Held-out r of the unshifted features (mean over outer folds), minus ``reference``.
    draws : ndarray of shape (n_shifts,)
        Median over voxels of the held-out r (minus ``reference``) of each shifted draw.
    shifts : ndarray of int of shape (n_shifts,)
        The circular shifts, in volumes.
    """

    observed: np.ndarray
    draws: np.ndarray
    shifts: np.ndarray

    @property
    def median(self) -> float:
        """Median over voxels of the observed (unshifted) score."""
        return float(np.median(self.observed))

    @property
    def chance(self) -> float:
        """The chance level of that median: its mean over the shifted draws."""
        return float(np.mean(self.draws))


def held_out_chance(design, Y, folds, alphas, *, n_shifts: int = 20, shifted=None, reference=None,
                    gap: int = 5, inner_folds: int = 4, min_shift: int | None = None, random_state=None,
                    cancel=None) -> HeldOutChance:
    """Held-out r of a feature set and its chance level by circular shifts, α chosen again.

    Parameters
    ----------
    design : array of shape (n_volumes, n_features)
        The regressors as the encoding model reads them (delayed, filtered like ``Y``).
    Y : array of shape (n_volumes, n_voxels)
        The fMRI of the summary voxels, filtered.
    folds : list of (train, test)
        The real fit's outer folds.
    alphas : array of shape (n_alphas,)
        The α grid; every draw runs the same inner cross-validation over it.
    n_shifts : int, default 20
    shifted : array of bool of shape (n_features,), optional
        The columns that are shifted (default all): e.g. the atoms' columns of a joint
        model of atoms and nuisance regressors, whose nuisance columns stay in place.
    reference : array of shape (n_voxels,), optional
        Subtracted from every voxel's r before the median (e.g. the nuisance model's r,
        so that the scores are the atoms' gain over it).
    gap, inner_folds
        As in :func:`~napari_brainorg.encoding.ridge.cv_ridge_scores`.
    min_shift : int, optional
        Smallest shift (default a tenth of the volumes, far beyond the HRF).
    random_state : int or numpy Generator, optional
        Seeds the shifts: give every subject and feature set the same seed, since the
        story is shared.
    cancel : object with ``is_set()``, optional

    Returns
    -------
    HeldOutChance
    """
    design = np.asarray(design, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if design.ndim != 2 or Y.ndim != 2 or design.shape[0] != Y.shape[0]:
        raise ShapeError(f"'design' (n_volumes, n_features) and 'Y' (n_volumes, n_voxels) must have the same "
                         f"number of volumes; shapes {design.shape} and {Y.shape} were provided.")
    columns = np.ones(design.shape[1], bool) if shifted is None else np.asarray(shifted, bool)
    if columns.shape != (design.shape[1],):
        raise ShapeError(f"'shifted' must have one entry per column of 'design' ({design.shape[1]}); "
                         f"shape {columns.shape} was provided.")
    base = 0.0 if reference is None else np.asarray(reference, dtype=np.float64)

    def score(X, Ys=Y):
        return cv_ridge_scores(X, Ys, folds, alphas, inner_folds=inner_folds, gap=gap, cancel=cancel).r

    shifts = circular_shift_draws(design.shape[0], n_shifts, min_shift=min_shift, random_state=random_state)
    draws = np.empty(len(shifts))
    if columns.all():
        # the fMRI shifted back instead of every feature forward: one design, one fit of
        # the stacked draws (each column its own alpha)
        stacked = np.concatenate([Y] + [np.roll(Y, -int(shift), axis=0) for shift in shifts], axis=1)
        scores = score(design, stacked).reshape(len(shifts) + 1, Y.shape[1]) - base
        observed = scores[0]
        draws[:] = np.median(scores[1:], axis=1)
        return HeldOutChance(observed=np.asarray(observed, np.float64), draws=draws, shifts=np.asarray(shifts))
    observed = score(design) - base
    for i, shift in enumerate(shifts):
        check_cancel(cancel)
        moved = design.copy()
        moved[:, columns] = np.roll(design[:, columns], int(shift), axis=0)
        draws[i] = np.median(score(moved) - base)
    return HeldOutChance(observed=np.asarray(observed, np.float64), draws=draws, shifts=np.asarray(shifts))
