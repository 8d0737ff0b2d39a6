"""Atom maps vs functional brain networks: overlap scores, a spatial null, tables.

Each atom's brain map (its row of W, or its group z map) is cut into an *activated*
(positive) and a *deactivated* (negative) part (:func:`threshold_atom_maps`) and
compared with every network of a template (:class:`~napari_brainorg.io.atlases.FBNAtlas`)
by three scores (:func:`overlap_scores`), for all atoms × networks at once as matrix
products:

- overlap rate ``|part ∩ network| / |network|`` (the paper's score),
- Dice ``2 |part ∩ network| / (|part| + |network|)``,
- spatial correlation (Pearson, over the mask's voxels) of the signed continuous map
  (negated for the deactivated part) with the network's map (its indicator for a
  label atlas, its values for a map atlas).

A score alone is a glance; :func:`associate_atoms` makes it a test. Brain maps are
spatially smooth, so a voxel shuffle destroys the autocorrelation that makes large
chance overlaps likely and gives p-values far too small. The default null instead
moves the maps rigidly (:func:`spatial_shift_null`): a random 3D circular shift, with
random axis flips, inside the mask's bounding box, which keeps the autocorrelation.
A moved brain no longer fits the mask; how the mask voxels whose source falls outside
it get a value is the ``fill`` option:

- ``"reflect"`` (default): the map is continued beyond the mask by mirroring it
  across the mask's border, so every voxel gets a value and the field stays smooth
  across the border. Calibrated on smooth Gaussian noise (8-16 mm FWHM, Yeo-7,
  ``benchmarks/bench_networks_null.py``): 3-4 % of p-values below 0.05, slightly
  conservative.
- ``"patch"``: the uncovered voxels take values from further independent moves.
  Every value is a real one, but the seams between pieces cut the autocorrelation:
  about 6.5 % below 0.05 for the correlation score (liberal).
- ``"none"``: the uncovered voxels are left out of that draw's scores; the null is
  then computed on fewer voxels, wider, and the test very conservative (< 1 %).

Null maps computed elsewhere, e.g. maps re-estimated with circularly time-shifted
atoms (the exact null for "this atom's time course drives these voxels"), can be
given instead (``null_maps``).

p-values are permutation p-values, refined between draws by a validated generalised
Pareto fit of the null's tail (:func:`~napari_brainorg.encoding.inference.gpd_tail_pvalues`),
never below the permutation resolution ``1 / (1 + n_draws)``.

This spatial null answers "does this map sit on the network more than a moved copy
of itself?". It does not answer "does this atom's *time course* drive the network?"
(smooth random regressors pass it); that question is the stimulus null of
:mod:`napari_brainorg.networks.association`, the pipeline's default.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from .._progress import check_cancel, report
from ..encoding.inference import fdr, gpd_tail_pvalues
from ..errors import ShapeError, check_choice

__all__ = [
    "FILLS",
    "SCORES",
    "THRESHOLD_METHODS",
    "associate_atoms",
    "benjamini_hochberg",
    "gpd_tail_pvalues",
    "network_coverage",
    "overlap_scores",
    "spatial_shift_null",
    "threshold_atom_maps",
    "threshold_cutoffs",
]

SCORES = ("overlap_rate", "dice", "correlation")
THRESHOLD_METHODS = ("z", "robust_z", "percentile", "value")
#: How a moved map is completed where its source lies outside the mask (spatial_shift_null).
FILLS = ("reflect", "patch", "none")
_DEFAULT_THRESHOLDS = {"z": 3.1, "robust_z": 3.1, "percentile": 5.0, "value": 0.0}
#: Elements (batch × atoms × voxels) held at once by the null computation.
_BATCH_ELEMENTS = 4_000_000


# --------------------------------------------------------------------------- thresholds


def threshold_cutoffs(maps, *, method: str = "z", value: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The cut-offs of :func:`threshold_atom_maps`, one pair per atom.

    Returns
    -------
    upper, lower : ndarray of shape (k,)
        A voxel is activated where ``map > upper``, deactivated where ``map < lower``.
        NaN values in ``maps`` are ignored.
    """
    check_choice("threshold_method", method, THRESHOLD_METHODS)
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim == 1:
        maps = maps[None]
    if maps.ndim != 2:
        raise ShapeError(f"'maps' must have shape (k, n_voxels); got shape {maps.shape}.")
    value = _DEFAULT_THRESHOLDS[method] if value is None else float(value)
    k = maps.shape[0]
    if method in ("z", "value"):
        if method == "z" and value < 0:
            raise ValueError(f"'threshold' must be >= 0 for method 'z'; {value!r} was provided.")
        return np.full(k, abs(value)), np.full(k, -abs(value))
    if method == "percentile":
        if not 0 < value < 100:
            raise ValueError(
                f"'threshold' for method 'percentile' is the percentage of voxels kept (largest "
                f"|map|), strictly between 0 and 100; {value!r} was provided."
            )
        cut = np.nanpercentile(np.abs(maps), 100.0 - value, axis=1)
        return cut, -cut
    # robust z: (x - median) / (1.4826 MAD); for sparse maps whose MAD is 0 the mean
    # absolute deviation (scaled by sqrt(pi/2), equal to sigma for a normal) is used.
    med = np.nanmedian(maps, axis=1)
    dev = np.abs(maps - med[:, None])
    scale = 1.482602218505602 * np.nanmedian(dev, axis=1)
    fallback = np.sqrt(np.pi / 2) * np.nanmean(dev, axis=1)
    scale = np.where(scale > 0, scale, fallback)
    upper = np.where(scale > 0, med + value * scale, np.inf)
    lower = np.where(scale > 0, med - value * scale, -np.inf)
    return upper, lower


