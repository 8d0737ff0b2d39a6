"""Where to look in a map: the peak of its largest cluster above the threshold.

nilearn's ``plot_stat_map`` cuts through a map's largest cluster, and FSLeyes users
expect a "go to peak": the explorer moves the slice there when an atom is chosen, so a
cerebellar atom opens on the cerebellum instead of on z = 0.
"""

from __future__ import annotations

import numpy as np


def cluster_peak(volume: np.ndarray, threshold: float) -> tuple[int, ...] | None:
    """Index of the peak of ``volume``'s largest cluster of ``|value| >= threshold``.

    Parameters
    ----------
    volume : ndarray of shape (nz, ny, nx)
        A map; zeros (outside the mask) never belong to a cluster.
    threshold : float
        Clusters are face-, edge- or corner-connected voxels (26-neighbourhood) with
        ``|value| >= threshold``.

    Returns
    -------
    tuple of int or None
        The voxel of largest ``|value|`` in the largest cluster (ties: the cluster with
        the larger peak); ``None`` when no voxel is above the threshold.
    """
    from scipy import ndimage

    magnitude = np.abs(np.nan_to_num(np.asarray(volume, np.float32)))
    supra = (magnitude >= float(threshold)) & (magnitude > 0)
    if not supra.any():
        return None
    labels, n = ndimage.label(supra, structure=np.ones((3, 3, 3), bool))
    # per cluster, over its voxels only (ndimage.maximum is slow with thousands of clusters)
    where = np.flatnonzero(supra)
    cluster = labels.ravel()[where]
    values = magnitude.ravel()[where]
    sizes = np.bincount(cluster, minlength=n + 1)[1:]
    peaks = np.zeros(n + 1, np.float32)
    np.maximum.at(peaks, cluster, values)
    best = 1 + int(np.lexsort((peaks[1:], sizes))[-1])  # largest, then highest
    inside = cluster == best
    at = where[inside][int(np.argmax(values[inside]))]
    return tuple(int(i) for i in np.unravel_index(at, volume.shape))


def peak_world(volume: np.ndarray, layer_affine: np.ndarray, threshold: float) -> tuple[np.ndarray, float] | None:
    """World position ``(z, y, x)`` mm and value of :func:`cluster_peak` (``None`` without one).

    ``layer_affine`` maps a layer index ``(k, j, i, 1)`` to world ``(z, y, x, 1)``
    (:func:`.layers.napari_affine`).
    """
    index = cluster_peak(volume, threshold)
    if index is None:
        return None
    world = np.asarray(layer_affine, float) @ np.r_[np.asarray(index, float), 1.0]
    return world[:3], float(volume[index])
