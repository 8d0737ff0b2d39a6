"""napari writer: an image layer saved as NIfTI, in the world coordinates it is shown in.

The layer's affine (napari's ``(z, y, x)`` world) is turned back into the NIfTI
voxel-to-world affine, and the data back into the file's ``(i, j, k[, t])`` order, so a
map opened from NIfTI and saved again is the same image on the same grid. When the layer
came from a NIfTI file (the reader records its path) or from a result folder (atom maps,
R² maps), that file's header is kept: units, codes, intent and description.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import layers as _layers

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _source_header(metadata: dict):
    """The header of the NIfTI file a layer was read from, or ``None``."""
    import nibabel as nib

    source = metadata.get("path")
    if source is None and metadata.get(_layers.RESULT) and metadata.get(_layers.MODEL):
        from ..io.results import ResultFolder

        try:
            result = ResultFolder(metadata[_layers.RESULT])
            role = metadata.get(_layers.ROLE)
            if role == "atom_map":
                img = result.atom_maps(metadata[_layers.MODEL], stat=metadata.get("stat", "z"))
            elif role == "r2":
                img = result.r2_map(metadata[_layers.MODEL], kind=metadata.get("kind", "cv"))
            else:
                img = None
        except (OSError, ValueError):
            img = None
        return None if img is None else img.header.copy()
    if source and str(source).lower().endswith((".nii", ".nii.gz")) and os.path.isfile(source):
        return nib.load(source).header.copy()
    return None


def nifti_image_of_layer(data, attributes: dict):
    """The ``Nifti1Image`` of an image layer's data and attributes.

    Parameters
    ----------
    data : array-like of shape (nz, ny, nx) or (nt, nz, ny, nx)
        Layer data in napari's axis order (what the reader made of voxel ``(i, j, k)``).
    attributes : dict
        The layer's state; ``affine`` (4x4, or 5x5 for a series) and ``metadata`` are used.

    Returns
    -------
    nibabel.Nifti1Image
        Voxel ``(i, j, k)`` of the image is ``data[k, j, i]``; its affine maps it to the
        world position the layer shows it at.
    """
    import nibabel as nib

    from ..errors import ShapeError

    data = np.asarray(data)
    if data.ndim not in (3, 4):
        raise ShapeError(
            f"Only 3D volumes and 4D series can be saved as NIfTI; the layer has shape {data.shape}."
        )
    affine = attributes.get("affine")
    affine = np.eye(data.ndim + 1) if affine is None else np.asarray(getattr(affine, "affine_matrix", affine), float)
    if affine.shape == (5, 5):
        affine = affine[1:, 1:]
    if affine.shape != (4, 4):
        raise ShapeError(f"The layer's affine has shape {affine.shape}; expected (4, 4) or (5, 5).")
    nifti_affine = _layers.napari_affine(affine)  # the axis reversal is its own inverse
    volume = np.ascontiguousarray(_layers.volume_to_layer(data))
    metadata = attributes.get("metadata") or {}
    header = _source_header(metadata)
    if header is not None and not isinstance(header, nib.Nifti1Header):
        header = None
    img = nib.Nifti1Image(volume, nifti_affine, header=header)
    img.set_data_dtype(volume.dtype)
    # a header copied from a file keeps its sform/qform codes; a new one says "scanner" (1)
    # which would be wrong for maps in MNI space: keep the source's codes when there is one
    if header is not None:
        img.set_sform(nifti_affine, code=int(header["sform_code"]) or 1)
        img.set_qform(nifti_affine, code=int(header["qform_code"]) or 1)
    return img


def write_nifti(path: str, data, attributes: dict) -> list[str]:
    """Write one image layer as NIfTI (``.nii`` or ``.nii.gz``); the napari writer.

    Returns
    -------
    list of str
        The path written.
    """
    import nibabel as nib

    from ..errors import ConfigError

    path = str(path)
    if not path.lower().endswith(NIFTI_SUFFIXES):
        raise ConfigError(f"{path!r} must end with .nii or .nii.gz to be saved as NIfTI.")
    img = nifti_image_of_layer(data, attributes)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return [path]
