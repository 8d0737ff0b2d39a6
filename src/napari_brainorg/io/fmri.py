"""fMRI inputs: 4D NIfTI runs through a brain mask, or region time series.

Every subject heard the same story, so every subject's data has the same number of
volumes and, after loading, the same columns (voxels of one analysis mask, or named
regions). Problems in the inputs are either errors that name the file and the value,
or documented fixes that are warned about and recorded in :attr:`FMRIData.notes`:

===============================  ===================================================
input                            what happens
===============================  ===================================================
3D image, one volume             :class:`~napari_brainorg.errors.FMRIInputError`
volume count != ``n_volumes``    :class:`~napari_brainorg.errors.FMRIInputError`
NaN/inf inside the mask          error (``on_nan="error"``, default) or the voxels
                                 leave the mask (``on_nan="drop"``), noted and warned
constant voxels inside the mask  leave the mask (all subjects), noted and warned
                                 (:class:`DroppedVoxelsWarning`)
image on another grid            resampled to the mask grid (trilinear), noted and
                                 warned (:class:`~napari_brainorg.errors.ResamplingWarning`);
                                 an affine that differs by axis order or flips only
                                 is reoriented exactly, without interpolation
header TR != ``tr``              ``tr`` wins; noted and warned (:class:`TRMismatchWarning`)
subjects on different grids      each resampled to the mask grid; with ``mask=None``
                                 (mask computed from the data) an error
===============================  ===================================================

Reading images, the analysis mask and bringing arrays onto its grid live in
:mod:`._images`, finding the runs of a BIDS folder in :mod:`._bids`; their public
functions are importable from here.
"""

from __future__ import annotations

import os
import re
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._progress import check_cancel, report
from ..errors import BrainorgWarning, FMRIInputError, ShapeError, check_choice
from ._bids import bids_sidecar_metadata, find_bids_runs
from ._images import (
    _RESAMPLE_CHUNK,
    _fmt_zooms,
    _load_img,
    _name,
    expand_images,
    load_mask,
    same_grid,
    to_grid,
)

if TYPE_CHECKING:  # pragma: no cover
    import nibabel

__all__ = [
    "DroppedVoxelsWarning",
    "FMRIData",
    "bids_sidecar_metadata",
    "check_distinct_runs",
    "TRMismatchWarning",
    "expand_images",
    "find_bids_runs",
    "load_fmri",
    "load_mask",
    "load_region_timeseries",
    "same_grid",
    "to_grid",
]


class DroppedVoxelsWarning(BrainorgWarning):
    """Voxels or regions left out of the analysis (constant, or NaN when asked)."""


class TRMismatchWarning(BrainorgWarning):
    """The repetition time in an image header differs from the one given."""


def _nilearn_no_standardize():
    # nilearn >= 0.14 spells "no standardisation" None (False is deprecated there);
    # earlier versions accept only False.
    import nilearn

    major, minor = (int(v) for v in nilearn.__version__.split(".")[:2])
    return None if (major, minor) >= (0, 14) else False


# --------------------------------------------------------------------------- data


@dataclass
class FMRIData:
    """fMRI of the subjects who heard one story, ready for the encoding models.

    Attributes
    ----------
    data : list of ndarray of shape (n_volumes, n_voxels) or (n_volumes, n_regions)
        float32, one per subject, the same columns for every subject.
    subjects : list of str
    kind : {"voxels", "regions"}
    mask_img : nibabel.Nifti1Image or None
        For voxels: the 3D analysis mask (uint8) on the data grid; column ``j`` of
        every array is the ``j``-th non-zero voxel of the mask in C order (nilearn's
        order). ``None`` for regions.
    region_names : list of str or None
        Column names for regions; ``None`` for voxels.
    tr : float or None
        Repetition time in seconds (given, or read from the headers).
    sources : list of str
        Where each subject's data came from.
    notes : list of str
        Every fix applied to the inputs (resampling, reorientation, dropped voxels...).
    runs : list of (str, int, float)
        With several stories (:func:`concat_story_runs`): each story's name, volumes and
        TR, in the order its rows follow one another in ``data``; empty for one story.
    """

    data: list[np.ndarray]
    subjects: list[str]
    kind: str
    mask_img: nibabel.Nifti1Image | None
    region_names: list[str] | None
    tr: float | None
    sources: list[str]
    notes: list[str] = field(default_factory=list)
    runs: list[tuple[str, int, float]] = field(default_factory=list)

    @property
    def n_volumes(self) -> int:
        return int(self.data[0].shape[0])

    @property
    def n_features(self) -> int:
        """Number of voxels (or regions) per subject."""
        return int(self.data[0].shape[1])

    def unmask(self, values) -> nibabel.Nifti1Image:
        """Put values of the mask's voxels back into a volume on the data grid.

        Parameters
        ----------
        values : array-like of shape (n_voxels,) or (n_maps, n_voxels)

        Returns
        -------
        nibabel.Nifti1Image
            3D for one map, 4D (x, y, z, n_maps) for several; 0 outside the mask.
        """
        if self.kind != "voxels" or self.mask_img is None:
            raise FMRIInputError(
                "unmask needs voxel data with a mask; this FMRIData holds regions "
                f"({self.region_names[:3] if self.region_names else []}...)."
            )
        return unmask(values, self.mask_img)


