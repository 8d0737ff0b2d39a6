"""Functional-brain-network (FBN) templates on the data's grid.

A template is either a *label* image (3D, integers; each non-zero value is one network,
as in Yeo et al. 2011) or a stack of *maps* (4D, one network per volume, as Smith et
al. 2009's ICA z-maps). Bundled templates (:data:`napari_brainorg.datasets.BUNDLED_ATLASES`)
are on the FSL MNI152 2 mm grid; any template is brought onto the analysis mask's grid
(nearest neighbour for labels, so labels stay integers; continuous for maps), noted in
:attr:`FBNAtlas.notes` and warned about, then restricted to the mask's voxels.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import AtlasError, BrainorgWarning, did_you_mean
from ._images import _load_img, load_mask, to_grid

if TYPE_CHECKING:  # pragma: no cover
    import nibabel

__all__ = ["FBNAtlas", "EmptyNetworkWarning", "label_sidecar", "load_fbn", "YEO7_COLORS", "YEO17_COLORS"]


class EmptyNetworkWarning(BrainorgWarning):
    """A network of a template has no voxel inside the analysis mask."""


def _rgba(rows) -> np.ndarray:
    rgb = np.asarray(rows, dtype=float) / 255.0
    return np.column_stack([rgb, np.ones(len(rgb))])


#: Yeo et al. 2011 colours (``Yeo2011_7Networks_ColorLUT.txt``), networks 1..7.
YEO7_COLORS = _rgba([
    (120, 18, 134), (70, 130, 180), (0, 118, 14), (196, 58, 250),
    (220, 248, 164), (230, 148, 34), (205, 62, 78),
])

#: Yeo et al. 2011 colours (``Yeo2011_17Networks_ColorLUT.txt``), networks 1..17.
YEO17_COLORS = _rgba([
    (120, 18, 134), (255, 0, 0), (70, 130, 180), (42, 204, 164), (74, 155, 60),
    (0, 118, 14), (196, 58, 250), (255, 152, 213), (220, 248, 164), (122, 135, 50),
    (119, 140, 176), (230, 148, 34), (135, 50, 74), (12, 48, 255), (0, 0, 130),
    (255, 255, 0), (205, 62, 78),
])

# matplotlib's "tab10" then the light half of "tab20": distinct on a grey template.
_QUALITATIVE = _rgba([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
])

_BUNDLED_COLORS = {
    "yeo7": YEO7_COLORS, "yeo7_liberal": YEO7_COLORS, "schaefer400_yeo7": YEO7_COLORS,
    "yeo17": YEO17_COLORS, "yeo17_liberal": YEO17_COLORS,
}

# The bundled Smith 2009 maps keep only values above their threshold; the same cut
# after resampling keeps their extent (interpolation creates small values at edges).
_BUNDLED_THRESHOLDS = {"smith10": 2.3, "smith10_thr3": 3.0}


def qualitative_colors(n: int) -> np.ndarray:
    """``n`` fixed RGBA colours (tab10/tab20, then evenly spaced hues)."""
    if n <= len(_QUALITATIVE):
        return _QUALITATIVE[:n].copy()
    import colorsys

    extra = [colorsys.hsv_to_rgb((0.618033988749895 * i) % 1.0, 0.65, 0.95) for i in range(n - len(_QUALITATIVE))]
    return np.vstack([_QUALITATIVE, np.column_stack([np.asarray(extra), np.ones(len(extra))])])


@dataclass
class FBNAtlas:
    """Functional brain networks restricted to the voxels of an analysis mask.

    Attributes
    ----------
    name : str
    network_names : list of str
    maps : ndarray of shape (n_networks, n_voxels)
        float32, in the mask's voxel order (C order of its non-zero voxels): 0/1 for
        a label atlas, the map values (e.g. z) for a map atlas.
    kind : {"labels", "maps"}
    colors : ndarray of shape (n_networks, 4)
        RGBA in 0..1: Yeo's published colours for the Yeo templates, a fixed
        qualitative palette otherwise.
    source : str
        The bundled name's file or the user's path.
    threshold : float
        Default cut of :meth:`masks` for map atlases (``maps > threshold``).
    notes : list of str
        Resampling and other changes made on loading.
    """

    name: str
    network_names: list[str]
    maps: np.ndarray
    kind: str
    colors: np.ndarray
    source: str
    threshold: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def n_networks(self) -> int:
        return int(self.maps.shape[0])

    def masks(self, threshold: float | None = None) -> np.ndarray:
        """Network membership of each mask voxel.

        Parameters
        ----------
        threshold : float, optional
            For map atlases, a voxel belongs to a network when its value is above
            ``threshold`` (default :attr:`threshold`). Ignored for label atlases.

        Returns
        -------
        ndarray of shape (n_networks, n_voxels), bool
            Label atlases: disjoint; map atlases may overlap.
        """
        if self.kind == "labels":
            return self.maps > 0
        thr = self.threshold if threshold is None else float(threshold)
        return self.maps > thr

    def network_maps(self, threshold: float | None = None) -> np.ndarray:
        """Continuous network maps for spatial correlation, (n_networks, n_voxels) float32.

        Label atlases: the 0/1 indicator. Map atlases: the values above the threshold,
        0 elsewhere.
        """
        if self.kind == "labels":
            return self.maps.astype(np.float32, copy=False)
        return np.where(self.masks(threshold), self.maps, 0.0).astype(np.float32)

    def label_image(self, mask_img, threshold: float | None = None) -> nibabel.Nifti1Image:
        """Integer label volume on the data grid (for display).

        Value ``i + 1`` marks network ``network_names[i]``, 0 no network. Where maps
        overlap, the network with the highest value wins.

        Parameters
        ----------
        mask_img : nibabel image, path or "mni"
            The mask whose voxels :attr:`maps` are on.
        """
        import nibabel as nib

        mask_img = load_mask(mask_img)
        mask = np.asarray(mask_img.dataobj) > 0
        if int(mask.sum()) != self.maps.shape[1]:
            raise AtlasError(
                f"'mask_img' has {int(mask.sum())} voxels but the atlas {self.name!r} was loaded "
                f"on a mask of {self.maps.shape[1]} voxels; use the same mask."
            )
        inside = self.masks(threshold)
        if self.n_networks == 0:
            labels = np.zeros(self.maps.shape[1], dtype=np.int32)
        else:
            scored = np.where(inside, self.maps, -np.inf)
            labels = (np.argmax(scored, axis=0) + 1).astype(np.int32)
            labels[~inside.any(axis=0)] = 0
        vol = np.zeros(mask.shape, dtype=np.int32)
        vol[mask] = labels
        return nib.Nifti1Image(vol, mask_img.affine)


def _read_label_names(labels) -> list[str] | dict[int, str]:
    """Names from a list, or a CSV/TSV: one name per line, or ``index,name`` rows."""
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels)
        if not path.is_file():
            raise AtlasError(f"'labels' file {str(path)!r} does not exist.")
        import pandas as pd

        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        table = pd.read_csv(path, sep=sep, header=None, dtype=str, keep_default_na=False)
        if table.shape[1] >= 2:
            idx = pd.to_numeric(table.iloc[:, 0], errors="coerce")
            if idx.iloc[1:].notna().all():
                if pd.isna(idx.iloc[0]):  # a header row
                    table, idx = table.iloc[1:], idx.iloc[1:]
                return {int(i): str(n).strip() for i, n in zip(idx, table.iloc[:, 1])}
        names = [str(v).strip() for v in table.iloc[:, 0]]
        return names
    return [str(v) for v in labels]


_BACKGROUND = {"background", "empty", "unknown", "none", "0", "???", ""}

#: Sidecar tables of label names beside a NIfTI ``NAME.nii[.gz]``, in the order they are looked for
#: (the napari reader names a label image's values from the same files).
LABEL_SIDECARS = ("{stem}.tsv", "{stem}.csv", "{stem}.txt", "{stem}_labels.tsv", "{stem}_labels.csv")


def label_sidecar(path: str | os.PathLike) -> Path | None:
    """The table of label names beside an atlas ``NAME.nii[.gz]`` (:data:`LABEL_SIDECARS`), or None.

    A sidecar holds one name per network (label order, or volume order for maps; a
    leading background name is skipped) or ``index,name`` rows, with or without a header.
    """
    path = Path(path)
    stem = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem
    for pattern in LABEL_SIDECARS:
        candidate = path.with_name(pattern.format(stem=stem))
        if candidate.is_file():
            return candidate
    return None


def _names_for(values: np.ndarray, labels, default_prefix: str, what: str) -> list[str]:
    """Names for the network values (label integers, or volume numbers 1..n)."""
    n = len(values)
    if labels is None:
        return [f"{default_prefix}_{int(v)}" for v in values]
    named = _read_label_names(labels)
    given = f"'labels' {str(labels)!r}" if isinstance(labels, (str, os.PathLike)) else "'labels'"
    if isinstance(named, dict):
        missing = [int(v) for v in values if int(v) not in named]
        if missing:
            raise AtlasError(f"{given} gives no name for {what} values {missing[:10]}.")
        return [named[int(v)] for v in values]
    if len(named) == n + 1 and named[0].strip().lower() in _BACKGROUND:
        named = named[1:]
    if len(named) != n:
        raise AtlasError(
            f"{given} has {len(named)} names but the {what} has {n} networks "
            f"({'values ' + str([int(v) for v in values[:10]]) if what == 'label image' else 'volumes'})."
        )
    return named


def load_fbn(atlas, mask_img, *, labels=None, threshold: float | None = None) -> FBNAtlas:
    """Load a functional-brain-network template onto the voxels of an analysis mask.

    Parameters
    ----------
    atlas : str, path, nibabel image or nilearn atlas bunch
        A nilearn atlas (an object with ``maps`` and ``labels``, as
        ``nilearn.datasets.fetch_atlas_*`` return) gives its maps and, unless ``labels``
        is given, its labels. Otherwise a bundled name (:data:`napari_brainorg.datasets.BUNDLED_ATLASES`: ``"smith10"``,
        ``"yeo7"``, ``"yeo17"``, ...) or a NIfTI: a 3D integer label image (one network
        per non-zero label) or a 4D stack of maps (one network per volume).
    mask_img : "mni", path or nibabel image
        The analysis mask (e.g. :attr:`FMRIData.mask_img`); the template is brought
        onto its grid (nearest for labels, continuous for maps) when needed.
    labels : list of str or path, optional
        Network names: a list (one per label in increasing order, or per volume; a
        leading background name is skipped) or a CSV/TSV (one name per line, or
        ``index,name`` rows). Default for user files: their sidecar table of names
        (:func:`label_sidecar`: ``NAME.tsv``, ``NAME.csv``, ``NAME.txt``,
        ``NAME_labels.tsv`` or ``NAME_labels.csv`` beside ``NAME.nii.gz``), else
        ``network_<k>`` (``k`` the label value, or the volume number from 1).
    threshold : float, optional
        Map atlases: a voxel belongs to a network when its value exceeds this.
        Default 2.3 for ``smith10``, 3.0 for ``smith10_thr3`` (their own cuts), 0 for
        a user's maps (taken as already thresholded; give a value for z-maps).

    Returns
    -------
    FBNAtlas

    Raises
    ------
    AtlasError
        An unknown name, a missing file, an image that is neither 3D integer labels
        nor 4D maps, or names that do not match the networks.
    """
    if not isinstance(atlas, (str, os.PathLike)) and hasattr(atlas, "maps"):  # nilearn's Bunch
        if labels is None and getattr(atlas, "labels", None) is not None:
            labels = [str(name.decode() if isinstance(name, bytes) else name) for name in atlas.labels]
        atlas = atlas.maps
    mask_img = load_mask(mask_img)
    mask = np.asarray(mask_img.dataobj) > 0
    img, source, name, bundled = _open_atlas(atlas)
    notes: list[str] = []
    if labels is None and bundled is None and source != "<in-memory image>":
        labels = label_sidecar(source)
        if labels is not None:
            notes.append(f"{name}: network names from {labels.name}.")

    data = np.asarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    what = Path(source).name if source != "<in-memory image>" else "the atlas image"
    if data.ndim == 3:
        kind = "labels"
        maps, names = _label_networks(data, img.affine, mask_img, mask, name=name, what=what, bundled=bundled,
                                      labels=labels, notes=notes)
    elif data.ndim == 4:
        kind = "maps"
        maps, names = _map_networks(data, img.affine, mask_img, mask, name=name, what=what, bundled=bundled,
                                    labels=labels, notes=notes)
    else:
        raise AtlasError(
            f"{what} has shape {data.shape}; expected a 3D integer label image (one network "
            "per label) or a 4D stack of maps (one network per volume)."
        )

    if threshold is None:
        threshold = _BUNDLED_THRESHOLDS.get(bundled, 0.0) if kind == "maps" else 0.0
    colors = _BUNDLED_COLORS.get(bundled)
    if colors is None or len(colors) != len(names):
        colors = qualitative_colors(len(names))
    fbn = FBNAtlas(name=name, network_names=[str(n) for n in names], maps=maps, kind=kind,
                   colors=np.asarray(colors, dtype=float), source=source, threshold=float(threshold),
                   notes=notes)
    _warn_empty_or_broad_networks(fbn, threshold, mask)
    return fbn


def _open_atlas(atlas) -> tuple[nibabel.spatialimages.SpatialImage, str, str, str | None]:
    """Open a template given as a bundled name, a NIfTI path or a nibabel image.

    Returns
    -------
    img : nibabel image
        Data not read yet.
    source : str
        The file read, or ``"<in-memory image>"``.
    name : str
        The bundled name, or the file name without its extensions (``"atlas"`` for an
        in-memory image).
    bundled : str or None
        The bundled name, None for the user's templates.

    Raises
    ------
    AtlasError
        An unknown name (with the closest bundled one), a missing or unreadable file, or
        an object that is not an image.
    """
    from .. import datasets

    if isinstance(atlas, str) and atlas in datasets.BUNDLED_ATLASES:
        source = str(datasets.atlas_path(atlas))
        return _load_img(source, "atlas"), source, atlas, atlas
    if isinstance(atlas, (str, os.PathLike)):
        path = Path(atlas)
        looks_like_file = path.suffix.lower() in (".nii", ".gz", ".img", ".hdr") or os.sep in str(atlas)
        if not path.is_file():
            allowed = list(datasets.BUNDLED_ATLASES)
            if looks_like_file:
                raise AtlasError(
                    f"'atlas' {str(atlas)!r} is not a file; give an existing NIfTI path or one of {allowed}."
                )
            raise AtlasError(
                f"'atlas' must be one of {allowed} or a NIfTI path; {str(atlas)!r} was provided."
                + did_you_mean(str(atlas), allowed)
            )
        try:
            img = _load_img(path, "atlas")
        except Exception as exc:
            raise AtlasError(f"'atlas' {path.name!r} cannot be read as NIfTI: {exc}") from exc
        return img, str(path), path.name.split(".")[0], None
    try:
        img = _load_img(atlas, "atlas")
    except TypeError as exc:
        raise AtlasError(str(exc).replace("atlas must", "'atlas' must")) from exc
    fname = img.get_filename()
    source = str(fname) if fname else "<in-memory image>"
    return img, source, Path(fname).name.split(".")[0] if fname else "atlas", None


def _label_networks(data: np.ndarray, affine: np.ndarray, mask_img, mask: np.ndarray, *, name: str, what: str,
                    bundled: str | None, labels, notes: list[str]) -> tuple[np.ndarray, list[str]]:
    """One 0/1 network per label of a 3D label image, on the mask's voxels.

    Parameters
    ----------
    data : ndarray of shape (x, y, z)
        The label image, on the grid of ``affine``; brought onto the mask's grid by
        nearest neighbour (noted in ``notes``, warned when resampled).
    affine : ndarray of shape (4, 4)
    mask_img : nibabel.Nifti1Image
    mask : ndarray of shape (x', y', z'), bool
        Its voxels.
    name, what : str
        The atlas in notes, and its file in errors.
    bundled : str or None
        The bundled name, whose label names are known.
    labels
        As in :func:`load_fbn`.
    notes : list of str
        Appended to.

    Returns
    -------
    maps : ndarray of shape (n_networks, n_voxels), float32
    names : list of str

    Raises
    ------
    AtlasError
        Non-integer or negative values, no label, or names that do not match the labels.
    """
    finite = np.isfinite(data)
    integer = finite.all() and np.array_equal(data, np.round(data)) and (data >= 0).all()
    if not integer:
        bad = np.argwhere(~finite | (data != np.round(np.nan_to_num(data))) | (data < 0))[0]
        raise AtlasError(
            f"{what} is a 3D image with non-integer or negative values (e.g. "
            f"{data[tuple(bad)]!r} at voxel {tuple(int(v) for v in bad)}); expected a 3D "
            "integer label image (one network per label) or a 4D stack of maps (one "
            "network per volume)."
        )
    values = np.unique(data[data > 0]).astype(np.int64)
    if values.size == 0:
        raise AtlasError(f"{what} has no non-zero label; expected network labels 1..n.")
    ints = data.astype(np.int32)
    on_grid = to_grid(ints, affine, mask_img, interpolation="nearest", what=f"atlas {name}",
                      notes=notes, stacklevel=4)
    inside = on_grid[mask]
    maps = (inside[None, :] == values[:, None]).astype(np.float32)
    if not bundled:
        return maps, _names_for(values, labels, "network", "label image")
    from .. import datasets

    names = list(labels) if labels is not None else datasets.atlas_labels(bundled)
    expected = np.arange(1, len(names) + 1)
    if len(names) != values.size or (labels is None and not np.array_equal(values, expected)):
        raise AtlasError(f"Bundled atlas {bundled!r} has labels {values.tolist()} but {len(names)} names.")
    return maps, names


def _map_networks(data: np.ndarray, affine: np.ndarray, mask_img, mask: np.ndarray, *, name: str, what: str,
                  bundled: str | None, labels, notes: list[str]) -> tuple[np.ndarray, list[str]]:
    """One network per volume of a 4D stack of maps, on the mask's voxels.

    Parameters
    ----------
    data : ndarray of shape (x, y, z, n_networks)
        The maps, on the grid of ``affine``; brought onto the mask's grid by continuous
        interpolation (noted in ``notes``, warned when resampled).
    affine, mask_img, mask, name, what, bundled, labels, notes
        As in :func:`_label_networks`.

    Returns
    -------
    maps : ndarray of shape (n_networks, n_voxels), float32
        The map values.
    names : list of str

    Raises
    ------
    AtlasError
        NaN or infinite values, or names that do not match the maps.
    """
    if not np.isfinite(data).all():
        raise AtlasError(f"{what} has NaN or infinite values; expected finite network maps.")
    on_grid = to_grid(data.astype(np.float32), affine, mask_img, interpolation="continuous",
                      what=f"atlas {name}", notes=notes, stacklevel=4)
    maps = np.ascontiguousarray(on_grid[mask].T, dtype=np.float32)
    values = np.arange(1, data.shape[3] + 1)
    if not bundled:
        return maps, _names_for(values, labels, "network", "map stack")
    from .. import datasets

    names = list(labels) if labels is not None else datasets.atlas_labels(bundled)
    if len(names) != data.shape[3]:
        raise AtlasError(f"'labels' has {len(names)} names for the {data.shape[3]} maps of {bundled!r}.")
    return maps, names


def _warn_empty_or_broad_networks(fbn: FBNAtlas, threshold, mask: np.ndarray) -> None:
    """Warn (and note in ``fbn.notes``) about networks that the mask makes meaningless.

    A network without a voxel inside the mask (:class:`EmptyNetworkWarning`), or a map
    network covering more than half of the mask at ``threshold`` (maps not thresholded).
    Warnings point at the caller of :func:`load_fbn`.
    """
    member = fbn.masks()
    empty = [n for n, m in zip(fbn.network_names, member) if not m.any()]
    if empty:
        msg = f"atlas {fbn.name}: networks {empty} have no voxel inside the mask ({mask.sum()} voxels)."
        warnings.warn(msg, EmptyNetworkWarning, stacklevel=3)
        fbn.notes.append(msg)
    if fbn.kind == "maps":
        broad = [n for n, m in zip(fbn.network_names, member) if m.mean() > 0.5]
        if broad:
            msg = (f"atlas {fbn.name}: networks {broad} cover more than half of the mask at threshold "
                   f"{threshold:g}; for unthresholded maps give 'threshold' (e.g. 2.3 for z-maps).")
            warnings.warn(msg, BrainorgWarning, stacklevel=3)
            fbn.notes.append(msg)
