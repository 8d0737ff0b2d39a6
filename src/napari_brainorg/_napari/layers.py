"""Turn NIfTI volumes and result folders into napari layers: the one place that does.

World space
-----------
Every volume keeps its NIfTI world coordinates (scanner / MNI millimetres): the
layer's ``affine`` is the file's voxel-to-world affine, so a map, the template and
an atlas read from different files line up whatever their orientation (the bundled
atlases are LAS, Narratives data RAS) or voxel size. napari displays the last two
axes of its world, so both the voxel axes and the world axes are put in reverse
order: napari's world axes are ``(z, y, x)`` in mm and the default 2D view is an
axial slice. A voxel ``(i, j, k)`` of the file is ``data[k, j, i]`` of the layer
and sits at world ``(z, y, x)`` where ``(x, y, z, 1) = img.affine @ (i, j, k, 1)``.

Maps and thresholds
-------------------
An atom's map is ONE image layer (``'atom map'``) whose data are replaced when
another atom is chosen. Activated (positive) and deactivated (negative) parts
take two colour ranges of one diverging colormap (blue to cyan below zero, red to
yellow above) with symmetric contrast limits ``(-V, V)``; voxels whose absolute
value lies under the threshold are transparent. All atoms of a result share one
colour scale (``V`` is :attr:`AtomMaps.color_limit`), so colours compare across
atoms and a click only swaps the layer's data. The threshold lives in the
colormap, so moving it never copies the volume and the status bar keeps showing
the map's true value. The R² map has its own layer; its threshold is the
lower contrast limit (values at or under it are transparent), so napari's own
contrast slider moves it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# the metadata keys and the finishing touches live below this module and .display, which
# both use them; outline_networks is re-exported for the networks widget
from ._layer_style import (  # noqa: F401
    MODEL,
    RESULT,
    ROLE,
    finish_layer,
    outline_networks,
    style_map_layer,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari
    import nibabel as nib

    from ..io.results import ResultFolder

#: napari's world axes for every volume this plugin shows
WORLD_AXES = ("z", "y", "x")

TEMPLATE_NAME = "MNI template"
ATOM_MAP_NAME = "atom map"  # prefix of every atom-map layer's name (see atom_map_name)
DEFAULT_Z_THRESHOLD = 2.3
DEFAULT_R2_THRESHOLD = 0.05

_REVERSE = np.eye(4)[[2, 1, 0, 3]]


def atom_map_name(model: str | None, atom: int, stat: str) -> str:
    """The atom-map layer's name: which atom of which model, and what its values are."""
    what = "z" if stat == "z" else "coefficient"
    return f"{ATOM_MAP_NAME}: atom {int(atom)} of {model or 'model'} ({what})"


# -- NIfTI -> (data, affine) ------------------------------------------------------


def napari_affine(affine: np.ndarray) -> np.ndarray:
    """Convert a NIfTI voxel-to-world affine to the layer affine of :data:`WORLD_AXES`.

    Parameters
    ----------
    affine : ndarray of shape (4, 4)
        Maps voxel ``(i, j, k, 1)`` to world ``(x, y, z, 1)`` in mm.

    Returns
    -------
    ndarray of shape (4, 4)
        Maps layer index ``(k, j, i, 1)`` to world ``(z, y, x, 1)``.
    """
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        raise ValueError(f"A NIfTI affine must have shape (4, 4); got shape {affine.shape}.")
    return _REVERSE @ affine @ _REVERSE


def volume_to_layer(data: np.ndarray) -> np.ndarray:
    """Reverse the three spatial axes of ``data`` (i, j, k[, t]) -> ([t,] k, j, i).

    The result is a view, not a copy.
    """
    data = np.asarray(data)
    if data.ndim == 3:
        return data.transpose(2, 1, 0)
    if data.ndim == 4:
        return data.transpose(3, 2, 1, 0)
    raise ValueError(f"Expected a 3D or 4D volume; got an array with shape {data.shape}.")