def concat_story_runs(per_story: dict[str, FMRIData], trs: dict[str, float] | None = None) -> FMRIData:
    """The runs of several stories, one after another, as one :class:`FMRIData`.

    Parameters
    ----------
    per_story : dict of str to FMRIData
        Story name -> that story's runs (one per subject), in story order. Every story
        must have the same subjects, in the same order, and the same voxels (one mask)
        or regions.
    trs : dict of str to float, optional
        Each story's TR (default: the data's own).

    Returns
    -------
    FMRIData
        ``data[s]`` of shape (sum of the stories' volumes, n_features), rows in story
        order; ``runs`` = [(story, n_volumes, tr), ...].
    """
    names = list(per_story)
    if not names:
        raise FMRIInputError("concat_story_runs needs at least one story.")
    first = per_story[names[0]]
    for name in names[1:]:
        other = per_story[name]
        if list(other.subjects) != list(first.subjects):
            raise FMRIInputError(
                f"story {name!r} has the subjects {list(other.subjects)}; story {names[0]!r} has "
                f"{list(first.subjects)}: every story needs one run per subject, in the same order.")
        if other.kind != first.kind or other.n_features != first.n_features:
            raise FMRIInputError(
                f"story {name!r} has {other.n_features} {other.kind}; story {names[0]!r} has "
                f"{first.n_features} {first.kind}: every story must be on the same mask or regions.")
        if first.kind == "regions" and list(other.region_names or []) != list(first.region_names or []):
            raise FMRIInputError(f"story {name!r} names its regions differently from story {names[0]!r}.")
    trs = trs or {}
    runs = [(n, per_story[n].n_volumes, float(trs.get(n) or per_story[n].tr or 0.0)) for n in names]
    data = [np.concatenate([per_story[n].data[s] for n in names], axis=0) for s in range(len(first.subjects))]
    sources = [" + ".join(f"{n}: {per_story[n].sources[s]}" for n in names) for s in range(len(first.subjects))]
    notes = [f"{n}: {note}" for n in names for note in per_story[n].notes]
    return FMRIData(data=data, subjects=list(first.subjects), kind=first.kind, mask_img=first.mask_img,
                    region_names=first.region_names, tr=first.tr, sources=sources, notes=notes, runs=runs)


def unmask(values, mask_img) -> nibabel.Nifti1Image:
    """Volume(s) on ``mask_img``'s grid from values of its non-zero voxels (C order).

    Parameters
    ----------
    values : array-like of shape (n_voxels,) or (n_maps, n_voxels)
    mask_img : nibabel.Nifti1Image
        3D mask.
    """
    import nibabel as nib

    mask = np.asarray(mask_img.dataobj) > 0
    values = np.asarray(values)
    n_vox = int(mask.sum())
    if values.ndim not in (1, 2) or values.shape[-1] != n_vox:
        raise ShapeError(
            f"'values' must have shape (n_voxels,) or (n_maps, n_voxels) with "
            f"n_voxels={n_vox} (voxels in the mask); got shape {values.shape}."
        )
    dtype = np.float32 if values.dtype.kind == "f" else values.dtype
    if values.ndim == 1:
        vol = np.zeros(mask.shape, dtype=dtype)
        vol[mask] = values
    else:
        vol = np.zeros(mask.shape + (values.shape[0],), dtype=dtype)
        vol[mask] = values.T
    return nib.Nifti1Image(vol, mask_img.affine)


# --------------------------------------------------------------------------- NIfTI runs


def _header_tr(img) -> float | None:
    zooms = img.header.get_zooms()
    if len(zooms) < 4 or not np.isfinite(zooms[3]) or zooms[3] <= 0:
        return None
    tr = float(zooms[3])
    try:
        unit = img.header.get_xyzt_units()[1]
    except Exception:  # pragma: no cover - non-NIfTI headers
        unit = "unknown"
    if unit == "unknown" and tr == 1.0:
        # 1 with no unit is what writers leave when they know no TR (nibabel's default)
        return None
    if unit == "msec":
        tr /= 1000.0
    elif unit == "usec":
        tr /= 1e6
    return tr


_SUB_RE = re.compile(r"(sub-[A-Za-z0-9]+)")


