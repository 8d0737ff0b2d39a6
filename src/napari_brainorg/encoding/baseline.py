"""Population-level baseline: layer-wise encoding with every AN of a layer as regressors.

The atoms summarise the ANs of all layers in k time courses. The usual alternative
(METHOD §3) predicts each voxel from all ANs of one layer at a time; its held-out
scores, computed with the same folds, gap, filter and α selection as the atoms' model,
are the baseline the atoms are compared with.

A layer has thousands of ANs and far fewer volumes, so the ridge runs in its kernel
(dual) form: the (n_train × n_train) kernel ``X X'`` is eigendecomposed once per
training set, which costs nothing in the number of ANs beyond forming the kernel
(:func:`~napari_brainorg.encoding.ridge.cv_ridge_scores` with ``solver="auto"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._progress import check_cancel, report
from ..errors import ShapeError
from .preprocessing import highpass, make_delays
from .ridge import DEFAULT_ALPHAS, _as_float_2d, cv_ridge_scores

__all__ = ["LayerwiseEncoding", "layerwise_encoding"]


@dataclass
class LayerwiseEncoding:
    """Held-out scores of one ridge model per layer.

    Attributes
    ----------
    layers : ndarray of shape (n_layers,)
        Layer labels, sorted.
    n_ans : ndarray of shape (n_layers,)
        Number of ANs (regressors before delays) in each layer.
    r2, r : ndarray of shape (n_layers, n_voxels)
        Mean over folds of the within-fold held-out R² / correlation.
    r2_folds : ndarray of shape (n_layers, n_folds, n_voxels)
    alpha_folds : ndarray of shape (n_layers, n_folds, n_voxels)
    folds : list of (train, test)
    """

    layers: np.ndarray
    n_ans: np.ndarray
    r2: np.ndarray
    r: np.ndarray
    r2_folds: np.ndarray
    alpha_folds: np.ndarray
    folds: list = field(repr=False)

    @property
    def best_layer(self) -> np.ndarray:
        """Layer label with the highest held-out R² in each voxel, shape (n_voxels,)."""
        return self.layers[np.argmax(self.r2, axis=0)]

    @property
    def best_r2(self) -> np.ndarray:
        """Highest held-out R² over layers in each voxel, shape (n_voxels,)."""
        return self.r2.max(0)

    def to_frame(self, voxels=None):
        """Summary table, one row per layer.

        Parameters
        ----------
        voxels : array of bool or int, optional
            Restrict the summary to these voxels (e.g. a network or significant voxels).

        Returns
        -------
        pandas.DataFrame
            Columns ``layer, n_ans, mean_r2, median_r2, max_r2, mean_r, n_best_voxels``.
        """
        import pandas as pd

        r2 = self.r2 if voxels is None else self.r2[:, voxels]
        r = self.r if voxels is None else self.r[:, voxels]
        best = np.argmax(r2, axis=0)
        return pd.DataFrame({
            "layer": self.layers,
            "n_ans": self.n_ans,
            "mean_r2": r2.mean(1),
            "median_r2": np.median(r2, axis=1),
            "max_r2": r2.max(1),
            "mean_r": r.mean(1),
            "n_best_voxels": np.bincount(best, minlength=len(self.layers)),
        })


def _each_layer(fn, labels, backend: str, n_voxels: int, cancel):
    """``fn(layer)`` for every layer, results in layer order. With few voxels (region data)
    each fit is one chunk of the ridge and runs on one thread, so layers run side by side
    on the BLAS threads allowed (each fit single-threaded); with many voxels the ridge
    spreads its voxel chunks over the threads itself."""
    from ._ridge_chunks import _SPECTRAL_CHUNK, _chunk_threads, _map_chunks
    from .._backend import get_backend

    n_threads = _chunk_threads(get_backend(backend, None, "float64")) if n_voxels <= _SPECTRAL_CHUNK else 1
    if n_threads <= 1:
        for layer in labels:
            yield fn(layer)
        return
    yield from _map_chunks(fn, list(labels), n_threads, cancel)


def layerwise_encoding(an_responses, layers, Y, folds, alphas=DEFAULT_ALPHAS, *,
                       inner_folds: int = 4, gap: int = 5, delays=(0,), tr: float | None = None,
                       highpass_cutoff: float | None = 128.0, detrend: bool | int = True,
                       alpha_score: str = "r2", backend: str = "numpy", device: str | None = None,
                       dtype: str | None = None, chunk_size: int | None = None,
                       progress=None, cancel=None) -> LayerwiseEncoding:
    """Nested cross-validated ridge of every voxel on the ANs of each layer in turn.

    Parameters
    ----------
    an_responses : array of shape (n_volumes, n_ans)
        AN responses (features X).
    layers : array of shape (n_ans,)
        Layer of each AN (e.g. the ``layer`` column of ``an_index.tsv``).
    Y : array of shape (n_volumes, n_voxels)
        fMRI.
    folds : list of (train, test)
        The same outer folds as the atoms' model (e.g. ``CVRidgeEncoder.folds_``).
    alphas, inner_folds, gap, alpha_score, backend, device, dtype, chunk_size
        As in :func:`~napari_brainorg.encoding.ridge.cv_ridge_scores`. The kernel form
        is used whenever a layer has more regressors than training volumes.
    delays : sequence of int, default (0,)
        FIR delays, as for the atoms.
    tr : float, optional
        Repetition time. When given, the ANs (after delays) and ``Y`` are high-passed
        exactly as :class:`~napari_brainorg.encoding.ridge.CVRidgeEncoder` does; when
        ``None`` the inputs are taken as already filtered.
    highpass_cutoff, detrend
        Filter options used with ``tr``.
    progress : callable, optional
        ``progress("layer-wise encoding", done_layers, n_layers)``.
    cancel : object with ``is_set()``, optional

    Returns
    -------
    LayerwiseEncoding
    """
    X = _as_float_2d("an_responses", an_responses, "(n_volumes, n_ans)")
    Y = _as_float_2d("Y", Y, "(n_volumes, n_voxels)")
    layers = np.asarray(layers).ravel()
    if layers.shape != (X.shape[1],):
        raise ShapeError(
            f"'layers' must give one layer per AN, shape ({X.shape[1]},); shape {layers.shape} was provided."
        )
    if X.shape[0] != Y.shape[0]:
        raise ShapeError(
            f"'an_responses' and 'Y' must have the same number of volumes; {X.shape[0]} and "
            f"{Y.shape[0]} were provided."
        )
    if X.shape[1] == 0:
        raise ShapeError("'an_responses' has no columns (no ANs).")
    if tr is not None:
        Y = highpass(Y, tr, highpass_cutoff, detrend)
    labels = np.unique(layers)
    n_layers = len(labels)

    def one_layer(layer):
        check_cancel(cancel)
        Xl = make_delays(X[:, layers == layer], delays)
        if tr is not None:
            Xl = highpass(Xl, tr, highpass_cutoff, detrend, copy=False)
        return cv_ridge_scores(Xl, Y, folds, alphas, inner_folds=inner_folds, gap=gap,
                               alpha_score=alpha_score, backend=backend, device=device,
                               dtype=dtype, chunk_size=chunk_size, cancel=cancel)

    r2, r, r2_folds, alpha_folds, n_ans = [], [], [], [], []
    for i, res in enumerate(_each_layer(one_layer, labels, backend, Y.shape[1], cancel)):
        layer = labels[i]
        r2.append(res.r2)
        r.append(res.r)
        r2_folds.append(res.r2_folds)
        alpha_folds.append(res.alpha_folds)
        n_ans.append(int(np.count_nonzero(layers == layer)))
        report(progress, "layer-wise encoding", i + 1, n_layers)
    return LayerwiseEncoding(
        layers=labels, n_ans=np.asarray(n_ans), r2=np.stack(r2), r=np.stack(r),
        r2_folds=np.stack(r2_folds), alpha_folds=np.stack(alpha_folds), folds=res.folds,
    )