def threshold_atom_maps(maps, *, method: str = "z", value: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cut atom maps into activated (positive) and deactivated (negative) parts.

    Parameters
    ----------
    maps : array-like of shape (k, n_voxels)
    method : {"z", "robust_z", "percentile", "value"}
        - ``"z"`` (default): the maps are statistics (a group z map per atom, e.g.
          ``atom_maps_z.nii.gz``): activated ``z > value``, deactivated ``z < -value``
          (default 3.1, one-sided p ≈ 0.001).
        - ``"robust_z"``: for raw coefficient maps (a subject's row of W, a mean
          coefficient map), whose scale is arbitrary: each map becomes a robust z,
          ``(x - median) / (1.4826 MAD)`` (mean absolute deviation × sqrt(pi/2) when
          the MAD is 0, as in sparse maps), then cut at ±``value`` (default 3.1).
        - ``"percentile"``: the ``value`` % of voxels with the largest ``|map|``
          (default 5), split by sign.
        - ``"value"``: raw cut ``map > value`` / ``map < -value`` (default 0: every
          non-zero coefficient of a sparse map).
    value : float, optional
        See ``method``.

    Returns
    -------
    activated, deactivated : ndarray of shape (k, n_voxels), bool
    """
    maps = np.asarray(maps)
    upper, lower = threshold_cutoffs(maps, method=method, value=value)
    maps2 = maps if maps.ndim == 2 else maps[None]
    with np.errstate(invalid="ignore"):
        act = maps2 > upper[:, None]
        deact = maps2 < lower[:, None]
    return act, deact


# --------------------------------------------------------------------------- scores


def _as_bool_2d(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ShapeError(f"'{name}' must have shape (n, n_voxels); got shape {a.shape}.")
    return a.astype(bool, copy=False)


def overlap_scores(parts, networks, maps=None, network_maps=None) -> dict[str, np.ndarray]:
    """Overlap of every atom part with every network, as matrix products.

    Parameters
    ----------
    parts : array-like of shape (k, n_voxels), bool
        Atom parts (e.g. the activated part of each atom).
    networks : array-like of shape (n_networks, n_voxels), bool
    maps : array-like of shape (k, n_voxels), optional
        The continuous signed atom maps (negate them for deactivated parts); needed
        for ``"correlation"``.
    network_maps : array-like of shape (n_networks, n_voxels), optional
        Continuous network maps for the correlation; default the indicator of
        ``networks``.

    Returns
    -------
    dict of str -> ndarray of shape (k, n_networks)
        ``intersection`` (voxel counts), ``overlap_rate`` = |part ∩ network| / |network|
        (NaN for an empty network), ``dice`` = 2 |part ∩ network| / (|part| + |network|)
        (NaN when both are empty), and with ``maps`` ``correlation`` (Pearson over the
        voxels; NaN for a constant map).
    """
    parts = _as_bool_2d(parts, "parts")
    networks = _as_bool_2d(networks, "networks")
    if parts.shape[1] != networks.shape[1]:
        raise ShapeError(
            f"'parts' has {parts.shape[1]} voxels and 'networks' {networks.shape[1]}; both must be "
            "on the same mask."
        )
    inter = parts.astype(np.float64) @ networks.T.astype(np.float64)
    n_part = parts.sum(axis=1).astype(np.float64)
    n_net = networks.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "intersection": inter,
            "overlap_rate": np.where(n_net[None] > 0, inter / n_net[None], np.nan),
            "dice": np.where((n_part[:, None] + n_net[None]) > 0, 2 * inter / (n_part[:, None] + n_net[None]), np.nan),
        }
    if maps is not None:
        x = np.asarray(maps, dtype=np.float64)
        x = x[None] if x.ndim == 1 else x
        if x.shape != parts.shape:
            raise ShapeError(f"'maps' must have the shape of 'parts' {parts.shape}; got {x.shape}.")
        m = networks.astype(np.float64) if network_maps is None else np.asarray(network_maps, dtype=np.float64)
        m = m[None] if m.ndim == 1 else m
        if m.shape != networks.shape:
            raise ShapeError(f"'network_maps' must have the shape of 'networks' {networks.shape}; got {m.shape}.")
        out["correlation"] = _pearson_rows(x, m)
    return out


def _pearson_rows(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=1, keepdims=True)
    mc = m - m.mean(axis=1, keepdims=True)
    nx = np.sqrt((xc ** 2).sum(axis=1))
    nm = np.sqrt((mc ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc @ mc.T) / (nx[:, None] * nm[None])
    r[~np.isfinite(r)] = np.nan
    return r


# --------------------------------------------------------------------------- spatial null


class _ShiftGeometry:
    """The mask inside its bounding box and the draw of moved source voxels.

    The box is padded by one voxel on each side, so the circular seam of a shift never
    joins two brain voxels. A move maps each mask voxel ``c`` to the source voxel
    ``flip((c - shift) mod box)``; moves are separable per axis, so a move is three
    lookups in tables of the box's side lengths. With ``fill="reflect"`` a source
    outside the mask is replaced by its mirror image across the mask's border
    (``2 b - p`` for ``b`` the mask voxel nearest to ``p``; ``b`` itself where the
    mirror falls outside the mask), which continues the map smoothly beyond the brain.
    """

    def __init__(self, mask: np.ndarray, fill: str = "reflect"):
        coords = np.argwhere(mask)  # C order, the order of mask voxels everywhere
        lo = coords.min(axis=0) - 1
        self.shape = tuple(int(v) for v in coords.max(axis=0) - lo + 2)
        c = (coords - lo).astype(np.intp)
        self.axes = [np.ascontiguousarray(c[:, a]) for a in range(3)]
        self.strides = (self.shape[1] * self.shape[2], self.shape[2], 1)
        self.box_index = np.ravel_multi_index(c.T, self.shape)
        self.in_mask = np.zeros(int(np.prod(self.shape)), dtype=bool)
        self.in_mask[self.box_index] = True
        self.n_voxels = len(coords)
        self.fill = fill
        if fill == "reflect":
            from scipy import ndimage

            inside = self.in_mask.reshape(self.shape)
            _, nearest = ndimage.distance_transform_edt(~inside, return_indices=True)
            grid = np.indices(self.shape)
            mirrored = 2 * nearest - grid
            ok = ((mirrored >= 0) & (mirrored < np.asarray(self.shape)[:, None, None, None])).all(axis=0)
            mirrored = np.where(ok[None], mirrored, nearest)
            src = np.ravel_multi_index(tuple(mirrored), self.shape).ravel()
            near = np.ravel_multi_index(tuple(nearest), self.shape).ravel()
            src = np.where(self.in_mask[src], src, near)
            self.extension = np.where(self.in_mask, np.arange(self.in_mask.size), src)

    def to_box(self, values: np.ndarray, fill=0) -> np.ndarray:
        """(k, n_voxels) -> (k, n_box) with ``fill`` outside the mask."""
        box = np.full((values.shape[0], self.in_mask.size), fill, dtype=values.dtype)
        box[:, self.box_index] = values
        return box

    def _tables(self, rng: np.random.Generator, flips: bool) -> list[np.ndarray]:
        tables = []
        for n, stride in zip(self.shape, self.strides):
            t = (np.arange(n) - rng.integers(0, n)) % n
            if flips and rng.integers(0, 2):
                t = n - 1 - t
            tables.append(t * stride)
        return tables

    def _lookup(self, tables, where=None) -> np.ndarray:
        t0, t1, t2 = tables
        if where is None:
            return t0[self.axes[0]] + t1[self.axes[1]] + t2[self.axes[2]]
        return t0[self.axes[0][where]] + t1[self.axes[1][where]] + t2[self.axes[2][where]]

    def draw(self, rng: np.random.Generator, flips: bool) -> np.ndarray:
        """Box indices of the sources of the mask voxels for one move."""
        return self._lookup(self._tables(rng, flips))

    def draw_moves(self, rng: np.random.Generator, flips: bool, max_pieces: int) -> list:
        """The moves of one draw: ``max_pieces`` for ``fill="patch"`` (always all of
        them, so that a draw uses the same random numbers whichever voxels are looked
        up), one otherwise."""
        n = max(1, max_pieces) if self.fill == "patch" else 1
        return [self._tables(rng, flips) for _ in range(n)]

    def patched(self, moves, where: np.ndarray | None = None) -> np.ndarray:
        """Sources of the mask voxels (or of the voxels ``where``) under ``moves``.

        ``fill="reflect"``: the first move, read through the mirror extension (always
        a mask voxel). ``"patch"``: each voxel takes the first move whose source lies
        inside the mask. ``"none"``: the first move only. -1 where there is no source.
        A voxel's source does not depend on which others are looked up.
        """
        src = self._lookup(moves[0], where)
        if self.fill == "reflect":
            return self.extension[src]
        if self.fill == "none":
            src[~self.in_mask[src]] = -1
            return src
        hole = np.flatnonzero(~self.in_mask[src])
        for tables in moves[1:]:
            if not hole.size:
                break
            more = self._lookup(tables, hole if where is None else where[hole])
            ok = self.in_mask[more]
            src[hole[ok]] = more[ok]
            hole = hole[~ok]
        src[hole] = -1
        return src


class _ShiftScorer:
    """Scores of moved copies of the observed maps, computed from the moves alone.

    The observed part (and, for the correlation, the centred map) is stored voxel-major
    in the padded box, one row of k atoms per voxel: a moved map inside the networks
    is then one row gather (fast, unlike a column gather) over the networks'
    concatenated voxel lists, summed network by network (so overlapping map networks
    are handled like disjoint labels). Sums over every covered voxel (part sizes for
    Dice, sums of x and x² for the correlation) are the observed maps weighted by how
    often each voxel served as a source.
    """

    def __init__(self, geom: _ShiftGeometry, parts: np.ndarray, values: np.ndarray,
                 networks: np.ndarray, network_maps: np.ndarray, score: str):
        self.geom = geom
        self.score = score
        weights = network_maps if score == "correlation" else networks
        lists = [np.flatnonzero(w != 0) for w in weights]
        sizes = np.array([len(v) for v in lists], dtype=np.intp)
        self.bounds = np.r_[0, np.cumsum(sizes)]
        self.expanded = np.concatenate(lists) if lists else np.zeros(0, np.intp)
        self.union = np.unique(self.expanded)
        n_box = geom.in_mask.size
        self.needs_counts = score in ("dice", "correlation")
        if score in ("overlap_rate", "dice"):
            self.parts_box = np.zeros((n_box, parts.shape[0]), dtype=np.uint8)
            self.parts_box[geom.box_index] = parts.T
        if score == "dice":
            self.parts_f = parts.astype(np.float32)
        if score == "correlation":
            centred = values - values.mean(axis=1, keepdims=True)  # keeps float32 sums accurate
            self.values_box = np.zeros((n_box, values.shape[0]), dtype=np.float32)
            self.values_box[geom.box_index] = centred.T
            self.xc = np.ascontiguousarray(centred, dtype=np.float32)
            self.xc2 = self.xc ** 2
            w = np.concatenate([wj[v] for wj, v in zip(weights, lists)]) if lists else np.zeros(0)
            self.w = w.astype(np.float64)
            self.w32 = None if np.all(w == 1.0) else w.astype(np.float32)[:, None]

    def identity(self) -> np.ndarray:
        return self.geom.box_index.copy()

    def _per_network(self, rows: np.ndarray, dtype) -> np.ndarray:
        """Sum ``rows`` (n_expanded, ...) over each network's voxels -> (..., n_net)."""
        sums = [rows[a:b].sum(axis=0, dtype=dtype) for a, b in zip(self.bounds[:-1], self.bounds[1:])]
        return np.stack(sums, axis=-1) if sums else np.zeros(rows.shape[1:] + (0,), dtype)

    def scores(self, src: np.ndarray) -> np.ndarray:
        """(k, n_networks) score of the draw whose sources are ``src`` (n_voxels,)."""
        geom = self.geom
        src_e = src[self.expanded]
        valid_e = geom.in_mask[src_e]
        if self.needs_counts:
            valid = geom.in_mask[src]
            counts = np.bincount(src[valid], minlength=geom.in_mask.size)[geom.box_index].astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.score in ("overlap_rate", "dice"):
                gathered = np.take(self.parts_box, src_e, axis=0)  # (n_expanded, k), 0 outside
                inter = self._per_network(gathered, np.int32).astype(np.float64)  # counts < 2**31
                n_net = self._per_network(valid_e, np.int64).astype(np.float64)[None]
                if self.score == "overlap_rate":
                    return np.where(n_net > 0, inter / n_net, np.nan)
                denom = (self.parts_f @ counts).astype(np.float64)[:, None] + n_net
                return np.where(denom > 0, 2 * inter / denom, np.nan)
            x = np.take(self.values_box, src_e, axis=0)
            if self.w32 is not None:
                x *= self.w32
            # float32 sums: their rounding (~1e-5 of the null's spread) is far below
            # what could change a p-value, and the observed maps go the same way
            sxm = self._per_network(x, np.float32).astype(np.float64)
            vw = valid_e * self.w
            sm = self._per_network(vw, np.float64)[None]
            smm = self._per_network(vw * self.w, np.float64)[None]
            nv = float(valid.sum())
            sx = (self.xc @ counts).astype(np.float64)[:, None]
            sxx = (self.xc2 @ counts).astype(np.float64)[:, None]
            cov = sxm - sx * sm / nv
            var = (sxx - sx ** 2 / nv) * (smm - sm ** 2 / nv)
            r = cov / np.sqrt(var)
        r[~np.isfinite(r) | (var <= 0)] = np.nan
        return np.clip(r, -1.0, 1.0)

    def draws(self, rng: np.random.Generator, n_draws: int, *, flips: bool, max_pieces: int,
              per: int = 16) -> Iterator[np.ndarray]:
        """Scores of ``n_draws`` moved copies of the maps, ``per`` draws at a time.

        Yields
        ------
        ndarray of shape (batch, k, n_networks)
        """
        geom = self.geom
        for start in range(0, n_draws, per):
            out = []
            for _ in range(min(per, n_draws - start)):
                moves = geom.draw_moves(rng, flips, max_pieces)
                if self.needs_counts:
                    src = geom.patched(moves)
                else:
                    # only the networks' voxels are read: the others' sources are never looked up
                    src = np.full(geom.n_voxels, -1, dtype=np.intp)
                    src[self.union] = geom.patched(moves, self.union)
                out.append(self.scores(src))
            yield np.stack(out)


def _mask_array(mask_img) -> np.ndarray:
    from ..io.fmri import load_mask

    return np.asarray(load_mask(mask_img).dataobj) > 0


def spatial_shift_null(maps, mask_img, n_permutations: int = 1000, *, flips: bool = True,
                       fill: str = "reflect", max_pieces: int = 16, batch_size: int | None = None,
                       random_state=None) -> Iterator[np.ndarray]:
    """Null maps that keep the maps' spatial autocorrelation: rigid 3D circular moves.

    Each draw moves every atom map by the same random circular shift (uniform over
    the mask's bounding box, padded by one voxel so that the seam never joins two
    brain voxels), after random flips of each axis, and reads it back at the mask's
    voxels; ``fill`` says what a voxel whose source lies outside the mask gets (see
    the module's notes).

    Parameters
    ----------
    maps : array-like of shape (k, n_voxels)
        Values at the mask's voxels (C order).
    mask_img : "mni", path or nibabel image
    n_permutations : int
    flips : bool
        Also flip axes at random (8 × more distinct draws).
    fill : {"reflect", "patch", "none"}
        ``"reflect"`` (default): the mirror image of the map across the mask's border;
        ``"patch"``: further independent moves, up to ``max_pieces`` in all;
        ``"none"``: nothing (NaN).
    max_pieces : int
        Moves combined in one draw with ``fill="patch"``.
    batch_size : int, optional
        Draws per yielded batch (default: about 4 million values per batch).
    random_state : int or numpy Generator, optional

    Yields
    ------
    ndarray of shape (batch, k, n_voxels), float32
        NaN where no value was brought (``fill="none"``, or ``"patch"`` after
        ``max_pieces`` moves).
    """
    maps = np.asarray(maps, dtype=np.float32)
    maps = maps[None] if maps.ndim == 1 else maps
    check_choice("fill", fill, FILLS)
    geom = _ShiftGeometry(_mask_array(mask_img), fill=fill)
    if maps.shape[1] != geom.n_voxels:
        raise ShapeError(f"'maps' has {maps.shape[1]} voxels but the mask has {geom.n_voxels}.")
    rng = np.random.default_rng(random_state)
    box = geom.to_box(maps, fill=np.nan)
    b = batch_size or max(1, _BATCH_ELEMENTS // max(1, maps.size))
    batch = []
    for _ in range(n_permutations):
        src = geom.patched(geom.draw_moves(rng, flips, max_pieces))
        batch.append(box[:, src])
        if len(batch) == b:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


# --------------------------------------------------------------------------- tests


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q); NaN entries stay NaN and do not count.

    The q-values of :func:`napari_brainorg.encoding.inference.fdr`, the one FDR function.
    """
    return fdr(p)[1]


class _Scorer:
    """Scores of many (batch of) signed maps against fixed networks, by matrix products.

    ``valid`` (batch, n_voxels) says which voxels of each draw carry values; every
    sum runs over them only, so a draw's scores describe the part of the mask it
    covers.
    """

    def __init__(self, networks: np.ndarray, network_maps: np.ndarray):
        self.n = networks.T.astype(np.float32)  # (n_voxels, n_networks)
        self.m = network_maps.T.astype(np.float32)
        self.m_centre = self.m.mean(axis=0, dtype=np.float64).astype(np.float32)
        self.mc = self.m - self.m_centre  # centred: float32 sums stay accurate
        self.mc2 = self.mc ** 2

    def scores(self, parts: np.ndarray, valid: np.ndarray, which: tuple[str, ...],
               values: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """parts (b, k, n) bool (already False where not valid); valid (b, n) bool;
        values (b, k, n) float32, 0 where not valid (for the correlation)."""
        b, k, n = parts.shape
        vf = valid.astype(np.float32)
        out = {}
        if "overlap_rate" in which or "dice" in which:
            inter = (parts.reshape(b * k, n).astype(np.float32) @ self.n).reshape(b, k, -1).astype(np.float64)
            n_net = (vf @ self.n).astype(np.float64)[:, None, :]
            with np.errstate(invalid="ignore", divide="ignore"):
                if "overlap_rate" in which:
                    out["overlap_rate"] = np.where(n_net > 0, inter / n_net, np.nan)
                if "dice" in which:
                    n_part = parts.sum(axis=2, dtype=np.float64)[:, :, None]
                    denom = n_part + n_net
                    out["dice"] = np.where(denom > 0, 2 * inter / denom, np.nan)
        if "correlation" in which:
            nv = valid.sum(axis=1, dtype=np.float64)[:, None, None]
            x = values
            sx = x.sum(axis=2, dtype=np.float64)[:, :, None]
            sxx = np.einsum("bkn,bkn->bk", x, x, dtype=np.float64)[:, :, None]
            sxm = (x.reshape(b * k, n) @ self.mc).reshape(b, k, -1).astype(np.float64)
            sm = (vf @ self.mc).astype(np.float64)[:, None, :]
            smm = (vf @ self.mc2).astype(np.float64)[:, None, :]
            with np.errstate(invalid="ignore", divide="ignore"):
                cov = sxm - sx * sm / nv
                var = (sxx - sx ** 2 / nv) * (smm - sm ** 2 / nv)
                r = cov / np.sqrt(var)
            r[~np.isfinite(r) | (var <= 0)] = np.nan
            out["correlation"] = np.clip(r, -1.0, 1.0)
        return out


def _iter_null_batches(null_maps) -> Iterator[np.ndarray]:
    if isinstance(null_maps, np.ndarray):
        arr = null_maps
        if arr.ndim == 2:
            arr = arr[None]
        step = max(1, _BATCH_ELEMENTS // max(1, arr[0].size))
        for start in range(0, arr.shape[0], step):
            yield np.asarray(arr[start:start + step], dtype=np.float32)
        return
    for item in null_maps:
        item = np.asarray(item, dtype=np.float32)
        yield item[None] if item.ndim == 2 else item


class _NullTally:
    """What the p-values need of the null draws, accumulated batch by batch.

    Attributes
    ----------
    exceed : ndarray of shape (k, n_networks), int64
        Draws at or above the observed score (within 1e-12).
    n_valid : ndarray of shape (k, n_networks), int64
        Draws with a finite score.
    top : ndarray of shape (n_tail + 1, k, n_networks)
        The largest draws, for the tail fit (``-inf`` until filled).
    used : int
        Draws seen.
    """

    def __init__(self, shape: tuple[int, int], n_tail: int, keep_top: bool):
        self.exceed = np.zeros(shape, dtype=np.int64)
        self.n_valid = np.zeros(shape, dtype=np.int64)
        self.n_tail = n_tail
        self.top = np.full((n_tail + 1,) + shape, -np.inf)  # running largest null draws
        self.keep_top = keep_top
        self.used = 0

    def add(self, null_scores: np.ndarray, observed: np.ndarray) -> None:
        """Count a batch of null scores, of shape (batch, k, n_networks); NaN: no value in that draw."""
        ok = np.isfinite(null_scores)
        self.n_valid += ok.sum(axis=0)
        with np.errstate(invalid="ignore"):
            self.exceed += (ok & (null_scores >= observed[None] - 1e-12)).sum(axis=0)
        if self.keep_top:
            merged = np.concatenate([self.top, np.where(ok, null_scores, -np.inf)], axis=0)
            self.top = -np.partition(-merged, self.n_tail, axis=0)[: self.n_tail + 1]
        self.used += null_scores.shape[0]

    def pvalues(self, observed: np.ndarray, tail: str) -> tuple[np.ndarray, np.ndarray]:
        """Permutation p-values, refined by the generalised Pareto tail where few draws reach the score.

        Returns
        -------
        p : ndarray of shape (k, n_networks)
            NaN where no draw had a value (or none was made).
        p_method : ndarray of shape (k, n_networks), object
            "permutation", "gpd_tail" or "none".
        """
        exceed, n_valid, top = self.exceed, self.n_valid, self.top
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(np.isfinite(observed) & (n_valid > 0), (1.0 + exceed) / (1.0 + n_valid), np.nan)
        p_method = np.where(np.isfinite(p), "permutation", "none").astype(object)
        if tail == "gpd" and self.used > 0:
            few = (exceed < 10) & np.isfinite(p) & np.isfinite(top).all(axis=0)
            if few.any():
                p_tail = gpd_tail_pvalues(observed, np.where(np.isfinite(top), top, np.nan), n_valid)
                refine = few & np.isfinite(p_tail)
                p = np.where(refine, p_tail, p)
                p_method[refine] = "gpd_tail"
        return p, p_method


def _checked_null(part: str, score: str, threshold_method: str, null, null_maps, tail: str, fill: str,
                  alpha: float, n_permutations: int) -> str:
    """The options of :func:`associate_atoms` checked, and the null it runs (``"maps"`` when maps are given)."""
    check_choice("part", part, ("activated", "deactivated"))
    check_choice("score", score, SCORES)
    check_choice("threshold_method", threshold_method, THRESHOLD_METHODS)
    if null is None:
        null = "maps" if null_maps is not None else "shift"
    check_choice("null", null, ("shift", "maps"))
    check_choice("tail", tail, ("gpd", "none"))
    check_choice("fill", fill, FILLS)
    if null == "maps" and null_maps is None:
        raise ValueError("null='maps' needs 'null_maps' (an array or an iterable of null atom maps).")
    if not 0 < alpha < 1:
        raise ValueError(f"'alpha' must be in (0, 1); {alpha!r} was provided.")
    if n_permutations < 0:
        raise ValueError(f"'n_permutations' must be >= 0; {n_permutations!r} was provided.")
    return null


def _checked_atom_maps(atom_maps, atlas, mask_img, atom_names):
    """The atom maps as float32 rows on the mask's voxels, checked against the mask and the atlas.

    Returns
    -------
    maps : ndarray of shape (k, n_voxels), float32
    mask : ndarray of bool, the mask's 3D grid
    names : list
        The atoms' names (default 0..k-1).
    """
    maps = np.asarray(atom_maps, dtype=np.float32)
    maps = maps[None] if maps.ndim == 1 else maps
    mask = _mask_array(mask_img)
    n_vox = int(mask.sum())
    if maps.ndim != 2 or maps.shape[1] != n_vox:
        raise ShapeError(
            f"'atom_maps' must have shape (k, n_voxels) with n_voxels={n_vox} (the mask's voxels); "
            f"got shape {maps.shape}."
        )
    if atlas.maps.shape[1] != n_vox:
        raise ShapeError(
            f"The atlas {atlas.name!r} is on {atlas.maps.shape[1]} voxels but the mask has {n_vox}; "
            "load it with load_fbn(..., mask_img) on the same mask."
        )
    if not np.isfinite(maps).all():
        raise ValueError("'atom_maps' has NaN or infinite values; expected finite maps.")
    k = maps.shape[0]
    names = list(range(k)) if atom_names is None else list(atom_names)
    if len(names) != k:
        raise ShapeError(f"'atom_names' has {len(names)} entries for {k} atoms.")
    return maps, mask, names


def _signed_parts(maps: np.ndarray, part: str, threshold_method: str, threshold: float):
    """The maps signed so that the part tested is positive, and the part's voxels.

    Parameters
    ----------
    maps : ndarray of shape (k, n_voxels), float32

    Returns
    -------
    sign : numpy.float32
        1 for the activated part, -1 for the deactivated one.
    signed : ndarray of shape (k, n_voxels), float32
    parts : ndarray of shape (k, n_voxels), bool
    """
    sign = np.float32(1.0 if part == "activated" else -1.0)
    signed = sign * maps
    upper, lower = threshold_cutoffs(maps, method=threshold_method, value=threshold)
    cut = upper if part == "activated" else -lower  # signed > cut  <=>  part voxel
    return sign, signed, signed > cut[:, None].astype(np.float32)


def _given_null_scores(null_maps, scorer: _Scorer, *, sign, part: str, threshold_method: str, threshold: float,
                       score: str, maps_shape: tuple[int, int]) -> Iterator[np.ndarray]:
    """Scores of null maps computed elsewhere, thresholded by the observed maps' method.

    Yields
    ------
    ndarray of shape (batch, k, n_networks)
        NaN where a draw has no value at a voxel the score needs.
    """
    k, n_vox = maps_shape
    for arr in _iter_null_batches(null_maps):
        if arr.ndim != 3 or arr.shape[1:] != maps_shape:
            raise ShapeError(
                f"'null_maps' must hold maps of shape (k, n_voxels) = {maps_shape}; got a "
                f"batch of shape {arr.shape}."
            )
        valid = np.isfinite(arr).all(axis=1)
        x = np.where(valid[:, None, :], sign * arr, 0.0).astype(np.float32)
        up, lo = threshold_cutoffs(
            np.where(valid[:, None, :], arr, np.nan).reshape(-1, n_vox),
            method=threshold_method, value=threshold)
        c = (up if part == "activated" else -lo).reshape(arr.shape[0], k, 1)
        parts = (x > c) & valid[:, None, :]
        yield scorer.scores(parts, valid, (score,), values=x if score == "correlation" else None)[score]


def _overlap_table(names, network_names, part: str, obs: dict, parts: np.ndarray, networks: np.ndarray,
                   p: np.ndarray, p_method: np.ndarray, q: np.ndarray, associated: np.ndarray, integer_atoms: bool):
    """One row per atom × network: the scores of the observed part, p, q and the declaration."""
    import pandas as pd

    k = parts.shape[0]
    n_part = parts.sum(axis=1)
    n_net = networks.sum(axis=1)
    n_networks = len(network_names)
    table = pd.DataFrame({
        "atom": np.repeat(np.asarray(names, dtype=object), n_networks),
        "network": np.tile(np.asarray(network_names, dtype=object), k),
        "part": part,
        "overlap_rate": obs["overlap_rate"].ravel(),
        "dice": obs["dice"].ravel(),
        "correlation": obs["correlation"].ravel(),
        "n_part_voxels": np.repeat(n_part, n_networks),
        "n_network_voxels": np.tile(n_net, k),
        "p": p.ravel(),
        "p_method": p_method.ravel(),
        "q": q.ravel(),
        "associated": associated.ravel().astype(bool),
    })
    if integer_atoms:
        table["atom"] = table["atom"].astype(int)
    return table


def _overlap_criterion(*, tested: bool, null: str, used: int, flips: bool, fill: str, alpha: float, n_tests: int,
                       part: str, atlas_name: str, score: str, min_score: float, tail: str,
                       threshold_method: str, threshold: float) -> str:
    """The test and its declaration rule, in words (the table's ``attrs["criterion"]``)."""
    null_desc = (f"{used} spatial circular shifts{' and flips' if flips else ''} of the maps ({fill} fill)"
                 if null == "shift" else f"{used} null maps given")
    if not tested:
        return (f"associated = {score} >= {min_score:g} (no permutation test: n_permutations=0); "
                f"parts cut by {threshold_method} at {threshold:g}.")
    return (f"associated = q < {alpha:g} (Benjamini-Hochberg FDR over the {n_tests} atom x "
            f"network tests of the {part} part, atlas {atlas_name}) and {score} >= {min_score:g}; "
            f"p = (1 + #null >= observed) / (1 + #null) from {null_desc}"
            + ("; where fewer than 10 null draws reach the observed score, p from a generalised "
               "Pareto fit of the null's upper tail" if tail == "gpd" else "")
            + "; parts cut by "
            f"{threshold_method} at {threshold:g}.")


def associate_atoms(atom_maps, atlas, mask_img, *, part: str = "activated",
                    threshold_method: str = "z", threshold: float | None = None,
                    score: str = "overlap_rate", n_permutations: int = 1000,
                    null: str | None = None, null_maps: Iterable | np.ndarray | None = None,
                    alpha: float = 0.05, min_score: float = 0.1, atom_names=None,
                    network_threshold: float | None = None, flips: bool = True,
                    fill: str = "reflect", max_pieces: int = 16, tail: str = "gpd",
                    random_state=None, progress=None,
                    cancel=None):
    """Test every atom × network association for one part (activated or deactivated).

    Criterion: an atom's part is **associated** with a network when
    ``q < alpha`` (its permutation p-value, Benjamini–Hochberg corrected over all
    atom × network tests of this part and atlas) **and** its score is at least
    ``min_score``. The criterion, in words, is in ``table.attrs["criterion"]``.

    Parameters
    ----------
    atom_maps : array-like of shape (k, n_voxels)
        One map per atom at the mask's voxels (a group z map by default; see
        ``threshold_method``).
    atlas : FBNAtlas
        From :func:`~napari_brainorg.io.atlases.load_fbn` on the same mask.
    mask_img : "mni", path or nibabel image
        The mask whose voxels the maps are on.
    part : {"activated", "deactivated"}
        The deactivated part is tested with the sign of the maps flipped (its
        correlation is with ``-map``).
    threshold_method, threshold
        See :func:`threshold_atom_maps` (default ``"z"`` at 3.1).
    score : {"overlap_rate", "dice", "correlation"}
        The score tested (all three are reported).
    n_permutations : int
        Null draws; p = (1 + #{null ≥ observed}) / (1 + #draws). 0: no test (p and q
        are NaN and ``associated`` is ``score >= min_score`` alone, recorded as such).
    null : {"shift", "maps"}, optional
        ``"shift"`` (default without ``null_maps``): :func:`spatial_shift_null`, the
        observed cut-offs applied to the moved maps. ``"maps"`` (default with
        ``null_maps``): null maps computed elsewhere, thresholded by the same method.
    null_maps : ndarray of shape (n_perm, k, n_voxels), or an iterable of arrays of
        shape (k, n_voxels) or (batch, k, n_voxels)
        E.g. atom maps re-estimated with circularly time-shifted atoms. NaN marks
        voxels without a value in a draw. For an iterable, ``n_permutations`` should
        say how many maps it yields (it sizes the tail fit and the progress bar).
    alpha : float
        FDR level.
    min_score : float
        Smallest score that counts as an association (default 0.1: a tenth of the
        network for the overlap rate).
    atom_names : list, optional
        Values of the ``atom`` column (default 0..k-1).
    network_threshold : float, optional
        Cut for map atlases (default the atlas's own).
    flips, fill, max_pieces
        See :func:`spatial_shift_null` (default: flips, mirror fill).
    tail : {"gpd", "none"}
        ``"gpd"`` (default): where fewer than 10 draws reach the observed score (and
        there are at least 100 draws), p comes from a generalised Pareto fit of the
        null's upper tail (:func:`gpd_tail_pvalues`) when the fit passes its goodness-of-
        fit check, never below ``1 / (1 + n_draws)``; the ``p_method`` column says
        which p each row has. ``"none"``: plain permutation p-values, never below
        ``1 / (1 + n_permutations)``.
    random_state : int or numpy Generator, optional
    progress, cancel
        See :mod:`napari_brainorg._progress`; cancellable between batches of draws.

    Returns
    -------
    pandas.DataFrame
        One row per atom × network: ``atom``, ``network``, ``part``,
        ``overlap_rate``, ``dice``, ``correlation``, ``n_part_voxels``,
        ``n_network_voxels``, ``p``, ``p_method`` ("permutation", "gpd_tail" or
        "none"), ``q``, ``associated``. ``attrs`` holds
        ``criterion``, ``score``, ``alpha``, ``min_score``, ``null``,
        ``n_permutations`` (draws used), ``threshold_method``, ``threshold``,
        ``part``, ``atlas``.
    """
    null = _checked_null(part, score, threshold_method, null, null_maps, tail, fill, alpha, n_permutations)
    threshold = _DEFAULT_THRESHOLDS[threshold_method] if threshold is None else float(threshold)
    maps, mask, names = _checked_atom_maps(atom_maps, atlas, mask_img, atom_names)
    # threshold the maps, then score each part against each network
    sign, signed, parts = _signed_parts(maps, part, threshold_method, threshold)
    networks = atlas.masks(network_threshold)
    network_maps = atlas.network_maps(network_threshold)
    scorer = _Scorer(networks, network_maps)
    # the table's scores, in float64; the tests compare draws with the observed maps
    # scored by the same arithmetic as the draws (so that ties are ties)
    obs = overlap_scores(parts, networks, maps=signed, network_maps=network_maps)
    observed = scorer.scores(parts[None], np.ones((1, maps.shape[1]), bool), (score,), values=signed[None])[score][0]
    # the null: moved copies of the maps, or null maps given
    expected_draws = len(null_maps) if (null == "maps" and isinstance(null_maps, np.ndarray)) else n_permutations
    tally = _NullTally(observed.shape, n_tail=max(25, expected_draws // 10),  # the top tenth of the draws
                       keep_top=tail == "gpd")
    stage = f"networks: {atlas.name} {part} null"
    if n_permutations > 0 or null == "maps":
        if null == "shift":
            shifter = _ShiftScorer(_ShiftGeometry(mask, fill=fill), parts, signed, networks, network_maps, score)
            rng = np.random.default_rng(random_state)
            observed = shifter.scores(shifter.identity())  # through the draws' arithmetic, so that ties are ties
            batches, total = shifter.draws(rng, n_permutations, flips=flips, max_pieces=max_pieces), n_permutations
        else:
            batches = _given_null_scores(null_maps, scorer, sign=sign, part=part, threshold_method=threshold_method,
                                         threshold=threshold, score=score, maps_shape=maps.shape)
            total = len(null_maps) if isinstance(null_maps, np.ndarray) else n_permutations
        report(progress, stage, 0, total)
        check_cancel(cancel)
        for null_scores in batches:
            check_cancel(cancel)
            tally.add(null_scores, observed)
            report(progress, stage, tally.used, max(total, tally.used))
    # decide: p, FDR over the atlas's tests, and the score's floor
    p, p_method = tally.pvalues(observed, tail)
    tested = tally.used > 0
    q = benjamini_hochberg(p) if tested else np.full(p.shape, np.nan)
    with np.errstate(invalid="ignore"):
        strong = np.nan_to_num(obs[score], nan=-np.inf) >= min_score
        associated = (q < alpha) & strong if tested else strong
    table = _overlap_table(names, atlas.network_names, part, obs, parts, networks, p, p_method, q, associated,
                           integer_atoms=atom_names is None)
    criterion = _overlap_criterion(
        tested=tested, null=null, used=tally.used, flips=flips, fill=fill, alpha=alpha, n_tests=p.size, part=part,
        atlas_name=atlas.name, score=score, min_score=min_score, tail=tail, threshold_method=threshold_method,
        threshold=threshold)
    table.attrs.update({
        "criterion": criterion, "score": score, "alpha": alpha, "min_score": min_score,
        "null": null if tested else "none", "n_permutations": tally.used,
        "threshold_method": threshold_method, "threshold": threshold, "part": part,
        "atlas": atlas.name,
    })
    return table


def network_coverage(table):
    """Which networks the atoms cover, and by how many atoms.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`associate_atoms` (several may be concatenated; ``model``,
        ``atlas`` and ``part`` columns, when present, keep them apart).

    Returns
    -------
    pandas.DataFrame
        One row per (model, atlas, part,) network, in the table's order: ``n_atoms``
        (associated atoms), ``atoms`` (their names, ``;``-separated), ``covered``
        (``n_atoms > 0``), ``best_atom`` and ``best_score`` (of the score in
        ``table.attrs['score']``, default ``overlap_rate``).
    """
    import pandas as pd

    required = {"atom", "network", "associated"}
    missing = required - set(table.columns)
    if missing:
        raise ValueError(f"'table' lacks the columns {sorted(missing)}; expected an associate_atoms table.")
    score = table.attrs.get("score", "overlap_rate") if hasattr(table, "attrs") else "overlap_rate"
    keys = [c for c in ("model", "atlas", "part") if c in table.columns] + ["network"]
    rows = []
    for key, g in table.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        assoc = g[g["associated"].astype(bool)]
        best = g.loc[g[score].idxmax()] if score in g and g[score].notna().any() else None
        rows.append(dict(zip(keys, key), n_atoms=len(assoc),
                         atoms=";".join(str(a) for a in assoc["atom"]),
                         covered=len(assoc) > 0,
                         best_atom=None if best is None else best["atom"],
                         best_score=np.nan if best is None else float(best[score])))
    return pd.DataFrame(rows, columns=keys + ["n_atoms", "atoms", "covered", "best_atom", "best_score"])
