"""napari reader: NIfTI volumes (``.nii``, ``.nii.gz``) and result folders.

Volumes keep their world coordinates (see :mod:`napari_brainorg._napari.layers`):
the layer affine is the file's own, so images on different grids or in different
orientations (LAS atlases, RAS fMRI) line up in napari's world.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import layers as _layers

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _is_nifti(path: str) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _is_result_folder(path: str) -> bool:
    from ..io.results import SUMMARY

    return os.path.isdir(path) and os.path.isfile(os.path.join(path, SUMMARY))


def napari_get_reader(path):
    """Return a reader for ``path`` (NIfTI file(s) or a result folder), else ``None``."""
    if isinstance(path, (list, tuple)):
        if path and all(isinstance(p, (str, os.PathLike)) and _is_nifti(str(p)) for p in path):
            return read_nifti
        return None
    path = str(path)
    if _is_nifti(path):
        return read_nifti
    if _is_result_folder(path):
        return read_result_folder
    return None


def nifti_layer_data(path: str | os.PathLike) -> tuple:
    """One layer-data tuple for a NIfTI file.

    A 3D volume of a few non-negative whole numbers (an atlas, a mask) becomes a
    Labels layer, anything else an Image layer; 4D files keep their volumes as
    napari's first axis.
    """
    import nibabel as nib

    from ..errors import ShapeError

    path = Path(path)
    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise
    except Exception as exc:  # nibabel raises several types for a broken header
        raise ValueError(f"{str(path)!r} could not be read as a NIfTI image: {exc}") from exc
    if len(img.shape) not in (3, 4):
        raise ShapeError(
            f"{str(path)!r} has shape {img.shape}; expected a 3D volume or a 4D series of volumes."
        )
    name = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem
    data, affine = _layers.nifti_layer_arrays(img, dtype=None)
    axis_labels = _layers.WORLD_AXES if data.ndim == 3 else ("volume", *_layers.WORLD_AXES)
    meta = {"path": str(path), "nifti_affine": np.asarray(img.affine).tolist()}
    if _layers.looks_like_labels(data):
        labels = np.asarray(data).astype(np.int32)
        kwargs = {"name": name, "affine": affine, "axis_labels": axis_labels, "opacity": 0.5,
                  "metadata": meta}
        names = _bundled_network_names(path)
        if names:
            import pandas as pd

            # the network's name under the mouse, in napari's status bar
            kwargs["features"] = pd.DataFrame({"index": np.arange(1, len(names) + 1), "network": names})
        return (labels, kwargs, "labels")
    data = np.asarray(data, dtype=np.float32)
    finite = data[np.isfinite(data)]
    kwargs = {"name": name, "affine": affine, "axis_labels": axis_labels, "metadata": meta}
    if finite.size and finite.min() < 0 < finite.max():
        vmax = float(np.percentile(np.abs(finite[finite != 0]), 99.5))
        kwargs.update(colormap="twilight_shifted", contrast_limits=(-vmax, vmax), blending="translucent")
    else:
        kwargs.update(colormap="gray")
    return (data, kwargs, "image")


def _bundled_network_names(path: Path) -> list[str] | None:
    """Network names when ``path`` is one of the bundled label atlases."""
    from .. import datasets

    for name in datasets.BUNDLED_ATLASES:
        if datasets.atlas_kind(name) != "labels":
            continue
        try:
            if Path(datasets.atlas_path(name)).resolve() == path.resolve():
                return list(datasets.atlas_labels(name))
        except (OSError, ValueError):
            continue
    return None


def read_nifti(path) -> list[tuple]:
    """Read one or more NIfTI files as layer-data tuples (the napari reader)."""
    paths = path if isinstance(path, (list, tuple)) else [path]
    return [nifti_layer_data(p) for p in paths]


def read_result_folder(path) -> list[tuple]:
    """Read a napari-brainorg result folder: template, networks, R² and atom 0's map."""
    return _layers.result_layer_data(str(path))