def nifti_layer_arrays(img: nib.spatialimages.SpatialImage, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Data and layer affine of a NIfTI image in napari's axis order.

    Parameters
    ----------
    img : nibabel image, 3D or 4D
    dtype : numpy dtype or None
        Cast of the data (``None`` keeps the file's dtype).

    Returns
    -------
    data : ndarray of shape (nz, ny, nx) or (nt, nz, ny, nx)
        Voxel ``(i, j, k)`` of the file is ``data[k, j, i]`` (``data[t, k, j, i]``).
    affine : ndarray of shape (4, 4) or (5, 5)
        Layer affine; a 4D image gets an identity on its leading volume axis.
    """
    raw = np.asanyarray(img.dataobj)
    if dtype is not None:
        raw = raw.astype(dtype, copy=False)
    if raw.ndim == 4 and raw.shape[3] == 1:
        raw = raw[..., 0]
    data = volume_to_layer(raw)
    affine3 = napari_affine(img.affine)
    if data.ndim == 3:
        return data, affine3
    affine4 = np.eye(5)
    affine4[1:, 1:] = affine3
    return data, affine4


def world_of_voxel(img_affine: np.ndarray, ijk) -> np.ndarray:
    """World position ``(z, y, x)`` in mm of the file voxel ``(i, j, k)``."""
    xyz = np.asarray(img_affine, float) @ np.r_[np.asarray(ijk, float), 1.0]
    return xyz[:3][::-1]


def looks_like_labels(data: np.ndarray, max_labels: int = 1000) -> bool:
    """True for a 3D volume of non-negative whole numbers with few distinct values.

    Such a volume (an atlas, a mask) is shown as a Labels layer.
    """
    if data.ndim != 3:
        return False
    if np.issubdtype(data.dtype, np.bool_):
        return True
    if np.issubdtype(data.dtype, np.integer):
        values = np.unique(data)
    else:
        # a random sample first, so a real-valued map is rejected without a full pass
        flat = data.ravel()
        sample = flat[:: max(1, flat.size // 20000)]
        if not np.all(np.isfinite(sample)) or np.any(sample != np.round(sample)):
            return False
        if not (np.all(np.isfinite(flat)) and np.array_equal(flat, np.round(flat))):
            return False
        values = np.unique(flat)
    return bool(values.min() >= 0 and 1 < values.size <= max_labels)


# -- colormaps ---------------------------------------------------------------------

_NEG_FAR = (0.55, 0.95, 1.0, 1.0)  # light cyan at -vmax
_NEG_NEAR = (0.0, 0.25, 1.0, 1.0)  # blue just under -threshold
_POS_NEAR = (0.85, 0.0, 0.0, 1.0)  # red just above +threshold
_POS_FAR = (1.0, 1.0, 0.2, 1.0)  # yellow at +vmax
_CLEAR = (0.0, 0.0, 0.0, 0.0)
#: half-width of the smallest clear band around zero, in colormap units (2 of vispy's 1024
#: table entries: both entries around zero are clear), and the width of the fade-in beyond it
_LUT_BAND = 2.0 / 1024
_LUT_STEP = 1.0 / 1024


def diverging_threshold_colormap(threshold: float, vmax: float, name: str = "brainorg atom"):
    """Diverging colormap for contrast limits ``(-vmax, vmax)``, clear for ``|v| < threshold``.

    Negative values run from blue (at ``-threshold``) to cyan (at ``-vmax``),
    positive ones from red (``+threshold``) to yellow (``+vmax``).

    Returns
    -------
    napari.utils.Colormap
        Six control points; the clear band is ``[0.5 - t, 0.5 + t]`` with
        ``t = threshold / (2 vmax)``, at least ``±_LUT_BAND`` wide, and the colours fade
        in just outside it: no value under the threshold, and no zero, is painted.
    """
    from napari.utils.colormaps import Colormap

    vmax = float(vmax) if np.isfinite(vmax) and vmax > 0 else 1.0
    half = min(max(float(threshold), 0.0) / (2.0 * vmax), 0.5)
    # the GPU looks colours up in a 1024-entry table, interpolated: a clear band narrower
    # than a few entries is blended away and zero (outside the mask) gets painted
    eps = _LUT_BAND
    low = min(0.5 - half, 0.5 - eps)
    high = max(0.5 + half, 0.5 + eps)
    low = min(max(low, 2 * eps), 0.5 - eps)
    high = max(min(high, 1 - 2 * eps), 0.5 + eps)
    controls = [0.0, low - _LUT_STEP, low, high, high + _LUT_STEP, 1.0]
    colors = [_NEG_FAR, _NEG_NEAR, _CLEAR, _CLEAR, _POS_NEAR, _POS_FAR]
    return Colormap(colors=colors, controls=controls, name=name, interpolation="linear")


def sequential_threshold_colormap(name: str = "brainorg r2"):
    """Dark red to yellow, clear at the lower contrast limit (the threshold)."""
    from napari.utils.colormaps import Colormap

    colors = [_CLEAR, (0.5, 0.0, 0.0, 1.0), (1.0, 0.35, 0.0, 1.0), (1.0, 1.0, 0.4, 1.0)]
    return Colormap(colors=colors, controls=[0.0, 1e-3, 0.5, 1.0], name=name, interpolation="linear")


def visible_fraction(layer, values: np.ndarray) -> np.ndarray:
    """Opacity (alpha in [0, 1]) with which ``layer`` draws each of ``values``.

    The same mapping the canvas applies: contrast limits, then the colormap.
    """
    lo, hi = layer.contrast_limits
    norm = (np.asarray(values, float) - lo) / max(hi - lo, np.finfo(float).tiny)
    return layer.colormap.map(np.clip(norm, 0.0, 1.0).ravel())[:, 3].reshape(np.shape(values))


# -- the brain: maps are shown inside it only -------------------------------------------

_BRAIN_CACHE: dict = {}


def inside_mni_brain(nifti_affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Which voxels of a grid have their centre inside the MNI152 brain mask.

    Parameters
    ----------
    nifti_affine : ndarray of shape (4, 4)
        The grid's voxel-to-world (MNI mm) affine.
    shape : (nx, ny, nz)

    Returns
    -------
    ndarray of shape (nx, ny, nz), bool
        Looked up at the nearest 2 mm mask voxel; ``True`` everywhere when the grid is
        not in MNI space (no voxel centre of it falls in the mask's box).
    """
    import nibabel as nib

    from ..datasets import mni_mask_path

    key = (np.asarray(nifti_affine, float).round(6).tobytes(), tuple(int(n) for n in shape))
    if key in _BRAIN_CACHE:
        return _BRAIN_CACHE[key]
    mask_img = nib.load(mni_mask_path())
    brain = np.asarray(mask_img.dataobj) > 0
    ijk = np.indices(shape).reshape(3, -1)
    world = np.asarray(nifti_affine, float) @ np.vstack([ijk, np.ones(ijk.shape[1])])
    mijk = np.rint(np.linalg.inv(mask_img.affine) @ world)[:3].astype(np.int64)
    inside_box = np.all((mijk >= 0) & (mijk < np.array(brain.shape)[:, None]), axis=0)
    out = np.zeros(ijk.shape[1], bool)
    out[inside_box] = brain[tuple(mijk[:, inside_box])]
    out = out.reshape(shape) if inside_box.any() else np.ones(shape, bool)
    if len(_BRAIN_CACHE) > 8:
        _BRAIN_CACHE.clear()
    _BRAIN_CACHE[key] = out
    return out


# -- atom maps: precomputed once, shown in place -------------------------------------


@dataclass
class AtomMaps:
    """Every atom map of one model, held inside the mask, for instant display.

    Attributes
    ----------
    values : ndarray of shape (k, n_voxels), float32
        Map value of each atom in each mask voxel.
    flat_index : ndarray of shape (n_voxels,), int64
        Position of each mask voxel in a raveled layer volume (napari order).
    shape : tuple of int
        Layer volume shape ``(nz, ny, nx)``.
    affine : ndarray of shape (4, 4)
        Layer affine (:func:`napari_affine` of the maps' NIfTI affine).
    nifti_affine : ndarray of shape (4, 4)
        The maps' own voxel-to-world affine.
    vmax : ndarray of shape (k,)
        Largest absolute value of each atom's map.
    color_limit : float
        The shared symmetric contrast limit: the largest, over atoms, of the 99.9th
        percentile of ``|map|`` (one stray voxel does not squeeze every colour scale).
    stat : str
        ``'z'`` (group statistic) or ``'coef'`` (group mean coefficient).
    """

    values: np.ndarray
    flat_index: np.ndarray
    shape: tuple[int, int, int]
    affine: np.ndarray
    nifti_affine: np.ndarray
    vmax: np.ndarray
    stat: str
    color_limit: float = 1.0
    _buffer: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_atoms(self) -> int:
        return int(self.values.shape[0])

    @classmethod
    def from_images(cls, maps_img, mask_img=None, stat: str = "z", clip_to_brain: bool = True) -> AtomMaps:
        """Build from a 4D map image (one volume per atom) and an optional mask.

        Parameters
        ----------
        maps_img : nibabel image of shape (nx, ny, nz, k)
        mask_img : nibabel image of shape (nx, ny, nz) or None
            Voxels outside it are never shown; without one, every voxel that is
            non-zero in some atom's map is kept.
        stat : str
        clip_to_brain : bool
            Keep only voxels whose centre lies in the MNI152 brain
            (:func:`inside_mni_brain`): a coarse data mask spills past the template.
        """
        data = np.asarray(maps_img.dataobj, dtype=np.float32)
        if data.ndim == 3:
            data = data[..., None]
        if data.ndim != 4:
            raise ValueError(
                f"Atom maps must be a 4D image (one volume per atom); got shape {data.shape}."
            )
        spatial = data.shape[:3]
        if mask_img is not None:
            mask = np.asarray(mask_img.dataobj) > 0
            if mask.shape != spatial:
                raise ValueError(
                    f"The mask has shape {mask.shape}; the atom maps' volumes have shape {spatial}."
                )
        else:
            mask = np.any(data != 0, axis=3)
        if clip_to_brain:
            mask = mask & inside_mni_brain(maps_img.affine, spatial)
        i, j, k = np.nonzero(mask)
        values = np.ascontiguousarray(data[i, j, k, :].T)  # (k_atoms, n_voxels)
        np.nan_to_num(values, copy=False)
        shape = (spatial[2], spatial[1], spatial[0])
        flat_index = np.ravel_multi_index((k, j, i), shape)
        if values.shape[1]:
            magnitude = np.abs(values)
            vmax = magnitude.max(axis=1)
            color_limit = float(np.quantile(magnitude, 0.999, axis=1).max())
        else:
            vmax = np.zeros(values.shape[0])
            color_limit = 1.0
        return cls(
            values=values,
            flat_index=flat_index,
            shape=shape,
            affine=napari_affine(maps_img.affine),
            nifti_affine=np.asarray(maps_img.affine, float),
            vmax=vmax.astype(float),
            stat=stat,
            color_limit=color_limit if np.isfinite(color_limit) and color_limit > 0 else 1.0,
        )

    @classmethod
    def from_result(cls, result: ResultFolder, model: str | None = None, stat: str = "z") -> AtomMaps:
        """Load a model's atom maps from a result folder (``stat`` falls back to ``'coef'``)."""
        img = result.atom_maps(model, stat=stat)
        if img is None and stat == "z":
            stat = "coef"
            img = result.atom_maps(model, stat=stat)
        if img is None:
            raise FileNotFoundError(f"{str(result.path)!r} holds no atom maps for model {model!r}.")
        return cls.from_images(img, result.mask_img(model), stat=stat)

    def volume(self, atom: int, out: np.ndarray | None = None) -> np.ndarray:
        """The map of ``atom`` as a layer volume of shape :attr:`shape` (napari order)."""
        if not 0 <= atom < self.n_atoms:
            raise IndexError(f"'atom' must be in [0, {self.n_atoms - 1}]; {atom!r} was provided.")
        if out is None:
            out = np.zeros(self.shape, dtype=np.float32)
        out.ravel()[self.flat_index] = self.values[atom]
        return out

    def default_threshold(self) -> float:
        """2.3 for z maps; for coefficient maps the median non-zero absolute value."""
        if self.stat == "z":
            return DEFAULT_Z_THRESHOLD
        nonzero = np.abs(self.values[self.values != 0])
        return float(np.median(nonzero)) if nonzero.size else 0.0


def show_atom(layer, maps: AtomMaps, atom: int, threshold: float | None = None) -> None:
    """Put ``atom``'s map in ``layer`` (in place) with the given threshold.

    The layer's data are replaced by a fresh volume (napari re-slices only what it
    shows). Contrast limits (``±maps.color_limit``) and the colormap are set only
    when they change (another result or statistic, another threshold): each napari
    property change costs a redraw, so a plain click changes the data alone.
    """
    volume = maps.volume(atom)
    limit = float(maps.color_limit)
    meta = layer.metadata
    _follow_contrast(layer)
    if threshold is None:
        threshold = float(meta.get("threshold", maps.default_threshold()))
    meta["atom"] = int(atom)
    meta["stat"] = maps.stat
    layer.data = volume
    name = atom_map_name(meta.get(MODEL), atom, maps.stat)
    if layer.name != name:
        layer.name = name
    if meta.get("color_limit") != limit:
        meta["color_limit"] = limit
        layer.contrast_limits_range = (-limit, limit)
        layer.contrast_limits = (-limit, limit)
        meta.pop("colormap_key", None)
    set_map_threshold(layer, threshold)


def ensure_atom_map_layer(viewer: napari.Viewer, maps: AtomMaps, result_path, model: str | None,
                          atom: int = 0, threshold: float | None = None):
    """The viewer's atom-map layer of this result, created (on top) when there is none."""
    for layer in reversed(list(viewer.layers)):
        if layer.metadata.get(ROLE) == "atom_map" and layer.metadata.get(RESULT) == str(result_path):
            return layer
    if threshold is None:
        threshold = maps.default_threshold()
    limit = float(maps.color_limit)
    layer = viewer.add_image(
        maps.volume(atom), name=atom_map_name(model, atom, maps.stat), affine=maps.affine, axis_labels=WORLD_AXES,
        colormap=diverging_threshold_colormap(threshold, limit), contrast_limits=(-limit, limit),
        blending="translucent",
        metadata={ROLE: "atom_map", RESULT: str(result_path), MODEL: model, "atom": int(atom),
                  "stat": maps.stat, "threshold": float(threshold), "color_limit": limit},
    )
    layer.metadata["colormap_key"] = (float(threshold), limit)
    style_map_layer(layer)
    return layer


def _follow_contrast(layer) -> None:
    """Rebuild the threshold colormap when the user moves the layer's contrast limits."""
    if layer.metadata.get("_follows_contrast"):
        return
    layer.metadata["_follows_contrast"] = True

    def on_contrast(event, layer=layer):
        if "threshold" in layer.metadata:
            set_map_threshold(layer, layer.metadata["threshold"])

    layer.events.contrast_limits.connect(on_contrast)


def set_map_threshold(layer, threshold: float) -> None:
    """Hide ``|value| < threshold`` in an atom-map layer (only its colormap changes)."""
    lo, hi = layer.contrast_limits
    limit = float(max(abs(lo), abs(hi)))
    key = (float(threshold), limit)
    layer.metadata["threshold"] = float(threshold)
    if layer.metadata.get("colormap_key") != key:
        layer.metadata["colormap_key"] = key
        layer.colormap = diverging_threshold_colormap(threshold, limit)


def set_r2_threshold(layer, threshold: float) -> None:
    """Hide R² at or under ``threshold`` (the lower contrast limit of the R² layer)."""
    lo_range, hi_range = layer.contrast_limits_range
    hi = max(float(layer.contrast_limits[1]), float(threshold) + 1e-6)
    if threshold < lo_range or hi > hi_range:
        layer.contrast_limits_range = (min(lo_range, float(threshold)), max(hi_range, hi))
    layer.metadata["threshold"] = float(threshold)
    layer.contrast_limits = (float(threshold), hi)


# -- networks ------------------------------------------------------------------------

#: outline colours of networks, one per network of the largest bundled atlas (Yeo-17):
#: violets, magentas, pinks, greens, turquoise, olive and brown, each at least 0.3 (RGB
#: distance) from every colour a map takes (activated red -> yellow, deactivated blue ->
#: cyan, R² dark red -> yellow) and from the crosshair's white, 0.2 from one another, none
#: grey or white (they vanish on the template), in an order where the first ones differ most. The atlases'
#: own colours are not used: Yeo's Default and the Smith-10 default-mode red are the
#: maps' red, and their greys are the template's.
OUTLINE_PALETTE = np.array([
    (0.70, 0.35, 1.00, 1.0),  # violet
    (0.00, 0.80, 0.00, 1.0),  # green
    (1.00, 0.00, 0.90, 1.0),  # magenta
    (0.00, 0.85, 0.80, 1.0),  # turquoise
    (0.60, 0.70, 0.35, 1.0),  # olive green
    (1.00, 0.50, 0.65, 1.0),  # pink
    (0.45, 0.35, 0.75, 1.0),  # slate purple
    (0.50, 1.00, 0.00, 1.0),  # chartreuse
    (0.56, 0.00, 0.70, 1.0),  # purple
    (0.00, 0.60, 0.45, 1.0),  # sea green
    (0.75, 0.25, 0.45, 1.0),  # raspberry
    (1.00, 0.60, 1.00, 1.0),  # light magenta
    (0.30, 0.50, 0.10, 1.0),  # moss
    (0.80, 0.68, 1.00, 1.0),  # lavender
    (0.60, 0.45, 0.30, 1.0),  # brown
    (0.45, 0.00, 1.00, 1.0),  # indigo
    (0.70, 0.90, 0.70, 1.0),  # pale green
])


def outline_colors(n: int) -> np.ndarray:
    """``n`` RGBA outline colours: the first ``n`` of :data:`OUTLINE_PALETTE`, all different
    up to its length (cycled beyond, for an atlas of more networks than Yeo-17)."""
    return OUTLINE_PALETTE[np.arange(n) % len(OUTLINE_PALETTE)].copy()


def network_colormap(labels: np.ndarray, colors: np.ndarray, visible: np.ndarray | None = None):
    """Labels colormap giving each network its atlas colour; hidden networks are clear.

    Parameters
    ----------
    labels : ndarray of shape (n_networks,), int
    colors : ndarray of shape (n_networks, 4), RGBA in [0, 1]
    visible : ndarray of shape (n_networks,), bool, optional
    """
    from napari.utils.colormaps import DirectLabelColormap

    colors = np.array(colors, dtype=float)
    if visible is not None:
        colors[~np.asarray(visible, bool), 3] = 0.0
    color_dict: dict[Any, Any] = {int(v): c for v, c in zip(labels, colors)}
    color_dict[None] = np.zeros(4)
    color_dict[0] = np.zeros(4)
    return DirectLabelColormap(color_dict=color_dict)


def _normalise_colors(colors: np.ndarray) -> np.ndarray:
    colors = np.asarray(colors, dtype=float)
    if colors.ndim != 2 or colors.shape[1] not in (3, 4):
        raise ValueError(f"Atlas colours must have shape (n, 4); got shape {colors.shape}.")
    if colors.shape[1] == 3:
        colors = np.c_[colors, np.ones(len(colors))]
    if colors.size and colors[:, :3].max() > 1.0:
        colors = colors / np.array([255.0, 255.0, 255.0, 255.0 if colors[:, 3].max() > 1 else 1.0])
    return colors


def atlas_label_values(result: ResultFolder, atlas: str) -> np.ndarray:
    """Label value of each network of ``atlas`` (row order of its table)."""
    return result.atlas_label_values(atlas)


def upsample_labels(labels: np.ndarray, affine: np.ndarray, target_mm: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Split each voxel of a coarse label image into ``f**3`` voxels of about ``target_mm``.

    Exact in world space (every new voxel lies inside the old one and keeps its
    label); only for display, so that outlines drawn on a 4 or 6 mm data grid are
    as thin as the template's voxels instead of filling whole coarse voxels.

    Parameters
    ----------
    labels : ndarray of shape (nx, ny, nz), int
    affine : ndarray of shape (4, 4)

    Returns
    -------
    labels : ndarray of shape (f nx, f ny, f nz)
    affine : ndarray of shape (4, 4)
    """
    affine = np.asarray(affine, float)
    voxel = float(np.min(np.linalg.norm(affine[:3, :3], axis=0)))
    factor = int(round(voxel / target_mm))
    if factor <= 1 or labels.size * factor**3 > 64_000_000:
        return labels, affine
    up = labels.repeat(factor, 0).repeat(factor, 1).repeat(factor, 2)
    new = affine.copy()
    new[:3, :3] = affine[:3, :3] / factor
    # centre of new voxel 0 = centre of old voxel 0 shifted back by (f - 1) / 2 new voxels
    new[:3, 3] = affine[:3, 3] - new[:3, :3] @ np.full(3, (factor - 1) / 2.0)
    return up, new


def network_layer_data(result: ResultFolder, atlas: str, model: str | None = None):
    """Labels layer-data tuple of an atlas's networks, or ``None`` without a label image."""
    img = result.atlas_label_image(atlas)
    if img is None:
        return None
    raw = np.asanyarray(img.dataobj)
    raw = np.rint(raw).astype(np.int32) if not np.issubdtype(raw.dtype, np.integer) else raw.astype(np.int32)
    raw, nifti_affine = upsample_labels(raw, img.affine)
    data, affine = volume_to_layer(raw), napari_affine(nifti_affine)
    names = result.atlas_network_names(atlas)
    labels = atlas_label_values(result, atlas)
    atlas_colors = _normalise_colors(result.atlas_colors(atlas))
    colors = outline_colors(len(labels))
    import pandas as pd

    features = pd.DataFrame({"index": labels, "network": names})
    kwargs = {
        "name": f"networks ({atlas})",
        "affine": affine,
        "axis_labels": WORLD_AXES,
        "opacity": 0.9,
        "blending": "translucent",
        "features": features,
        "colormap": network_colormap(labels, colors),
        "metadata": {
            ROLE: "networks",
            RESULT: str(result.path),
            MODEL: model,
            "atlas": atlas,
            "labels": labels.tolist(),
            "names": list(names),
            "colors": colors.tolist(),
            "atlas_colors": atlas_colors.tolist(),
            "outline": True,
            "visible": [True] * len(labels),
        },
    }
    return (data, kwargs, "labels")


def set_network_visible(layer, label: int, visible: bool) -> None:
    """Show or hide one network of a networks layer (only the colormap changes)."""
    labels = np.asarray(layer.metadata["labels"])
    flags = np.asarray(layer.metadata["visible"], bool)
    hit = labels == int(label)
    if not hit.any():
        raise ValueError(f"'label' must be one of {labels.tolist()}; {label!r} was provided.")
    flags[hit] = bool(visible)
    layer.metadata["visible"] = flags.tolist()
    layer.colormap = network_colormap(labels, np.asarray(layer.metadata["colors"]), flags)


# -- result folder -> layers -----------------------------------------------------------


def template_layer_data(path: str | os.PathLike):
    """Image layer-data tuple of an anatomical template (grey, robust contrast)."""
    import nibabel as nib

    img = nib.load(str(path))
    data, affine = nifti_layer_arrays(img)
    nonzero = data[data != 0]
    lo, hi = (np.percentile(nonzero, [1, 99.5]) if nonzero.size else (0.0, 1.0))
    kwargs = {
        "name": TEMPLATE_NAME,
        "affine": affine,
        "axis_labels": WORLD_AXES,
        "colormap": "gray",
        "contrast_limits": (float(lo), float(hi)),
        "metadata": {ROLE: "template", "path": str(path)},
    }
    return (data, kwargs, "image")


def r2_layer_data(result: ResultFolder, model: str, kind: str | None = None, threshold: float | None = None):
    """Image layer-data tuple of the R² map (``kind`` 'cv', else 'sparse'), or ``None``."""
    kinds = [kind] if kind else ["cv", "sparse"]
    for kind_ in kinds:
        img = result.r2_map(model, kind=kind_)
        if img is not None:
            break
    else:
        return None
    volume = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32))
    volume = np.where(inside_mni_brain(img.affine, volume.shape[:3]), volume, 0.0).astype(np.float32)
    data, affine = volume_to_layer(volume), napari_affine(img.affine)
    top = float(data.max()) if data.size else 1.0
    top = top if top > 0 else 1.0
    if threshold is None:
        threshold = min(DEFAULT_R2_THRESHOLD, 0.5 * top)
    kwargs = {
        "name": f"R² ({'held-out, ridge' if kind_ == 'cv' else 'in-sample, sparse'}) of {model}",
        "affine": affine,
        "axis_labels": WORLD_AXES,
        "colormap": sequential_threshold_colormap(),
        "contrast_limits": (float(threshold), top),
        "blending": "translucent",
        "opacity": 0.85,
        "metadata": {ROLE: "r2", RESULT: str(result.path), MODEL: model, "kind": kind_,
                     "threshold": float(threshold)},
    }
    return (data, kwargs, "image")


def atom_map_layer_data(result: ResultFolder, model: str, atom: int = 0, stat: str = "z",
                        threshold: float | None = None):
    """Image layer-data tuple of one atom's map (reads that volume only)."""
    img = result.atom_maps(model, stat=stat)
    if img is None and stat == "z":
        stat = "coef"
        img = result.atom_maps(model, stat=stat)
    if img is None:
        return None
    volume = np.asarray(img.dataobj[..., atom], dtype=np.float32)
    volume = np.nan_to_num(volume)
    mask_img = result.mask_img(model)
    keep = inside_mni_brain(img.affine, volume.shape)
    if mask_img is not None and mask_img.shape[:3] == volume.shape:
        keep = keep & (np.asarray(mask_img.dataobj) > 0)
    volume = np.where(keep, volume, 0.0).astype(np.float32)
    data = volume_to_layer(volume)
    vmax = float(np.abs(volume).max()) or 1.0
    if threshold is None:
        if stat == "z":
            threshold = DEFAULT_Z_THRESHOLD
        else:
            nonzero = np.abs(volume[volume != 0])
            threshold = float(np.median(nonzero)) if nonzero.size else 0.0
    kwargs = {
        "name": atom_map_name(model, atom, stat),
        "affine": napari_affine(img.affine),
        "axis_labels": WORLD_AXES,
        "colormap": diverging_threshold_colormap(threshold, vmax),
        "contrast_limits": (-vmax, vmax),
        "blending": "translucent",
        "metadata": {ROLE: "atom_map", RESULT: str(result.path), MODEL: model, "atom": int(atom),
                     "stat": stat, "threshold": float(threshold)},
    }
    return (data, kwargs, "image")


def result_layer_data(result: ResultFolder | str | os.PathLike, model: str | None = None, *,
                      atlas: str | None = None, stat: str = "z") -> list[tuple]:
    """Layer-data tuples of a result folder, bottom to top.

    MNI template, networks of ``atlas`` (the first of the result's atlases when
    ``None``; drawn as outlines by :func:`finish_layer`), R² map (hidden while an
    atom map is shown), the map of atom 0, in the order template, R², atom map, networks. Each carries ``metadata[ROLE]`` (and the
    result's path and model) so that the widgets find them.

    Parameters
    ----------
    result : ResultFolder or path
    model : str, optional
        One of ``result.models`` (the first when ``None``).
    atlas : str, optional
    stat : {'z', 'coef'}
    """
    from ..io.results import ResultFolder

    if not isinstance(result, ResultFolder):
        result = ResultFolder(result)
    if model is None:
        if not result.models:
            raise ValueError(f"{str(result.path)!r} holds no model results (summary.json 'models' is empty).")
        model = result.models[0]
    elif model not in result.models:
        from ..errors import check_choice

        check_choice("model", model, result.models)
    out = [template_layer_data(result.template_path())]
    r2 = r2_layer_data(result, model)
    atom_map = atom_map_layer_data(result, model, 0, stat)
    if r2 is not None:
        # one map at a time: the R² map is one click (its eye, or its slider) away
        r2[1]["visible"] = atom_map is None
        out.append(r2)
    if atom_map is not None:
        out.append(atom_map)
    atlases = result.atlas_names()
    if atlas is None and atlases:
        atlas = atlases[0]
    if atlas is not None:
        networks = network_layer_data(result, atlas, model)
        if networks is not None:
            out.append(networks)  # outlines, on top of the maps (see finish_layer)
    return out


def find_layer(viewer: napari.Viewer, role: str):
    """The top-most layer of ``viewer`` whose metadata role is ``role``, or ``None``."""
    for layer in reversed(list(viewer.layers)):
        if layer.metadata.get(ROLE) == role:
            return layer
    return None


def value_at(layer, world):
    """The layer's voxel value at a world position (also for a hidden, unsliced layer).

    Parameters
    ----------
    layer : napari layer
    world : sequence of float
        World position, ``(z, y, x)`` in mm for a volume.

    Returns
    -------
    The value of the nearest voxel, or ``None`` outside the layer's data.
    """
    index = np.rint(np.asarray(layer.world_to_data(tuple(world)), float)).astype(int)
    shape = np.asarray(layer.data.shape)
    if index.size != shape.size or np.any(index < 0) or np.any(index >= shape):
        return None
    return layer.data[tuple(index)]


def add_result_layers(viewer: napari.Viewer, result: ResultFolder | str | os.PathLike,
                      model: str | None = None, **kwargs) -> dict[str, Any]:
    """Show a result folder in ``viewer``; returns ``{role: layer}``.

    Layers of an earlier result (same roles) are reused (:func:`replace_result_layers`),
    so running the pipeline again replaces its layers instead of piling new ones on top.
    """
    return replace_result_layers(viewer, result_layer_data(result, model, **kwargs))


def replace_result_layers(viewer: napari.Viewer, items: list) -> dict[str, Any]:
    """Show a result's layer-data tuples (read beforehand, e.g. in a worker); ``{role: layer}``.

    A layer of the same role already in the viewer is updated in place (data, affine,
    contrast, colormap, name), or kept as it is when it shows the same thing (the
    template, the same atlas of the same result). Removing and adding napari layers
    rebuilds GPU visuals and runs a full garbage collection per removal (seconds with a
    language model in memory), so another model or a new run of the same brain costs
    only new data. The previous view stays until this call.

    The same three steps (:func:`begin_replace`, :func:`place_result_item` per item,
    :func:`end_replace`) run one per turn of the event loop in :mod:`._loading`.
    """
    swap = begin_replace(viewer)
    for item in items:
        place_result_item(viewer, item, swap)
    return end_replace(viewer, swap)


def begin_replace(viewer: napari.Viewer) -> dict[str, Any]:
    """Start showing a result in ``viewer``: the bookkeeping :func:`place_result_item` fills."""
    from . import display

    display.install(viewer)
    return {"first": find_layer(viewer, "template") is None, "added": {}, "updated": []}


def place_result_item(viewer: napari.Viewer, item: tuple, swap: dict[str, Any], source=None,
                      finish_later: bool = False, hidden: bool = False, made=None, at: int | None = None):
    """Put one layer-data tuple of a result into ``viewer`` (in place when a layer has its role).

    ``source`` (napari's layer source: the file and reader a layer came from) is given to a
    layer made here; with ``finish_later``, its colour bar or outlines wait for
    :func:`.display.finish_inserted`; with ``hidden``, a layer made here is added hidden
    (the caller shows it). ``made``: the new layer, made already from ``item`` (in a worker,
    with ``source`` and ``hidden``), added when no layer of its role can be updated in place:
    on top, or at index ``at`` of the layer list. Returns the layer shown.
    """
    import contextlib

    from napari.layers import Layer

    data, kwargs, kind = item if len(item) == 3 else (*item, "image")
    role = kwargs["metadata"][ROLE]
    old = find_layer(viewer, role)
    if old is not None and old._type_string == kind and _same_content(old, kwargs):
        swap["added"][role] = old
        return old
    if old is not None and old._type_string == kind and np.ndim(old.data) == np.ndim(data):
        _update_in_place(old, data, kwargs)
        swap["added"][role] = old
        swap["updated"].append(old)
        return old
    if old is not None:
        viewer.layers.remove(old)
    layer = made
    if layer is None:
        with source if source is not None else contextlib.nullcontext():
            layer = Layer.create(data, {**kwargs, "visible": False} if hidden else kwargs, kind)
    if finish_later:
        from . import display

        display.finish_later(layer)
    if at is None:
        viewer.add_layer(layer)
    else:
        viewer.layers.insert(at, layer)
    swap["added"][role] = layer
    return layer


def end_replace(viewer: napari.Viewer, swap: dict[str, Any]) -> dict[str, Any]:
    """Frame the view (a first result) or keep the slice (another model), tell the listeners;
    returns ``{role: layer}``."""
    from . import display

    if swap["first"]:
        display.reframe(viewer)
    else:  # another model or result of the same brain: stay on the slice shown
        display.orient(viewer)
    added = swap["added"]
    atom_map = added.get("atom_map")
    if atom_map is not None and atom_map in swap["updated"]:
        for callback in list(_RESULT_LISTENERS.get(viewer, [])):
            callback(atom_map)
    return added


import weakref  # noqa: E402

_RESULT_LISTENERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def on_result_updated(viewer: napari.Viewer, callback) -> None:
    """Call ``callback(atom_map_layer)`` when :func:`replace_result_layers` puts another
    result or model into the viewer's existing atom-map layer (no layer is inserted then)."""
    _RESULT_LISTENERS.setdefault(viewer, []).append(callback)


def _same_content(layer, kwargs) -> bool:
    meta, new = layer.metadata, kwargs["metadata"]
    role = new[ROLE]
    if role == "template":
        return meta.get("path") == new.get("path")
    if role == "networks":
        return meta.get(RESULT) == new.get(RESULT) and meta.get("atlas") == new.get("atlas")
    return False


def _update_in_place(layer, data, kwargs) -> None:
    """Give an existing layer new data and styling (one redraw, no new visual)."""
    meta = kwargs["metadata"]
    affine = np.asarray(kwargs.get("affine", np.eye(np.ndim(data) + 1)), float)
    if not np.allclose(layer.affine.affine_matrix, affine):
        layer.affine = affine
    if layer._type_string == "image" and "contrast_limits" in kwargs:
        lo, hi = kwargs["contrast_limits"]
        layer.data = data
        layer.contrast_limits_range = (min(lo, hi - 1e-6), hi)
        layer.contrast_limits = (lo, hi)
    else:
        layer.data = data
    if "colormap" in kwargs:
        layer.colormap = kwargs["colormap"]
    if "features" in kwargs:
        layer.features = kwargs["features"]
    layer.metadata.clear()
    layer.metadata.update(meta)
    if meta.get(ROLE) == "atom_map":
        layer.metadata["colormap_key"] = (float(meta.get("threshold", 0.0)),
                                          float(max(abs(v) for v in kwargs["contrast_limits"])))
    if layer.name != kwargs["name"]:
        layer.name = kwargs["name"]
    if "visible" in kwargs:
        layer.visible = kwargs["visible"]
    finish_layer(layer)


def set_axial_view(viewer: napari.Viewer) -> None:
    """Axial slices seen from above, anterior up, left/right per :func:`.display.convention`."""
    from . import display

    if viewer.dims.ndim >= 3:
        viewer.dims.ndisplay = 2
    display.reframe(viewer)


def result_path_of(layer) -> Path | None:
    """The result folder a layer came from, or ``None``."""
    path = layer.metadata.get(RESULT)
    return Path(path) if path else None


_DOCKING = ("dock_tabbed", "docked_widgets_with", "raise_dock")


def __getattr__(name: str):
    """The docking helpers live in :mod:`._docking` (it imports Qt; this module need not)."""
    if name in _DOCKING:
        from . import _docking

        return getattr(_docking, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
