"""NIfTI images as inputs: reading them, the analysis mask, and bringing arrays onto its grid.

- :func:`expand_images` turns what nilearn accepts as images (a path, an image, a glob
  pattern, a list mixing them) into a list of runs.
- :func:`load_mask` gives the analysis mask as a 3D uint8 image (``"mni"``: the bundled
  FSL MNI152 2 mm brain mask).
- :func:`to_grid` brings a 3D or 4D array onto a target grid: unchanged on the same grid,
  reoriented exactly when only axis order or direction differ, otherwise resampled by
  nilearn (noted, and warned with :class:`~napari_brainorg.errors.ResamplingWarning`).

Re-exported by :mod:`napari_brainorg.io.fmri`, which reads fMRI runs with them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import FMRIInputError, ResamplingWarning, ShapeError

if TYPE_CHECKING:  # pragma: no cover
    import nibabel

__all__ = ["expand_images", "load_mask", "same_grid", "to_grid"]

#: Volumes resampled at once: bounds the memory of a resampled run.
_RESAMPLE_CHUNK = 32


def _as_list(x) -> list:
    if isinstance(x, (str, os.PathLike)) or not isinstance(x, Sequence):
        return [x]
    return list(x)


def expand_images(images) -> list:
    """What nilearn accepts as images, as a list of runs.

    A path, a ``Nifti1Image``, a glob pattern (``"sub-*_bold.nii.gz"``: the matching
    files, sorted), or a list mixing them (glob patterns expanded in place).

    Raises
    ------
    FileNotFoundError
        A glob pattern that matches no file.
    """
    import glob

    out = []
    for item in _as_list(images):
        text = os.fspath(item) if isinstance(item, (str, os.PathLike)) else None
        if text is not None and glob.has_magic(text) and not Path(text).exists():
            matches = sorted(glob.glob(os.path.expanduser(text)))
            if not matches:
                raise FileNotFoundError(f"No file matches the pattern {text!r}.")
            out.extend(matches)
        else:
            out.append(item)
    return out


def _load_img(img, what: str):
    import nibabel as nib

    if isinstance(img, (str, os.PathLike)):
        path = Path(img)
        if not path.is_file():
            raise FileNotFoundError(f"{what} {str(path)!r} does not exist.")
        try:
            return nib.load(str(path))
        except Exception as exc:  # nibabel raises several types for unreadable files
            raise FMRIInputError(f"{what} {str(path)!r} cannot be read as NIfTI: {type(exc).__name__}: {exc}") from exc
    if isinstance(img, nib.spatialimages.SpatialImage):
        return img
    raise TypeError(f"{what} must be a NIfTI path or a nibabel image; got {type(img).__name__}.")


def _name(img, fallback: str) -> str:
    if isinstance(img, (str, os.PathLike)):
        return Path(img).name
    fname = getattr(img, "get_filename", lambda: None)()
    return Path(fname).name if fname else fallback


def load_mask(mask="mni") -> nibabel.Nifti1Image:
    """The analysis mask as a 3D uint8 image.

    Parameters
    ----------
    mask : "mni", path, nibabel image or fitted nilearn masker
        ``"mni"``: the bundled FSL MNI152 2 mm brain mask (91×109×91, LAS). Any other
        3D image is binarised (value > 0); a 4D image with one volume is accepted; a
        fitted masker (``NiftiMasker``) gives its ``mask_img_``.
    """
    import nibabel as nib

    if hasattr(mask, "mask_img_"):  # a fitted nilearn masker
        mask = mask.mask_img_

    if isinstance(mask, str) and mask == "mni":
        from ..datasets import mni_mask_path

        mask = str(mni_mask_path())
    img = _load_img(mask, "mask")
    data = np.asarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ShapeError(
            f"The mask {_name(mask, 'image')!r} must be 3D; got shape {data.shape}."
        )
    binary = (np.nan_to_num(data) > 0).astype(np.uint8)
    if not binary.any():
        raise FMRIInputError(f"The mask {_name(mask, 'image')!r} has no non-zero voxel.")
    out = nib.Nifti1Image(binary, img.affine)
    # the mask stays in its image's space (4: MNI for the bundled one; 2, aligned, when unknown)
    header = getattr(img, "header", {})
    code = int(header.get("sform_code", 0) or header.get("qform_code", 0) or 2) if hasattr(header, "get") else 2
    out.set_qform(img.affine, code=code)
    out.set_sform(img.affine, code=code)
    return out


def same_grid(affine_a, shape_a, affine_b, shape_b, atol: float = 1e-3) -> bool:
    """True when two images share their voxel grid (shape and affine)."""
    return tuple(shape_a[:3]) == tuple(shape_b[:3]) and np.allclose(affine_a, affine_b, atol=atol)


def _reorientation(src_affine, src_shape, dst_affine, dst_shape, atol: float = 1e-3):
    """Axis permutation and flips mapping the source grid onto the target grid exactly.

    Returns ``(perm, flips)`` such that ``np.flip(np.transpose(src, perm), flips)`` is
    on the target grid, or ``None`` when the grids differ by more than axis order and
    direction (voxel size, shift, rotation, field of view).
    """
    t = np.linalg.inv(dst_affine) @ src_affine  # source voxel -> target voxel
    rot, shift = t[:3, :3], t[:3, 3]
    rounded = np.round(rot)
    if not np.allclose(rot, rounded, atol=atol) or not np.allclose(shift, np.round(shift), atol=atol):
        return None
    if not (np.abs(rounded).sum(axis=0) == 1).all() or not (np.abs(rounded).sum(axis=1) == 1).all():
        return None
    perm, flips = [], []
    for j in range(3):  # target axis j takes source axis i
        i = int(np.flatnonzero(rounded[j])[0])
        sign = rounded[j, i]
        n_src, n_dst = src_shape[i], dst_shape[j]
        if n_src != n_dst:
            return None
        offset = round(shift[j])
        # index_dst = sign * index_src + offset must map 0..n-1 onto 0..n-1
        if sign > 0 and offset != 0:
            return None
        if sign < 0 and offset != n_dst - 1:
            return None
        perm.append(i)
        if sign < 0:
            flips.append(j)
    return perm, tuple(flips)


def to_grid(data: np.ndarray, src_affine, target_img, *, interpolation: str = "continuous",
            what: str = "image", notes: list[str] | None = None, warn: bool = True,
            stacklevel: int = 3) -> np.ndarray:
    """Bring a 3D or 4D array from its grid onto ``target_img``'s grid.

    Same grid: returned as is. Same voxels in another axis order or direction (e.g.
    RAS vs the LAS of the FSL MNI152 grid): reoriented exactly, noted. Otherwise
    resampled with nilearn (``interpolation``: "continuous" or "nearest"), noted and
    warned with :class:`~napari_brainorg.errors.ResamplingWarning`.

    ``interpolation``: "continuous" (cubic spline), "linear" or "nearest" (labels).

    Parameters
    ----------
    data : ndarray of shape (x, y, z) or (x, y, z, t)
    src_affine : ndarray of shape (4, 4)
    target_img : nibabel image
        3D image whose grid (shape and affine) is the target.
    """
    import nibabel as nib

    dst_shape = target_img.shape[:3]
    dst_affine = target_img.affine
    if same_grid(src_affine, data.shape, dst_affine, dst_shape):
        return data
    ornt = _reorientation(src_affine, data.shape[:3], dst_affine, dst_shape)
    if ornt is not None:
        perm, flips = ornt
        out = np.transpose(data, list(perm) + list(range(3, data.ndim)))
        if flips:
            out = np.flip(out, flips)
        if notes is not None:
            notes.append(f"{what}: reoriented to the mask grid (axes {perm}, flipped {list(flips)}); "
                         "same voxels, no interpolation.")
        return np.ascontiguousarray(out)

    from nilearn.image import resample_img

    src_zooms = np.sqrt((np.asarray(src_affine)[:3, :3] ** 2).sum(0))
    dst_zooms = np.sqrt((np.asarray(dst_affine)[:3, :3] ** 2).sum(0))
    msg = (f"{what}: resampled ({interpolation}) from its grid {tuple(data.shape[:3])} "
           f"({_fmt_zooms(src_zooms)} mm) to the mask grid {tuple(dst_shape)} "
           f"({_fmt_zooms(dst_zooms)} mm).")
    if warn:
        warnings.warn(msg, ResamplingWarning, stacklevel=stacklevel)
    if notes is not None:
        notes.append(msg)

    def _resample(block):
        img = nib.Nifti1Image(block, src_affine)
        with warnings.catch_warnings():
            # nilearn's own notes about resampling (and NaN handling) are covered by ours
            warnings.simplefilter("ignore")
            res = resample_img(img, target_affine=dst_affine, target_shape=dst_shape,
                               interpolation=interpolation, force_resample=True,
                               copy_header=True)
        return np.asarray(res.dataobj)

    if data.ndim == 3:
        out = _resample(data)
        return out.astype(data.dtype) if interpolation == "nearest" else out.astype(np.float32, copy=False)
    out = np.empty(tuple(dst_shape) + data.shape[3:], dtype=np.float32)
    for start in range(0, data.shape[3], _RESAMPLE_CHUNK):
        stop = min(start + _RESAMPLE_CHUNK, data.shape[3])
        out[..., start:stop] = _resample(data[..., start:stop])
    return out


def _fmt_zooms(z) -> str:
    return "×".join(f"{v:g}" for v in np.round(z, 3))
