"""What is not the planted signal: AR(1) noise by tissue, spontaneous fluctuations, drifts.

The noise's AR(1) coefficient follows a grey-matter proxy of the MNI152 T1 template
(:func:`grey_matter_fraction`); every network of the fluctuation atlases carries its
own BOLD-like course (white events through the canonical HRF); slow drifts are the two
slowest cosines of each run.
"""

from __future__ import annotations

import warnings

import numpy as np

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
