"""What is not the planted signal: AR(1) noise by tissue, spontaneous fluctuations, drifts.

The noise's AR(1) coefficient follows a grey-matter proxy of the MNI152 T1 template
(:func:`grey_matter_fraction`); every network of the fluctuation atlases carries its
own BOLD-like course (white events through the canonical HRF); slow drifts are the two
slowest cosines of each run.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._progress import check_cancel, report
from .fields import _FieldMaker
from .sources import _zscore


def _block_diagonal(blocks: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)))
    r = c = 0
    for b in blocks:
        out[r:r + b.shape[0], c:c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    return out


def _drift_basis(n_volumes: int) -> np.ndarray:
    """The two slowest DCT-II cosines (periods 2T and T volumes), unit variance."""
    t = np.arange(n_volumes)
    basis = np.stack([np.cos(np.pi * j * (t + 0.5) / n_volumes) for j in (1, 2)], axis=1)
    return basis / basis.std(axis=0)


GM_PERCENTILES = (15.0, 60.0)


def grey_matter_fraction(mask_img) -> np.ndarray:
    """A grey-matter proxy from the bundled MNI152 T1 template, on the mask's voxels.

    The T1 template's in-brain intensity histogram has three modes (CSF dark, grey
    matter middle, white matter bright); voxels between its 15th and 60th percentiles
    are called grey matter. The 2 mm indicator is brought onto the mask's grid by
    linear interpolation, so a coarse voxel gets its grey-matter fraction.

    Returns
    -------
    fraction : ndarray of shape (n_voxels,), float32 in [0, 1]
    """
    import nibabel as nib

    from ..datasets import mni_template_path
    from ..io.fmri import to_grid

    tpl = nib.load(str(mni_template_path()))
    t1 = np.asarray(tpl.dataobj, dtype=np.float32)
    brain = t1[t1 > 0]
    lo, hi = np.percentile(brain, GM_PERCENTILES)
    grey = ((t1 >= lo) & (t1 <= hi)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onto a coarser simulation grid on purpose
        on_grid = to_grid(grey, tpl.affine, mask_img, interpolation="linear", warn=False)
    mask = np.asarray(mask_img.dataobj) > 0
    return np.clip(on_grid[mask], 0.0, 1.0).astype(np.float32)


def _fluctuation_courses(rng, n_volumes: int, n: int, tr: float) -> np.ndarray:
    """Independent spontaneous BOLD-like courses: white events through the canonical HRF."""
    from ..features.alignment import hrf_kernel

    if n == 0:
        return np.zeros((n_volumes, 0))
    hrf = hrf_kernel("glover", tr, oversampling=1)
    pad = len(hrf)
    events = rng.standard_normal((n_volumes + pad, n))
    out = np.stack([np.convolve(events[:, j], hrf)[pad:pad + n_volumes] for j in range(n)], axis=1)
    return _zscore(out)


def _ar1_by_tissue(mask_img, ar1_grey: float, ar1_other: float):
    """Each voxel's AR(1) coefficient, from its grey-matter fraction.

    Returns
    -------
    grey : ndarray of shape (n_voxels,), float32
        Grey-matter fraction (:func:`grey_matter_fraction`).
    rho : ndarray of shape (n_voxels,), float32
        ``ar1_other + (ar1_grey - ar1_other) * grey``.
    innovation : ndarray of shape (n_voxels,), float32
        ``sqrt(1 - rho²)``, the innovations' scale that keeps the noise at unit variance.
    """
    grey = grey_matter_fraction(mask_img)
    rho = (ar1_other + (ar1_grey - ar1_other) * grey).astype(np.float32)
    innovation = np.sqrt(1.0 - rho * rho).astype(np.float32)
    return grey, rho, innovation


def _fluctuation_weights(fl_maps: np.ndarray, share: float):
    """How much each voxel takes of each network's fluctuation, and what is left to the AR noise.

    A voxel's weights are its maps' values, scaled down where their squares sum past 1,
    so that fluctuations (``share`` of the variance at most) and AR noise add up to unit
    variance.

    Parameters
    ----------
    fl_maps : ndarray of shape (n_networks, n_voxels)
        :func:`~napari_brainorg.simulate.networks._fluctuation_maps`' maps (max 1).
    share : float
        ``plan.fluctuation_share``.

    Returns
    -------
    fl_weights : ndarray of shape (n_networks, n_voxels), float32
    ar_scale : ndarray of shape (n_voxels,), float32
        The AR noise's scale.
    """
    fl_norm = np.sqrt(np.maximum(1.0, (fl_maps**2).sum(axis=0)))
    fl_weights = (fl_maps / fl_norm).astype(np.float32)
    fl_var = (fl_weights**2).sum(axis=0)  # <= 1
    ar_scale = np.sqrt(np.clip(1.0 - share * fl_var, 0.0, 1.0)).astype(np.float32)
    return fl_weights, ar_scale


def _ar1_noise(rng, fields: _FieldMaker, fwhm_mm: float, setup: tuple, rho, innovation, ar_scale,
               n_volumes: int, run_starts: set[int], *, progress=None, cancel=None, done: int = 0,
               total: int = 0) -> np.ndarray:
    """One subject's AR(1) noise in time, with a per-voxel coefficient, on smooth innovations.

    Parameters
    ----------
    rng : numpy.random.Generator
        The subject's generator: one smooth field per volume.
    fields : _FieldMaker
    fwhm_mm : float
        Spatial smoothness of the innovations (``plan.smoothness_fwhm_mm``).
    setup : tuple
        ``fields.setup(fwhm_mm)``.
    rho, innovation, ar_scale : ndarray of shape (n_voxels,), float32
        AR(1) coefficient, innovations' scale (:func:`_ar1_by_tissue`) and the noise's
        final scale (:func:`_fluctuation_weights`).
    n_volumes : int
    run_starts : set of int
        First volumes of the runs after the first: each story is a scan of its own,
        whose noise starts afresh from the stationary distribution.
    progress, cancel
        Progress callback (stage ``"simulate"``, ``done + t`` of ``total``) and cancel token.

    Returns
    -------
    noise : ndarray of shape (n_volumes, n_voxels), float32
    """
    noise = np.empty((n_volumes, rho.shape[0]), np.float32)
    state = fields.field(rng, fwhm_mm, setup)
    for t in range(n_volumes):
        if t in run_starts:
            state = fields.field(rng, fwhm_mm, setup)
        elif t:
            state = rho * state + innovation * fields.field(rng, fwhm_mm, setup)
        noise[t] = state
        if t % 16 == 0:
            check_cancel(cancel)
            report(progress, "simulate", done + t, total)
    noise *= ar_scale
    return noise


def _subject_fluctuations(rng, runs: list[tuple[str, int, float]], fl_weights: np.ndarray, share: float):
    """One subject's spontaneous network fluctuations, each run's courses drawn afresh.

    Parameters
    ----------
    rng : numpy.random.Generator
        The subject's generator.
    runs : list of (name, n_volumes, tr)
    fl_weights : ndarray of shape (n_networks, n_voxels), float32
        :func:`_fluctuation_weights`' weights.
    share : float
        ``plan.fluctuation_share``.

    Returns
    -------
    courses : ndarray of shape (n_volumes, n_networks), float32
        Every network's course, z-scored within each run.
    fluctuations : ndarray of shape (n_volumes, n_voxels), float32
    """
    n_networks, n_voxels = fl_weights.shape
    courses = np.concatenate([_fluctuation_courses(rng, v, n_networks, t) for _, v, t in runs]).astype(np.float32)
    if not n_networks:
        return courses, np.zeros((courses.shape[0], n_voxels), np.float32)
    return courses, (math.sqrt(share) * courses) @ fl_weights
