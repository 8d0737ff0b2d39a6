"""Smooth Gaussian random fields on the mask: the spatial patterns and noise volumes."""

from __future__ import annotations

import math

import numpy as np

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


class _FieldMaker:
    """Smooth Gaussian random fields and noise volumes on the mask's bounding box.

    Fields are drawn on the mask's bounding box padded by the kernel's reach, so a
    voxel's value never depends on where the grid ends, then divided by the
    kernel's L2 norm so every in-mask value has unit variance.
    """

    def __init__(self, mask: np.ndarray, voxel_sizes: np.ndarray):
        self.mask = mask
        self.voxel_sizes = voxel_sizes
        nz = np.nonzero(mask)
        self.lo = np.array([a.min() for a in nz])
        self.hi = np.array([a.max() for a in nz]) + 1

    def sigma(self, fwhm_mm: float) -> np.ndarray:
        return fwhm_mm * FWHM_TO_SIGMA / self.voxel_sizes

    def setup(self, fwhm_mm: float):
        """Padded box shape, in-box mask index and normalising factor for a FWHM."""
        from scipy.ndimage import gaussian_filter

        sigma = self.sigma(fwhm_mm)
        reach = np.ceil(4.0 * sigma).astype(int)
        box = tuple((self.hi - self.lo + 2 * reach).tolist())
        inner = np.zeros(box, bool)
        sl = tuple(slice(r, r + (h - l)) for r, l, h in zip(reach, self.lo, self.hi))
        inner[sl] = self.mask[tuple(slice(l, h) for l, h in zip(self.lo, self.hi))]
        if fwhm_mm > 0:
            kshape = tuple(2 * reach + 1)
            delta = np.zeros(kshape)
            delta[tuple(reach)] = 1.0
            kernel = gaussian_filter(delta, sigma, mode="constant", truncate=4.0)
            norm = float(np.sqrt((kernel**2).sum()))
        else:
            norm = 1.0
        return box, inner, sigma, norm

    def fields(self, rng: np.random.Generator, n: int, fwhm_mm: float) -> np.ndarray:
        """``n`` independent smooth unit-variance fields, masked: (n, n_voxels)."""
        setup = self.setup(fwhm_mm)
        out = np.empty((n, int(setup[1].sum())), np.float32)
        for i in range(n):
            out[i] = self.field(rng, fwhm_mm, setup)
        return out

    def field(self, rng: np.random.Generator, fwhm_mm: float, setup: tuple) -> np.ndarray:
        """One smooth unit-variance field on the mask's voxels.

        Parameters
        ----------
        rng : numpy.random.Generator
            Draws one standard normal volume of the padded box.
        fwhm_mm : float
        setup : tuple
            :meth:`setup`'s answer for ``fwhm_mm``, computed once for many fields.

        Returns
        -------
        field : ndarray of shape (n_voxels,), float32
        """
        box, inner, sigma, norm = setup
        return _smooth(rng.standard_normal(box, dtype=np.float32), sigma, fwhm_mm)[inner] / norm


def _smooth(volume: np.ndarray, sigma: np.ndarray, fwhm_mm: float) -> np.ndarray:
    if fwhm_mm <= 0:
        return volume
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(volume, sigma, mode="constant", truncate=4.0, output=np.float32)
