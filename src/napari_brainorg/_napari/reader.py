"""napari reader: NIfTI volumes (``.nii``, ``.nii.gz``) and result folders.

Volumes keep their world coordinates (see :mod:`napari_brainorg._napari.layers`):
the layer affine is the file's own, so images on different grids or in different
orientations (LAS atlases, RAS fMRI) line up in napari's world.

Whatever the route (File ▸ Open, drag and drop, ``viewer.open(path, plugin=...)``),
the viewer is set up by :func:`.display.install` (orientation, A/P/L/R, MNI mm in
the status bar), as for ``brainorg view``. A plain NIfTI is styled by what it holds:

- a statistical map (negative and positive values, or a file named like one: ``z``,
  ``t``, ``stat``, ``r2``, ``beta``...) opens thresholded (``|z| > 2.3`` for z/t
  maps, else the 95th percentile of ``|value|``) and transparent at zero, with a colour
  bar, over the MNI template (added under it when the viewer has none);
- a label image (a few non-negative whole numbers) opens as Labels; names (and
  colours) come from a sidecar table beside it (``NAME.tsv``, ``NAME.csv``,
  ``NAME.txt``, ``NAME_labels.tsv`` or a FreeSurfer-style colour table
  ``NAME.lut``/``NAME_LUT.txt``: ``index name [r g b [a]]``) or, for the bundled
  atlases, from the package;
- anything else (an anatomical image) opens in grey.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import layers as _layers
from ._label_tables import label_table, nifti_stem
from ._loading import qt_viewer_of_reader

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _is_nifti(path: str) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _is_result_folder(path: str) -> bool:
    from ..io.results import SUMMARY

    return os.path.isdir(path) and os.path.isfile(os.path.join(path, SUMMARY))


def _install_on_current_viewer() -> None:
    try:
        import napari

        from . import display

        display.install(napari.current_viewer())
    except Exception:  # noqa: BLE001 - a reader must read even without a viewer
        pass


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
    name = nifti_stem(path)
    data, affine = _layers.nifti_layer_arrays(img, dtype=None)
    axis_labels = _layers.WORLD_AXES if data.ndim == 3 else ("volume", *_layers.WORLD_AXES)
    from .display import BRAIN

    meta = {"path": str(path), "nifti_affine": np.asarray(img.affine).tolist(), BRAIN: True}
    if _layers.looks_like_labels(data):
        labels = np.asarray(data).astype(np.int32)
        kwargs = {"name": name, "affine": affine, "axis_labels": axis_labels, "opacity": 0.6,
                  "metadata": meta}
        table = label_table(path)
        if table is not None:
            import pandas as pd

            # the region's name under the mouse, in napari's status bar
            column = "network" if table.attrs.get("kind") == "network" else "name"
            kwargs["features"] = pd.DataFrame({"index": table["index"], column: table["name"]})
            if {"r", "g", "b"} <= set(table.columns):
                colors = _layers._normalise_colors(table[["r", "g", "b", "a"]].to_numpy(float)
                                                   if "a" in table.columns else table[["r", "g", "b"]].to_numpy(float))
                kwargs["colormap"] = _layers.network_colormap(table["index"].to_numpy(int), colors)
        return (labels, kwargs, "labels")
    data = np.asarray(data, dtype=np.float32)
    kwargs = {"name": name, "affine": affine, "axis_labels": axis_labels, "metadata": meta}
    kind = map_kind(name, data)
    if kind == "signed":
        finite = np.abs(data[np.isfinite(data) & (data != 0)])
        top = float(np.percentile(finite, 99.9)) if finite.size else 1.0
        threshold = _default_threshold(name, finite, float(finite.max()) if finite.size else 1.0)
        vmax = max(top, 1.5 * threshold, 1e-6)
        meta.update(brainorg_stat_map=True, threshold=threshold, color_limit=vmax,
                    colormap_key=(threshold, vmax))
        kwargs.update(colormap=_layers.diverging_threshold_colormap(threshold, vmax),
                      contrast_limits=(-vmax, vmax), blending="translucent")
        data = np.nan_to_num(data)
    elif kind == "positive":
        finite = data[np.isfinite(data) & (data > 0)]
        top = float(np.percentile(finite, 99.5)) if finite.size else 1.0
        threshold = _default_threshold(name, finite, top)
        meta.update(brainorg_stat_map=True, threshold=threshold)
        kwargs.update(colormap=_layers.sequential_threshold_colormap(), blending="translucent",
                      contrast_limits=(threshold, max(top, threshold + 1e-6)))
        data = np.nan_to_num(data)
    else:
        kwargs.update(colormap="gray")
    return (data, kwargs, "image")


_STAT_HINTS = ("zstat", "tstat", "stat", "_z", "z_", "zmap", "tmap", "r2", "beta", "coef", "map",
               "cope", "pe", "score", "ceiling", "corr", "_r", "q_", "p_")
_ZT_HINTS = ("zstat", "tstat", "_z", "z_", "zmap", "tmap", "_t.", "atom_maps_z")


#: names of an R² map (``r2_cv``, ``r2_sparse``, ``rsq``...): explained variance, shown
#: with a sequential colormap from the threshold up whatever its sign (a held-out R² is
#: negative where the model predicts worse than the mean: that is no effect, not a
#: "deactivation" to paint in bright blue)
_R2_HINTS = ("r2", "rsq", "r_squared", "rsquared", "r²")


def map_kind(name: str, data: np.ndarray) -> str:
    """``'signed'`` (a statistical map with both signs), ``'positive'`` (a non-negative
    map named like a statistic, or an R² map of either sign) or ``'anatomy'``."""
    if any(h in name.lower() for h in _R2_HINTS):
        return "positive"
    sample = data.ravel()[:: max(1, data.size // 200000)]
    sample = sample[np.isfinite(sample)]
    if sample.size and sample.min() < 0 < sample.max():
        # an anatomical image is non-negative (or has a few slightly negative voxels from
        # interpolation); a statistical map has both signs in quantity
        negative = float(np.mean(sample < 0))
        if negative > 0.01 or any(h in name.lower() for h in _STAT_HINTS):
            return "signed"
    lowered = name.lower()
    if any(h in lowered for h in _STAT_HINTS) and "t1" not in lowered and "template" not in lowered:
        return "positive"
    return "anatomy"


def _default_threshold(name: str, magnitude: np.ndarray, top: float) -> float:
    lowered = f"_{name.lower()}."
    if any(h in lowered for h in _ZT_HINTS):
        return _layers.DEFAULT_Z_THRESHOLD
    if "r2" in lowered:
        return float(min(_layers.DEFAULT_R2_THRESHOLD, 0.5 * top))
    return float(np.percentile(magnitude, 95)) if magnitude.size else 0.0


def _viewer_has_template() -> bool:
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:  # noqa: BLE001
        return False
    return viewer is not None and _layers.find_layer(viewer, "template") is not None


#: what a reader returns when it adds the layers itself (napari's "nothing for me to add")
HANDLED = [(None,)]


def read_nifti(path) -> list[tuple]:
    """Read one or more NIfTI files as layer-data tuples (the napari reader).

    A statistical map in MNI space comes with the MNI template under it when the
    viewer shows none yet. In a viewer with a window (File ▸ Open, drag and drop), the
    files are read in a thread and their layers added one per turn of the event loop
    (:mod:`._loading`), after those of every file opened before: the reader returns at
    once (:data:`HANDLED`). Without a window, the tuples themselves.
    """
    paths = [str(p) for p in (path if isinstance(path, (list, tuple)) else [path])]
    viewer = qt_viewer_of_reader()
    if viewer is None:
        _install_on_current_viewer()
        return nifti_items(paths, with_template=not _viewer_has_template())
    from . import display
    from ._loading import show_layers_async

    display.install(viewer)
    # a template read with a file is kept out when one is shown by the time its layers come
    # (its role: the layer of that role is kept, :func:`.layers.place_result_item`)
    with_template = _layers.find_layer(viewer, "template") is None
    name = nifti_stem(Path(paths[0])) + (f" and {len(paths) - 1} more" if len(paths) > 1 else "")
    # files opened one after another each add their layers, in the order they were opened
    show_layers_async(viewer, lambda: nifti_items(paths, with_template=with_template), name=name,
                      source={"path": paths[0], "reader_plugin": "napari-brainorg"}, supersede=False)
    return HANDLED


def nifti_items(paths: list[str], *, with_template: bool) -> list[tuple]:
    """Layer-data tuples of NIfTI files, the MNI template first when ``with_template`` and
    one of them is a statistical map or labels in MNI space."""
    from ..datasets import mni_template_path

    items = [nifti_layer_data(p) for p in paths]
    template = Path(mni_template_path()).resolve()
    is_template = any(Path(p).resolve() == template for p in paths)
    if (with_template and not is_template and _in_mni_box(items)
            and any(kw["metadata"].get("brainorg_stat_map") or kind == "labels" for _, kw, kind in items)):
        items.insert(0, _layers.template_layer_data(template))
    return items


def _in_mni_box(items) -> bool:
    """True when the first volume's centre lies inside the MNI152 box (an MNI-space map)."""
    data, kwargs, _ = items[0]
    shape = np.asarray(data.shape[-3:], float)
    affine = np.asarray(kwargs["affine"], float)[-4:, -4:]
    center = affine @ np.r_[(shape - 1) / 2, 1.0]  # (z, y, x)
    z, y, x = center[:3]
    return -100 <= x <= 100 and -130 <= y <= 100 and -80 <= z <= 110


def read_result_folder(path) -> list[tuple]:
    """Read a napari-brainorg result folder: template, R², atom 0's map, network outlines.

    In a viewer with a window the layers are read in a thread and added one per turn of
    the event loop (:mod:`._loading`), replacing those of a result shown before; the
    reader returns at once (:data:`HANDLED`).
    """
    viewer = qt_viewer_of_reader()
    if viewer is None:
        _install_on_current_viewer()
        return _layers.result_layer_data(str(path))
    from . import display
    from ._loading import show_result_async

    display.install(viewer)
    show_result_async(viewer, str(path), source={"path": str(path), "reader_plugin": "napari-brainorg"})
    _dock_regions_on_current_viewer(str(path))
    return HANDLED


def _dock_regions_on_current_viewer(path: str) -> None:
    """A region result has no maps: its values go to the Regions panel of the current viewer."""
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:  # noqa: BLE001 - a reader must read even without a viewer
        return
    if viewer is None:
        return
    from ..io.results import ResultFolder

    result = ResultFolder(path)
    if not result.is_region_result:  # the panel's module brings matplotlib: a second on the GUI thread
        return
    from .regions_panel import dock_regions_panel

    dock_regions_panel(viewer, result)
