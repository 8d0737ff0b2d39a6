"""Simulated subjects and the labelled images they are written as.

:class:`SimulatedFMRI` holds what :func:`~napari_brainorg.simulate.simulate_fmri`
made; every image built from it (:func:`unmask_to_image`) carries
``descrip = 'napari-brainorg SIMULATED'`` in its NIfTI header. The simulation's grid
is its mask's, resampled to an isotropic voxel size by :func:`resample_mask` when the
plan asks for one.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ShapeError

SIMULATED_DESCRIP = "napari-brainorg SIMULATED"


@dataclass
class SimulatedFMRI:
    """Simulated subjects and their ground truth.

    Attributes
    ----------
    data : list of ndarray of shape (n_volumes, n_voxels), float32
        Each subject's BOLD inside the mask (voxels in C order of the mask, as
        nilearn's maskers give them).
    mask_img : nibabel.Nifti1Image
        The mask (its grid is the data grid).
    truth : dict
        JSON-ready ground truth (``"simulated": True``, links, expected links...).
    subjects : list of str
        ``sub-01``, ``sub-02``...
    true_r2 : ndarray of shape (n_subjects, n_voxels), float32
        True R² of the planted signal (0 outside planted networks).
    signal_voxels : ndarray of bool, shape (n_voxels,)
    planted : list of (int, str, str, int)
        The planted links: (source, atlas, network, sign).
    link_masks : ndarray of bool, shape (n_links, n_voxels)
        The voxels of each planted link's network.
    sources : ndarray of shape (n_volumes, n_sources)
        The planting time courses (as given).
    tr : float
    ar1 : ndarray of shape (n_voxels,)
        AR(1) coefficient of each voxel's noise.
    grey_matter : ndarray of shape (n_voxels,)
        Grey-matter fraction (the tissue proxy).
    hrf_delay, hrf_dispersion : ndarray of shape (n_subjects, n_voxels)
        Each voxel's HRF delay and extra dispersion (s).
    fluctuation_names : list of str
        ``atlas:network`` of each fluctuating network.
    fluctuation_courses : ndarray of shape (n_subjects, n_volumes, n_networks)
    components : list of dict or None
        With ``keep_components=True``: per subject ``signal``, ``noise`` (AR),
        ``fluctuations``, ``drift`` (n_volumes × n_voxels, image units) and
        ``baseline`` (n_voxels,), so that data = baseline + signal + noise +
        fluctuations + drift.
    """

    data: list[np.ndarray]
    mask_img: object
    truth: dict
    subjects: list[str]
    true_r2: np.ndarray
    signal_voxels: np.ndarray
    planted: list
    link_masks: np.ndarray
    sources: np.ndarray
    tr: float
    ar1: np.ndarray
    grey_matter: np.ndarray
    hrf_delay: np.ndarray
    hrf_dispersion: np.ndarray
    fluctuation_names: list[str]
    fluctuation_courses: np.ndarray
    components: list[dict] | None = None

    @property
    def images(self) -> _SubjectImages:
        """The subjects' 4D NIfTI images, built one at a time when indexed.

        A sequence (``len``, indexing, iteration) rather than a list so that only
        the image being used occupies memory (a 2 mm MNI run of 300 volumes is
        about 1 GB as float32).
        """
        return _SubjectImages(self)


class _SubjectImages(Sequence):
    def __init__(self, sim: SimulatedFMRI):
        self._sim = sim

    def __len__(self) -> int:
        return len(self._sim.data)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return unmask_to_image(self._sim.data[i], self._sim.mask_img, tr=self._sim.tr)


def _labelled_header(img, tr: float | None = None, code: int | None = None):
    """Label an image as simulated; say its space (sform/qform ``code``: the mask's, 4 on the
    MNI template), units (mm; s for a time series: ``tr`` given) and TR."""
    from ..io._naming import set_map_header

    hdr = img.header
    time_series = tr is not None and len(img.shape) == 4
    set_map_header(img, code=code, description=SIMULATED_DESCRIP, time_series=time_series)
    if time_series:
        zooms = hdr.get_zooms()
        hdr.set_zooms(tuple(zooms[:3]) + (float(tr),))
    return img


def xform_code(img) -> int | None:
    """The space code of an image's header (sform, else qform), None when it has none."""
    return int(img.header["sform_code"]) or int(img.header["qform_code"]) or None