def _default_subjects(images) -> list[str]:
    names = []
    for i, img in enumerate(images):
        name = _name(img, f"subject_{i + 1:02d}")
        m = _SUB_RE.search(name)
        names.append(m.group(1) if m else re.sub(r"(\.nii(\.gz)?|\.npy|\.csv|\.tsv|\.txt)$", "", name))
    if len(set(names)) < len(names):
        seen: dict[str, int] = {}
        for n in names:
            seen[n] = seen.get(n, 0) + 1
        counter: dict[str, int] = {}
        out = []
        for n in names:
            if seen[n] > 1:
                counter[n] = counter.get(n, 0) + 1
                out.append(f"{n}_{counter[n]}")
            else:
                out.append(n)
        names = out
    return names


def _check_subjects(subjects, n: int) -> list[str] | None:
    if subjects is None:
        return None
    if isinstance(subjects, str):
        subjects = [subjects]
    subjects = [str(s) for s in subjects]
    if len(subjects) != n:
        raise FMRIInputError(f"'subjects' has {len(subjects)} names for {n} inputs; give one name per input.")
    dup = sorted({s for s in subjects if subjects.count(s) > 1})
    if dup:
        raise FMRIInputError(f"'subjects' must be unique; {dup} appear more than once.")
    return subjects


def check_distinct_runs(runs, names=None) -> None:
    """Refuse the same data twice: a file listed twice, or byte-identical files under two names.

    A duplicated subject is counted twice by every group statistic (noise ceiling,
    random-effects tests), so it is an error, not a warning: there is no study in which
    it is meant. Files are compared by path, then by SHA-256 among files of equal size
    (only those are read).

    Parameters
    ----------
    runs : list
        Paths (other items, e.g. arrays or images in memory, are skipped).
    names : list of str, optional
        How the message names each run (e.g. ``fmri.images[1]``); default the paths.

    Raises
    ------
    FMRIInputError
        Naming both files.
    """
    import hashlib

    seen: dict[Path, str] = {}
    by_size: dict[int, list[tuple[str, Path]]] = {}
    for i, item in enumerate(runs):
        if not isinstance(item, (str, os.PathLike)) or not Path(item).is_file():
            continue
        path = Path(item)
        label = f"{names[i]} {str(item)!r}" if names else repr(str(item))
        real = path.resolve()
        if real in seen:
            raise FMRIInputError(
                f"{label} is {seen[real]} listed again; expected each subject's run once (the same run twice "
                "would count as two subjects in every group statistic).")
        seen[real] = label
        by_size.setdefault(path.stat().st_size, []).append((label, path))
    for group in by_size.values():
        if len(group) < 2:
            continue
        digests: dict[str, str] = {}
        for label, path in group:
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(block)
            key = digest.hexdigest()
            if key in digests:
                raise FMRIInputError(
                    f"{label} is byte-identical to {digests[key]}; expected one run per subject (a copy under "
                    "another name would count as a second subject in every group statistic).")
            digests[key] = label


def _world(affine, ijk) -> str:
    xyz = np.asarray(affine) @ np.r_[np.asarray(ijk, dtype=float), 1.0]
    return "(" + ", ".join(f"{v:.1f}" for v in xyz[:3]) + ") mm"


