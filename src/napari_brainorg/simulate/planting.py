"""The planted signal: each voxel sees its sources through its own HRF variant.

A voxel's HRF is the canonical one delayed and widened by a Gaussian
(:func:`_hrf_variant`), with delay and dispersion smooth over voxels and quantised to
``HRF_STEP_S``; the links' weights are log-normal with median 1 (log SD ``WEIGHT_LOG_SD``).
"""

from __future__ import annotations

import numpy as np

WEIGHT_LOG_SD = 0.5

HRF_STEP_S = 0.25


def _hrf_variant(z: np.ndarray, delay_s: float, dispersion_s: float, tr: float) -> np.ndarray:
    """Time courses as through an HRF delayed by ``delay_s`` and widened by a Gaussian.

    The sources are already convolved with the canonical HRF; convolving them with a
    shifted Gaussian of SD ``dispersion_s`` equals convolving the underlying events
    with the canonical HRF delayed and dispersed that way. Edges are held constant.
    """
    from scipy.ndimage import gaussian_filter1d

    t = np.arange(z.shape[0]) * tr
    out = np.empty_like(z)
    for j in range(z.shape[1]):
        out[:, j] = np.interp(t - delay_s, t, z[:, j])
    if dispersion_s > 0:
        out = gaussian_filter1d(out, dispersion_s / tr, axis=0, mode="nearest")
    return out