def unmask_to_image(values, mask_img, *, tr: float | None = None):
    """Put masked values back on the mask's grid, as a labelled NIfTI image.

    Parameters
    ----------
    values : ndarray of shape (n_voxels,) or (n_images, n_voxels)
    mask_img : nibabel.Nifti1Image
    tr : float, optional
        Written as the 4th zoom of 4D images.

    Returns
    -------
    img : nibabel.Nifti1Image
        3D (float32) for 1D ``values``, 4D otherwise; header descrip
        ``'napari-brainorg SIMULATED'``.
    """
    import nibabel as nib

    mask = np.asarray(mask_img.dataobj) > 0
    values = np.asarray(values, dtype=np.float32)
    n_vox = int(mask.sum())
    if values.shape[-1] != n_vox:
        raise ShapeError(f"'values' has {values.shape[-1]} voxels; the mask has {n_vox}.")
    if values.ndim == 1:
        out = np.zeros(mask.shape, np.float32)
        out[mask] = values
    else:
        out = np.zeros(mask.shape + (values.shape[0],), np.float32)
        out[mask] = values.T
    img = nib.Nifti1Image(out, mask_img.affine)
    return _labelled_header(img, tr, code=xform_code(mask_img))


def _voxel_sizes(affine) -> np.ndarray:
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def resample_mask(mask_img, resolution_mm: float):
    """Resample a binary mask to isotropic ``resolution_mm`` voxels, same orientation.

    The new grid covers the same field of view; a new voxel is in the mask when at
    least half of it was (linear interpolation, threshold 0.5).

    Parameters
    ----------
    mask_img : nibabel.Nifti1Image (3D)
    resolution_mm : float

    Returns
    -------
    mask_img : nibabel.Nifti1Image of uint8
    """
    import nibabel as nib
    from nilearn.image import resample_img

    affine = np.asarray(mask_img.affine, dtype=float)
    sizes = _voxel_sizes(affine)
    if np.allclose(sizes, resolution_mm):
        return nib.Nifti1Image((np.asarray(mask_img.dataobj) > 0).astype(np.uint8), affine)
    scale = resolution_mm / sizes
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, :3] * scale
    # Voxel (0,0,0) of the new grid is centred on the old grid's corner block.
    new_affine[:3, 3] = affine[:3, :3] @ ((scale - 1.0) / 2.0) + affine[:3, 3]
    new_shape = tuple(int(math.ceil(n / s)) for n, s in zip(mask_img.shape[:3], scale))
    as_float = nib.Nifti1Image((np.asarray(mask_img.dataobj) > 0).astype(np.float32), affine)
    with warnings.catch_warnings():
        # Linear interpolation of the 0/1 mask then a 0.5 cut is the intended
        # "at least half of the new voxel was brain" rule.
        warnings.filterwarnings("ignore", message="Resampling binary images", category=UserWarning)
        resampled = resample_img(as_float, target_affine=new_affine, target_shape=new_shape,
                                 interpolation="linear", force_resample=True, copy_header=True)
    data = (np.asarray(resampled.dataobj) >= 0.5).astype(np.uint8)
    return nib.Nifti1Image(data, new_affine)


def _simulation_mask(mask_img, resolution_mm: float | None):
    """The simulation's grid: the brain mask, binarised, resampled and labelled as simulated.

    Parameters
    ----------
    mask_img : nibabel.Nifti1Image, path or None
        A 3D brain mask; None for the bundled FSL MNI152 2 mm brain mask.
    resolution_mm : float or None
        Resample the mask to this isotropic voxel size (:func:`resample_mask`); None
        keeps its grid.

    Returns
    -------
    mask_img : nibabel.Nifti1Image of uint8
    mask : ndarray of bool, shape (nx, ny, nz)
    """
    import nibabel as nib

    if mask_img is None:
        from ..datasets import mni_mask_path

        mask_img = mni_mask_path()
    mask_img = nib.load(str(mask_img)) if isinstance(mask_img, (str, os.PathLike)) else mask_img
    if len(mask_img.shape) != 3:
        raise ShapeError(f"'mask_img' must be a 3D image; shape {mask_img.shape} was provided.")
    code = xform_code(mask_img)  # the grid stays in the mask's space (MNI for the bundled one)
    if resolution_mm is not None:
        mask_img = resample_mask(mask_img, resolution_mm)
    else:
        mask_img = nib.Nifti1Image((np.asarray(mask_img.dataobj) > 0).astype(np.uint8), mask_img.affine)
    _labelled_header(mask_img, code=code)
    mask = np.asarray(mask_img.dataobj) > 0
    if int(mask.sum()) == 0:
        raise ShapeError("'mask_img' holds no voxel.")
    return mask_img, mask