def load_fmri(images, *, mask="mni", n_volumes: int | None = None, subjects=None,
              tr: float | None = None, standardize: bool = False, on_nan: str = "error",
              interpolation: str = "linear", progress=None, cancel=None) -> FMRIData:
    """Load 4D fMRI runs (one per subject) as time series of the voxels of one mask.

    Each run is brought onto the mask's grid (unchanged when it is already there,
    reoriented exactly when only axis order or direction differ, otherwise resampled
    by nilearn, trilinear by default), then masked with nilearn's
    :class:`~nilearn.maskers.NiftiMasker` (no smoothing, detrending or filtering
    here: the encoding step does its own preprocessing).

    Parameters
    ----------
    images : path, glob pattern, nibabel image, or a list of them
        4D runs (x, y, z, n_volumes), one per subject; a glob pattern stands for the
        files it matches, sorted (as in nilearn).
    mask : "mni", path, nibabel image, fitted nilearn masker or None
        The analysis mask. ``"mni"`` (default): the bundled FSL MNI152 2 mm brain mask.
        ``None``: computed from the data (nilearn ``compute_multi_epi_mask``,
        intersection of the subjects' masks); then every run must be on one grid.
    n_volumes : int, optional
        The number of volumes the stimulus needs; a run with another count is an error.
    subjects : list of str, optional
        One name per run; default the BIDS ``sub-XXX`` in the file name, else the
        file name.
    tr : float, optional
        Repetition time (s). Header TRs (``zooms[3]``) are read and compared; when
        they differ from ``tr`` by more than 1 ms, ``tr`` is kept and a
        :class:`TRMismatchWarning` is raised. Without ``tr``, the headers' TR is
        used (and must agree across runs).
    standardize : bool
        z-score each voxel's time series (mean 0, standard deviation 1, per subject).
    interpolation : {"linear", "continuous", "nearest"}
        How a run on another grid is resampled (nilearn's ``resample_img``):
        trilinear by default, as FSL and AFNI do for time series; ``"continuous"``
        (cubic spline) is about ten times slower.
    on_nan : {"error", "drop"}
        NaN or infinite values inside the mask: an error naming the file (default),
        or ``"drop"``: those voxels leave the mask for every subject (noted, warned).
    progress, cancel
        See :mod:`napari_brainorg._progress`; one step per run.

    Returns
    -------
    FMRIData
        ``kind="voxels"``; ``mask_img`` is the final mask (input mask minus dropped
        voxels) and ``data[s]`` has shape (n_volumes, n_voxels).

    Raises
    ------
    FMRIInputError
        3D images, wrong volume counts, NaN (with ``on_nan="error"``), runs with no
        signal inside the mask, disagreeing TRs, different grids with ``mask=None``.
    """
    from nilearn.maskers import NiftiMasker

    check_choice("on_nan", on_nan, ("error", "drop"))
    check_choice("interpolation", interpolation, ("linear", "continuous", "nearest"))
    images = expand_images(images)
    if not images:
        raise FMRIInputError("'images' is empty; give at least one 4D fMRI run.")
    subjects = _check_subjects(subjects, len(images)) or _default_subjects(images)
    check_distinct_runs(images)
    notes: list[str] = []
    imgs, names = _open_runs(images, subjects, n_volumes)
    tr = _resolve_tr(imgs, names, tr, notes)
    mask_img = _analysis_mask(mask, imgs, names, notes)
    mask_bool = np.asarray(mask_img.dataobj) > 0
    masker = NiftiMasker(mask_img=mask_img, standardize=_nilearn_no_standardize(), detrend=False).fit()

    data, bad_nan, bad_const = [], [], []
    for s, (img, name) in enumerate(zip(imgs, names)):
        check_cancel(cancel)
        report(progress, "fmri: load runs", s, len(imgs))
        ts, finite = _masked_run(img, name, mask_img, mask_bool, masker, interpolation=interpolation,
                                 notes=notes, cancel=cancel)
        const = _check_run_values(ts, finite, name, mask_img, mask_bool, on_nan=on_nan, notes=notes)
        bad_nan.append(~finite)
        bad_const.append(const)
        data.append(ts)
    report(progress, "fmri: load runs", len(imgs), len(imgs))

    data, mask_img = _leave_out_voxels(data, bad_nan, bad_const, mask_bool, mask_img, notes)
    if standardize:
        data = [_zscore(d) for d in data]
        notes.append("standardize: each voxel's time series z-scored per subject.")
    return FMRIData(data=data, subjects=list(subjects), kind="voxels", mask_img=mask_img,
                    region_names=None, tr=tr,
                    sources=[str(i) if isinstance(i, (str, os.PathLike)) else n for i, n in zip(images, names)],
                    notes=notes)


def _open_runs(images: list, subjects: list[str], n_volumes: int | None) -> tuple[list, list[str]]:
    """Open every run (headers only) and check that each is 4D with the story's volumes.

    Parameters
    ----------
    images : list
        What :func:`expand_images` returned, one run per subject.
    subjects : list of str
        One name per run, used where a run has no file name.
    n_volumes : int or None
        Volumes the story needs; None: only that every run has the same count.

    Returns
    -------
    imgs : list of nibabel images
        Data not read yet.
    names : list of str
        How errors, warnings and notes name each run.

    Raises
    ------
    FMRIInputError
        A 3D (or single-volume) image, another number of dimensions, a volume count
        other than ``n_volumes``, or runs with different volume counts.
    """
    imgs, names = [], []
    for i, item in enumerate(images):
        img = _load_img(item, "fMRI image")
        name = _name(item, f"image {i + 1} ({subjects[i]})")
        shape = img.shape
        if len(shape) == 3 or (len(shape) == 4 and shape[3] == 1):
            raise FMRIInputError(
                f"{name} is a 3D image (shape {shape}); expected a 4D fMRI run of shape "
                "(x, y, z, n_volumes)."
            )
        if len(shape) != 4:
            raise FMRIInputError(f"{name} has shape {shape}; expected a 4D fMRI run (x, y, z, n_volumes).")
        if n_volumes is not None and shape[3] != int(n_volumes):
            raise FMRIInputError(
                f"{name} has {shape[3]} volumes; the story needs {int(n_volumes)} (--n-volumes)."
            )
        imgs.append(img)
        names.append(name)
    counts = {names[i]: img.shape[3] for i, img in enumerate(imgs)}
    if len(set(counts.values())) > 1:
        raise FMRIInputError(
            f"The runs have different numbers of volumes {counts}; every subject must have "
            "heard the same story with the same volumes (give n_volumes to check against the story)."
        )
    return imgs, names


def _analysis_mask(mask, imgs: list, names: list[str], notes: list[str]):
    """The analysis mask: ``mask`` as given (:func:`load_mask`), or computed from the runs.

    With ``mask=None`` the mask is the intersection of the subjects' EPI masks (nilearn
    ``compute_multi_epi_mask``), which needs every run on one grid; noted.

    Returns
    -------
    nibabel.Nifti1Image
        3D, uint8.

    Raises
    ------
    FMRIInputError
        With ``mask=None``, runs on different grids.
    """
    if mask is not None:
        return load_mask(mask)
    grids = {(img.shape[:3], tuple(np.round(img.affine, 3).ravel())) for img in imgs}
    if len(grids) > 1:
        desc = ", ".join(f"{n}: {img.shape[:3]} {_fmt_zooms(img.header.get_zooms()[:3])} mm"
                         for n, img in zip(names, imgs))
        raise FMRIInputError(
            f"The subjects' runs are on different grids ({desc}); give a mask (for example "
            "mask='mni') so that every run is resampled onto the mask's grid."
        )
    from nilearn.masking import compute_multi_epi_mask

    mask_img = compute_multi_epi_mask(imgs, threshold=1.0)
    mask_img = load_mask(mask_img)
    notes.append("mask: computed from the data (nilearn compute_multi_epi_mask, intersection "
                 f"of the subjects' masks): {int(np.asarray(mask_img.dataobj).sum())} voxels.")
    return mask_img


def _masked_run(img, name: str, mask_img, mask_bool: np.ndarray, masker, *, interpolation: str,
                notes: list[str], cancel) -> tuple[np.ndarray, np.ndarray]:
    """Read one run, bring it onto the mask grid and mask it, volume chunk by volume chunk.

    NaN and infinite values are found first, on the run's own grid (nilearn's masker and
    resampler would replace them silently), set to 0 and carried to the mask grid by
    nearest neighbour.

    Parameters
    ----------
    img : nibabel image
        A 4D run of shape (x, y, z, n_volumes), on any grid.
    name : str
        How messages name the run.
    mask_img : nibabel.Nifti1Image
        The 3D analysis mask.
    mask_bool : ndarray of shape (x', y', z'), bool
        Its voxels.
    masker : nilearn.maskers.NiftiMasker
        Fitted on ``mask_img``.
    interpolation, cancel
        As in :func:`load_fmri`; resampling is noted and warned once per run.
    notes : list of str
        Appended to.

    Returns
    -------
    ts : ndarray of shape (n_volumes, n_voxels), float32
        The run's time series in the mask's voxel order (0 where values were not finite).
    finite : ndarray of shape (n_voxels,), bool
        False for mask voxels with a NaN or infinite value at any volume.

    Raises
    ------
    FMRIInputError
        When the file is truncated or damaged.
    """
    import nibabel as nib

    if img.shape[:3] == mask_bool.shape and np.allclose(img.affine, mask_img.affine, atol=1e-4):
        return _masked_run_on_grid(img, name, mask_bool)
    try:
        vol = img.get_fdata(dtype=np.float32, caching="unchanged")
    except (OSError, EOFError, ValueError, zlib.error) as exc:  # a truncated or damaged file
        raise FMRIInputError(f"{name} cannot be read: {type(exc).__name__}: {exc}; the file is truncated "
                             "or damaged.") from None
    n_t = vol.shape[3]
    bad = np.zeros(vol.shape[:3], dtype=bool)
    for start in range(0, n_t, _RESAMPLE_CHUNK):
        chunk = vol[..., start:start + _RESAMPLE_CHUNK]
        not_finite = ~np.isfinite(chunk)
        if not_finite.any():
            bad |= not_finite.any(axis=3)
            chunk[not_finite] = 0.0
    if bad.any():
        bad = to_grid(bad.astype(np.uint8), img.affine, mask_img, interpolation="nearest",
                      what=name, warn=False) > 0
        finite = ~bad[mask_bool]
    else:
        finite = np.ones(int(mask_bool.sum()), dtype=bool)
    # volume chunks onto the mask grid and through the masker: a resampled copy of
    # the whole run never exists
    ts = np.empty((n_t, int(mask_bool.sum())), dtype=np.float32)
    for start in range(0, n_t, _RESAMPLE_CHUNK):
        check_cancel(cancel)
        stop = min(start + _RESAMPLE_CHUNK, n_t)
        first_chunk = start == 0
        chunk = to_grid(vol[..., start:stop], img.affine, mask_img, interpolation=interpolation,
                        what=name, notes=notes if first_chunk else None, warn=first_chunk,
                        stacklevel=4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ts[start:stop] = masker.transform(nib.Nifti1Image(np.ascontiguousarray(chunk), mask_img.affine))
    return ts, finite


def _masked_run_on_grid(img, name: str, mask_bool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_masked_run` for a run already on the mask's grid: the stored values of the
    mask's voxels only are read, scaled (the file's slope and intercept) and checked.

    Returns
    -------
    ts : ndarray of shape (n_volumes, n_voxels), float32
    finite : ndarray of shape (n_voxels,), bool
    """
    try:
        proxy = img.dataobj
        raw = np.asanyarray(proxy.get_unscaled()) if hasattr(proxy, "get_unscaled") else np.asanyarray(proxy)
    except (OSError, EOFError, ValueError, zlib.error) as exc:  # a truncated or damaged file
        raise FMRIInputError(f"{name} cannot be read: {type(exc).__name__}: {exc}; the file is truncated "
                             "or damaged.") from None
    if raw.ndim == 3:
        raw = raw[..., None]
    ts = np.ascontiguousarray(raw[mask_bool].T, dtype=np.float32)  # (n_volumes, n_voxels), C order as the masker
    del raw
    slope, inter = (getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0))
    if slope is not None and np.isfinite(slope) and slope not in (0.0, 1.0):
        ts *= np.float32(slope)
    if inter is not None and np.isfinite(inter) and inter != 0.0:
        ts += np.float32(inter)
    not_finite = ~np.isfinite(ts)
    finite = ~not_finite.any(axis=0)
    if not finite.all():
        ts[not_finite] = 0.0
    return ts, finite


def _check_run_values(ts: np.ndarray, finite: np.ndarray, name: str, mask_img, mask_bool: np.ndarray, *,
                      on_nan: str, notes: list[str]) -> np.ndarray:
    """Check one masked run for NaN/inf (per ``on_nan``) and find its constant voxels.

    Parameters
    ----------
    ts : ndarray of shape (n_volumes, n_voxels), float32
    finite : ndarray of shape (n_voxels,), bool
        From :func:`_masked_run`.
    name : str
    mask_img, mask_bool
        The analysis mask, to say where the first non-finite voxel is.
    on_nan : {"error", "drop"}
    notes : list of str
        Appended to (voxels dropped for NaN, constant voxels).

    Returns
    -------
    const : ndarray of shape (n_voxels,), bool
        Finite voxels whose time series is constant.

    Raises
    ------
    FMRIInputError
        NaN/inf inside the mask with ``on_nan="error"``, or no voxel with signal.
    """
    if not finite.all():
        n_bad = int((~finite).sum())
        first = np.argwhere(mask_bool)[np.flatnonzero(~finite)[0]]
        if on_nan == "error":
            raise FMRIInputError(
                f"{name} has NaN or infinite values in {n_bad} voxels inside the mask "
                f"(first at voxel {tuple(int(v) for v in first)}, {_world(mask_img.affine, first)}); "
                "expected finite values. Fix the image, use a mask that excludes them, or "
                "pass on_nan='drop' to leave those voxels out."
            )
        notes.append(f"{name}: {n_bad} voxels with NaN/inf left the mask (on_nan='drop').")
    ts_f = np.where(finite, ts, 0.0)
    const = finite & (ts_f.max(axis=0) == ts_f.min(axis=0))
    if const.all():
        raise FMRIInputError(
            f"{name} has no signal inside the mask (all {const.size} voxels are constant); "
            "is the run in the same space as the mask (e.g. MNI for mask='mni')?"
        )
    if const.any():
        frac = const.mean()
        notes.append(f"{name}: {int(const.sum())} constant voxels ({frac:.1%} of the mask, "
                     "e.g. outside the run's field of view) left the mask.")
    return const


def _leave_out_voxels(data: list[np.ndarray], bad_nan: list[np.ndarray], bad_const: list[np.ndarray],
                      mask_bool: np.ndarray, mask_img, notes: list[str]) -> tuple[list[np.ndarray], Any]:
    """Leave the voxels that are NaN/inf or constant in any run out for every subject.

    Parameters
    ----------
    data : list of ndarray of shape (n_volumes, n_voxels), float32
    bad_nan, bad_const : list of ndarray of shape (n_voxels,), bool
        One per run.
    mask_bool : ndarray of shape (x, y, z), bool
    mask_img : nibabel.Nifti1Image
    notes : list of str
        Appended to when voxels leave.

    Returns
    -------
    data : list of ndarray of shape (n_volumes, n_kept), float32
    mask_img : nibabel.Nifti1Image
        The mask without the voxels left out (uint8); the one given when none are.

    Warns
    -----
    DroppedVoxelsWarning
        Pointing at the caller of :func:`load_fmri`.
    """
    import nibabel as nib

    drop = np.zeros(mask_bool.sum(), dtype=bool)
    for a, b in zip(bad_nan, bad_const):
        drop |= a | b
    if not drop.any():
        return data, mask_img
    n_nan = int(np.logical_or.reduce(bad_nan).sum())
    n_const = int(drop.sum()) - n_nan if n_nan else int(drop.sum())
    warnings.warn(
        f"{int(drop.sum())} of {drop.size} mask voxels were left out for every subject "
        f"({n_const} constant in at least one run"
        + (f", {n_nan} with NaN/inf" if n_nan else "") + "); see FMRIData.notes.",
        DroppedVoxelsWarning, stacklevel=3,
    )
    keep = ~drop
    data = [np.ascontiguousarray(d[:, keep]) for d in data]
    new_mask = np.zeros_like(mask_bool)
    new_mask[mask_bool] = keep
    mask_img = nib.Nifti1Image(new_mask.astype(np.uint8), mask_img.affine)
    notes.append(f"mask: {int(keep.sum())} voxels remain of {keep.size} after leaving out "
                 f"{int(drop.sum())} (union over subjects).")
    return data, mask_img


def _zscore(d: np.ndarray) -> np.ndarray:
    mean = d.mean(axis=0, dtype=np.float64)
    std = d.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0
    return ((d - mean) / std).astype(np.float32)


def _resolve_tr(imgs, names, tr, notes) -> float | None:
    header = {n: _header_tr(img) for n, img in zip(names, imgs)}
    known = {n: v for n, v in header.items() if v is not None}
    if tr is not None:
        tr = float(tr)
        if not np.isfinite(tr) or tr <= 0:
            raise FMRIInputError(f"'tr' must be a positive number of seconds; {tr!r} was provided.")
        off = {n: v for n, v in known.items() if abs(v - tr) > 1e-3}
        if off:
            msg = (f"The header TR of {', '.join(f'{n} ({v:g} s)' for n, v in off.items())} differs "
                   f"from tr={tr:g} s; tr={tr:g} s is used.")
            warnings.warn(msg, TRMismatchWarning, stacklevel=4)
            notes.append(msg)
        return tr
    if not known:
        return None
    values = sorted(set(np.round(list(known.values()), 4)))
    if len(values) > 1:
        raise FMRIInputError(
            f"The runs' header TRs differ ({', '.join(f'{n}: {v:g} s' for n, v in known.items())}); "
            "give 'tr' (seconds)."
        )
    notes.append(f"tr: {values[0]:g} s read from the image headers.")
    return float(values[0])


# --------------------------------------------------------------------------- regions


def _numeric(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _table_rows(path: Path, suffix: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every non-empty line: ``.csv`` comma-, ``.tsv`` tab- and
    ``.txt`` whitespace-separated (as labs share them: numpy ``savetxt``, AFNI ``1D``)."""
    import csv
    import io

    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FMRIInputError(f"{path.name} cannot be read as a text table ({type(exc).__name__}: {exc}); "
                             "expected n_volumes rows of numbers.") from None
    if suffix == ".txt":
        return [(i + 1, line.split()) for i, line in enumerate(text.splitlines()) if line.strip()]
    reader = csv.reader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
    return [(reader.line_num, [c.strip() for c in row]) for row in reader if any(c.strip() for c in row)]


def _read_region_table(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """A region table: (n_volumes, n_regions) values and the header's region names, if any.

    The first row is a header when none of its cells is a number; a first row that mixes
    names and numbers is a data row with a bad value (an error naming it), never a header.
    """
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        return np.asarray(arr), None
    if suffix not in (".csv", ".tsv", ".txt"):
        raise FMRIInputError(
            f"{path.name}: region time series must be .csv, .tsv, .txt or .npy; got {suffix or 'no suffix'!r}."
        )
    rows = _table_rows(path, suffix)
    if not rows:
        raise FMRIInputError(f"{path.name} is empty; expected n_volumes rows × n_regions columns.")
    names = None
    if not any(_numeric(c) for c in rows[0][1]):
        names = rows[0][1]
        rows = rows[1:]
        if not rows:
            raise FMRIInputError(f"{path.name} has a header and no values; expected n_volumes rows of numbers.")
    width = len(names) if names is not None else len(rows[0][1])
    what = "the header" if names is not None else f"line {rows[0][0]}"
    for line, cells in rows:
        if len(cells) != width:
            raise FMRIInputError(
                f"{path.name}, line {line}: {len(cells)} values; {what} has {width}: expected one column per "
                "region on every line.")
        for c, v in enumerate(cells):
            if not _numeric(v):
                raise FMRIInputError(
                    f"{path.name}, line {line}, column {c + 1}: {v!r} is not a number; expected "
                    "n_volumes rows of numbers (one column per region, region names in an optional header).")
    values = np.array([[float(v) for v in cells] for _, cells in rows], dtype=np.float64)
    return values, names


def load_region_timeseries(paths, *, names=None, n_volumes: int | None = None,
                           subjects=None) -> FMRIData:
    """Load parcellated fMRI: one table of region time series per subject.

    Parameters
    ----------
    paths : path, glob pattern, ndarray, or a list of them
        CSV/TSV/TXT files (n_volumes rows × n_regions columns: comma-, tab- or
        whitespace-separated; an optional header of region names, recognised by having
        no number in it) or NPY files / arrays of shape (n_volumes, n_regions). A glob
        pattern stands for the files it matches, sorted.
    names : list of str, optional
        Region names, for files without a header (default ``region_<k>``). With a
        header they must agree with it.
    n_volumes : int, optional
        Volumes the stimulus needs; a table with another number of rows is an error.
    subjects : list of str, optional
        One name per table (default from the file names).

    Returns
    -------
    FMRIData
        ``kind="regions"``; regions that are constant for any subject are left out
        (noted and warned); NaN values are an error.
    """
    paths = expand_images(paths) if not isinstance(paths, np.ndarray) else [paths]
    if not paths:
        raise FMRIInputError("'paths' is empty; give at least one region time-series file.")
    check_distinct_runs(paths)
    subjects = _check_subjects(subjects, len(paths)) or _default_subjects(
        [p if isinstance(p, (str, os.PathLike)) else f"subject_{i + 1:02d}" for i, p in enumerate(paths)]
    )
    data, header_names, labels, sources = [], None, [], []
    for i, item in enumerate(paths):
        if isinstance(item, np.ndarray):
            arr, hdr, label = np.asarray(item), None, f"array {i + 1} ({subjects[i]})"
            sources.append(label)
        else:
            path = Path(item)
            if not path.is_file():
                raise FileNotFoundError(f"Region time-series file {str(path)!r} does not exist.")
            arr, hdr = _read_region_table(path)
            label = path.name
            sources.append(str(path))
        if arr.ndim != 2:
            raise ShapeError(f"{label} has shape {arr.shape}; expected (n_volumes, n_regions).")
        if n_volumes is not None and arr.shape[0] != int(n_volumes):
            raise FMRIInputError(
                f"{label} has {arr.shape[0]} volumes; the story needs {int(n_volumes)} (--n-volumes)."
            )
        if hdr is not None:
            if header_names is None:
                header_names = hdr
            elif hdr != header_names:
                diff = [(k, a, b) for k, (a, b) in enumerate(zip(header_names, hdr)) if a != b][:3]
                raise FMRIInputError(
                    f"{label}: region names differ from {labels[0]}'s "
                    f"(first differences (column, expected, found): {diff}); every subject needs the same regions."
                )
        bad = ~np.isfinite(arr)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise FMRIInputError(
                f"{label} has {int(bad.sum())} NaN/inf values (first at volume {int(r)}, region "
                f"{(hdr or names or [f'region_{k}' for k in range(arr.shape[1])])[c]!r}); expected finite values."
            )
        data.append(arr.astype(np.float32))
        labels.append(label)
    for d, lab in zip(data[1:], labels[1:]):
        if d.shape != data[0].shape:
            rows, cols = d.shape
            raise FMRIInputError(
                f"{lab} has {cols} regions (columns) and {rows} volumes; {labels[0]} has {data[0].shape[1]} and "
                f"{data[0].shape[0]}: every subject needs the same regions and volumes.")
    n_regions = data[0].shape[1]
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != n_regions:
            raise FMRIInputError(f"'names' has {len(names)} entries for {n_regions} regions.")
        if header_names is not None and names != header_names:
            raise FMRIInputError(
                f"'names' disagree with the header of {labels[0]} ({header_names[:3]}...); leave "
                "'names' out to use the header."
            )
    if header_names is not None and len(header_names) != n_regions:
        raise FMRIInputError(f"{labels[0]}: header has {len(header_names)} names for {n_regions} columns.")
    region_names = names or header_names or [f"region_{k}" for k in range(n_regions)]
    notes: list[str] = []
    const = np.zeros(n_regions, dtype=bool)
    for d, lab in zip(data, labels):
        c = d.max(axis=0) == d.min(axis=0)
        if c.all():
            raise FMRIInputError(
                f"{lab}: every one of its {n_regions} regions is constant (e.g. {region_names[0]!r} = "
                f"{float(d[0, 0]):g} at every volume); expected time series that vary: fix or leave out this subject.")
        if c.any():
            notes.append(f"{lab}: constant regions {[region_names[k] for k in np.flatnonzero(c)][:10]} left out.")
        const |= c
    if const.all():
        raise FMRIInputError(f"Every region is constant in at least one table ({'; '.join(notes[:3])}); no region "
                             "is left to model.")
    if const.any():
        warnings.warn(
            f"{int(const.sum())} of {n_regions} regions are constant in at least one table and were "
            f"left out for every subject: {[region_names[k] for k in np.flatnonzero(const)][:10]}.",
            DroppedVoxelsWarning, stacklevel=2,
        )
        keep = ~const
        data = [np.ascontiguousarray(d[:, keep]) for d in data]
        region_names = [n for n, k in zip(region_names, keep) if k]
    return FMRIData(data=data, subjects=list(subjects), kind="regions", mask_img=None,
                    region_names=list(region_names), tr=None, sources=sources, notes=notes)
