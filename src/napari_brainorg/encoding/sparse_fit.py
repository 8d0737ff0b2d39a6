"""The paper's encoding model: each voxel as a sparse combination of fixed atoms.

With the atoms ``D`` (n_volumes × k) fixed, every voxel's time series ``y`` gets the
codes ``w`` (k,) that minimise (METHOD §3)

    ½ ‖y − D w‖² + λ_f ‖w‖₁,

solved for all voxels at once by :func:`napari_brainorg.sparse.dictionary.sparse_encode`.
Row ``j`` of ``W`` (k × n_voxels) is atom ``j``'s brain map, and a voxel's R² is the
share of its variance the fit explains. This is an in-sample fit, as in the paper; the
cross-validated alternative is :class:`~napari_brainorg.encoding.ridge.CVRidgeEncoder`.

The scale of λ
--------------
Atoms and voxels are centred (the model has no intercept), each atom is rescaled to
unit norm and each voxel z-scored (``standardize_Y=True``), so ``‖y‖ = sqrt(n_volumes)``
and ``d_j' y = sqrt(n_volumes) · corr(d_j, y)``. The estimator's ``alpha`` is
therefore a correlation: ``λ_f = alpha · sqrt(n_volumes)``, and an atom enters a
voxel's fit only where its correlation with what the other atoms leave unexplained
exceeds ``alpha`` (with ``alpha >= max_j |corr(d_j, y)|`` every code of the voxel is
0; :func:`alpha_max` gives that bound per voxel). The default 0.1 is about 1.7
standard errors of the correlation of two independent white series over 300 volumes.
The same rule, λ = alpha · (root-mean-square voxel norm), applies without z-scoring.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._backend import get_backend
from .._progress import check_cancel
from ..errors import ConfigError, FMRIInputError, ShapeError
from ._ridge_chunks import _as_float_2d
from .preprocessing import ConstantColumnsWarning

from sklearn.base import BaseEstimator, RegressorMixin  # noqa: E402  (scikit-learn estimators)

__all__ = ["SparseAtomEncoder", "alpha_max", "fit_with_shift_null", "sparse_r2_null"]

def _prepare_atoms(atoms: np.ndarray):
    mean = atoms.mean(0)
    centred = atoms - mean
    norm = np.sqrt((centred.astype(np.float64) ** 2).sum(0))
    flat = norm <= 1e-12 * max(1.0, float(np.abs(atoms).max(initial=0.0)))
    if flat.any():
        raise ShapeError(
            f"'atoms' columns {np.flatnonzero(flat)[:5].tolist()} are constant over volumes; "
            "a constant atom cannot explain any variance once centred. Drop it."
        )
    return centred / norm.astype(atoms.dtype), mean, norm


def _prepare_voxels(Y: np.ndarray, standardize: bool):
    y_mean = Y.mean(0, dtype=np.float64)
    Yc = np.subtract(Y, y_mean.astype(Y.dtype))
    # the sum of squares without a squared copy of the voxels
    std = np.sqrt(np.einsum("ij,ij->j", Yc, Yc, dtype=np.float64) / max(Y.shape[0], 1))
    constant = std <= 1e-6 * np.maximum(np.abs(y_mean), np.finfo(np.float32).tiny)
    if constant.any():
        warnings.warn(
            f"{int(constant.sum())} of {constant.size} voxels have no variance "
            f"(first {np.flatnonzero(constant)[:5].tolist()}); their codes and R² are 0.",
            ConstantColumnsWarning, stacklevel=3,
        )
    scale = np.where(constant | (not standardize), 1.0, std)
    Yc /= scale.astype(Y.dtype)
    Yc[:, constant] = 0.0
    return Yc, y_mean, scale, constant, std


def alpha_max(atoms, Y) -> np.ndarray:
    """Smallest ``alpha`` of :class:`SparseAtomEncoder` that sets all of a voxel's codes to 0.

    Parameters
    ----------
    atoms : array of shape (n_volumes, k)
    Y : array of shape (n_volumes, n_voxels)

    Returns
    -------
    alpha_max : ndarray of shape (n_voxels,)
        ``max_j |corr(atom_j, y)|`` for each voxel (0 for a constant voxel).
    """
    atoms = _as_float_2d("atoms", atoms, "(n_volumes, k)")
    Y = _as_float_2d("Y", Y, "(n_volumes, n_voxels)")
    if atoms.shape[0] != Y.shape[0]:
        raise ShapeError(
            f"'atoms' and 'Y' must have the same number of volumes; {atoms.shape[0]} and {Y.shape[0]} were provided."
        )
    D, _, _ = _prepare_atoms(atoms)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantColumnsWarning)
        Yz = _prepare_voxels(Y, True)[0]
    return np.abs(D.T @ Yz).max(0) / math.sqrt(Y.shape[0])


class SparseAtomEncoder(RegressorMixin, BaseEstimator):
    """Sparse encoding of every voxel on fixed atoms (the paper's model, in-sample).

    Parameters
    ----------
    alpha : float, default 0.1
        Sparsity penalty on the correlation scale: ``λ_f = alpha · sqrt(n_volumes)``
        for z-scored voxels and unit-norm atoms (see the module's notes). 0 gives
        least squares.
    positive : bool, default False
        Constrain the codes to be non-negative (only activations, no deactivations).
    max_iter : int, default 200
        Maximum FISTA iterations.
    tol : float, default 1e-4
        Relative tolerance on the change of the codes.
    standardize_Y : bool, default True
        z-score each voxel before fitting (coefficients then read as standard deviations
        of the voxel per unit-norm atom, comparable across voxels and subjects).
    backend : {"numpy", "torch", "auto"}, default "numpy"
    device : str, optional
        torch device.
    dtype : {"float32", "float64"}, optional
        Default: float64 when both inputs are float64, else float32.
    chunk_size : int, optional
        Voxels per chunk of the solver.

    Attributes
    ----------
    coef_ : ndarray of shape (k, n_voxels)
        One map per atom: its code in every voxel.
    r2_ : ndarray of shape (n_voxels,)
        In-sample variance explained, ``1 - ‖y - D w‖² / ‖y - mean(y)‖²`` (0 for
        constant voxels).
    lambda_ : float
        The λ_f used in the objective.
    atom_mean_, atom_norm_ : ndarray of shape (k,)
        Centring and scaling of the atoms (``D = (atoms - atom_mean_) / atom_norm_``).
    y_mean_, y_scale_ : ndarray of shape (n_voxels,)
        Centring and scaling of the voxels.
    constant_voxels_ : ndarray of bool, shape (n_voxels,)
    n_features_in_ : int
        k, the number of atoms.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> atoms = rng.standard_normal((300, 8))
    >>> Y = atoms[:, [2]] + 0.5 * rng.standard_normal((300, 5))
    >>> model = SparseAtomEncoder(alpha=0.1).fit(atoms, Y)
    >>> int(np.abs(model.coef_).argmax(0)[0])
    2
    """

    def __init__(self, alpha=0.1, positive=False, max_iter=200, tol=1e-4, standardize_Y=True,
                 backend="numpy", device=None, dtype=None, chunk_size=None):
        self.alpha = alpha
        self.positive = positive
        self.max_iter = max_iter
        self.tol = tol
        self.standardize_Y = standardize_Y
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.chunk_size = chunk_size

    def __sklearn_tags__(self):
        from .ridge import _encoder_tags

        return _encoder_tags(super().__sklearn_tags__())

    def fit(self, atoms, Y, progress=None, cancel=None):
        """Fit the codes of every voxel.

        Parameters
        ----------
        atoms : array of shape (n_volumes, k)
            The atoms' time courses (filtered like ``Y`` if ``Y`` was filtered).
        Y : array of shape (n_volumes, n_voxels)
            fMRI time series.
        progress, cancel
            As in :func:`~napari_brainorg.sparse.dictionary.sparse_encode`.

        Returns
        -------
        self
        """
        D, Yc = self._prepare(atoms, Y)
        ss_tot = np.einsum("ij,ij->j", Yc, Yc, dtype=np.float64)
        self.coef_, self.r2_ = self._solve(D, Yc, ss_tot, progress=progress, cancel=cancel)
        return self

    def _prepare(self, atoms, Y) -> tuple[np.ndarray, np.ndarray]:
        """Validate, set every fitted attribute but the codes, and return the prepared
        atoms ``D`` (centred, unit norm) and voxels ``Yc`` (centred, scaled)."""
        try:
            alpha = float(self.alpha)
        except (TypeError, ValueError):
            raise ConfigError(f"'alpha' must be a number >= 0; {self.alpha!r} was provided.") from None
        if not np.isfinite(alpha) or alpha < 0:
            raise ConfigError(f"'alpha' must be a number >= 0; {self.alpha!r} was provided.")
        from .ridge import _sklearn_validate

        _sklearn_validate(self, atoms, Y, reset=True)
        atoms = _as_float_2d("atoms", atoms, "(n_volumes, k)")
        Y = np.asarray(Y) if type(Y).__module__.split(".")[0] != "torch" else Y
        self._y_1d = getattr(Y, "ndim", 2) == 1  # scikit-learn: a 1-D y gives a 1-D prediction
        Y = _as_float_2d("Y", Y.reshape(-1, 1) if self._y_1d else Y, "(n_volumes, n_voxels)")
        if atoms.shape[0] != Y.shape[0]:
            raise ShapeError(
                f"'atoms' and 'Y' must have the same number of volumes (rows); atoms has "
                f"{atoms.shape[0]} and Y has {Y.shape[0]}."
            )
        if not np.all(np.isfinite(atoms)):
            raise ShapeError("'atoms' holds NaN or infinite values.")
        bad = ~np.isfinite(Y).all(0)
        if bad.any():
            raise FMRIInputError(
                f"'Y' holds NaN or infinite values in {int(bad.sum())} voxel columns "
                f"(first {np.flatnonzero(bad)[:5].tolist()}); remove them (mask) before encoding."
            )
        dtype = self.dtype or ("float64" if atoms.dtype == Y.dtype == np.float64 else "float32")
        npdt = np.dtype(dtype)
        get_backend(self.backend, self.device, dtype)  # validates backend and dtype early
        D, self.atom_mean_, self.atom_norm_ = _prepare_atoms(atoms.astype(npdt))
        Yc, y_mean, y_scale, constant, std = _prepare_voxels(Y.astype(npdt, copy=False), self.standardize_Y)
        n_volumes = Y.shape[0]
        # Root-mean-square norm of the (scaled) voxels that vary: sqrt(n_volumes) when z-scored.
        scaled_var = (std[~constant] / y_scale[~constant]) ** 2
        rms_norm = math.sqrt(n_volumes * float(scaled_var.mean())) if scaled_var.size else 0.0
        self.lambda_ = alpha * rms_norm
        self._dtype = dtype
        self.y_mean_, self.y_scale_ = y_mean.astype(npdt), y_scale.astype(npdt)
        self.constant_voxels_ = constant
        self.n_features_in_ = atoms.shape[1]
        return D, Yc

    def _solve(self, D: np.ndarray, Yc: np.ndarray, ss_tot: np.ndarray, progress=None,
               cancel=None) -> tuple[np.ndarray, np.ndarray]:
        """The codes of the prepared voxels ``Yc`` on the prepared atoms ``D`` at ``lambda_``,
        and each voxel's in-sample R² given its ``y'y`` (``ss_tot``): the solver returns
        ``||y - D w||² = y'y - 2 w'D'y + w'D'D w`` from its own ``D'y``, so the residuals
        (n_volumes × n_voxels) are never formed and ``D'Y`` is made once."""
        from ..sparse._encode import _sparse_encode

        W, ss_res = _sparse_encode(
            Yc, D, self.lambda_, positive=self.positive, max_iter=self.max_iter, tol=self.tol, init=None,
            backend=self.backend, device=self.device, chunk_size=self.chunk_size, dtype=self._dtype,
            solver="auto", progress=progress, cancel=cancel, x_sq=ss_tot,
        )
        check_cancel(cancel)
        flat = ss_tot <= 0
        r2 = np.where(flat, 0.0, 1.0 - np.maximum(ss_res, 0.0) / np.where(flat, 1.0, ss_tot))
        return W, r2.astype(Yc.dtype)

    def predict(self, atoms) -> np.ndarray:
        """Predicted fMRI, in the units of the ``Y`` given to ``fit``.

        Parameters
        ----------
        atoms : array of shape (n_volumes, k)

        Returns
        -------
        Y_pred : ndarray of shape (n_volumes, n_voxels)
        """
        from .ridge import _check_fitted, _sklearn_validate

        _check_fitted(self)
        _sklearn_validate(self, atoms, None, reset=False)
        atoms = _as_float_2d("atoms", atoms, "(n_volumes, k)")
        if not np.all(np.isfinite(atoms)):
            raise ShapeError("'atoms' holds NaN or infinite values.")
        if atoms.shape[1] != self.n_features_in_:
            raise ShapeError(
                f"X has {atoms.shape[1]} features, but SparseAtomEncoder is expecting {self.n_features_in_} "
                f"features as input: 'atoms' must have {self.n_features_in_} columns as in fit."
            )
        D = (atoms.astype(self.coef_.dtype) - self.atom_mean_) / self.atom_norm_.astype(self.coef_.dtype)
        pred = (D @ self.coef_) * self.y_scale_ + self.y_mean_
        return pred[:, 0] if getattr(self, "_y_1d", False) else pred


def sparse_r2_null(atoms, Y, shifts, *, alpha=0.1, cancel=None, **encoder_options) -> np.ndarray:
    """In-sample R² of the paper's sparse fit with the atoms circularly shifted in time.

    Every atom is shifted by the same number of volumes (so their mutual correlations
    and each one's autocorrelation are kept; only their alignment with the fMRI is
    broken), the sparse model is refit, and each voxel's R² recorded: the chance level
    of the in-sample R² for these atoms, this sparsity and these voxels.

    The fMRI is centred and scaled once, and only the (prepared) atoms are rolled for
    each draw: shifting every raw atom rolls its centred, unit-norm version alike.

    Parameters
    ----------
    atoms : array of shape (n_volumes, k)
    Y : array of shape (n_volumes, n_voxels)
    shifts : sequence of int
        Circular shifts in volumes
        (:func:`napari_brainorg.encoding.inference.circular_shift_draws`); the same
        shifts for every subject of a story.
    alpha : float
        As in :class:`SparseAtomEncoder`.

    Returns
    -------
    null_r2 : ndarray of shape (n_shifts, n_voxels)
    """
    return fit_with_shift_null(atoms, Y, shifts, alpha=alpha, cancel=cancel, **encoder_options)[1]


def fit_with_shift_null(atoms, Y, shifts, *, alpha=0.1, cancel=None,
                        **encoder_options) -> tuple[SparseAtomEncoder, np.ndarray]:
    """The fitted :class:`SparseAtomEncoder` and its shift null (:func:`sparse_r2_null`),
    from one preparation of the voxels (centred, scaled, their sums of squares).

    Returns
    -------
    encoder : SparseAtomEncoder
        Fitted on ``atoms`` and ``Y``.
    null_r2 : ndarray of shape (n_shifts, n_voxels)
    """
    shifts = [int(s) for s in shifts]
    enc = SparseAtomEncoder(alpha=alpha, **encoder_options)
    D, Yc = enc._prepare(atoms, Y)
    ss_tot = np.einsum("ij,ij->j", Yc, Yc, dtype=np.float64)
    enc.coef_, enc.r2_ = enc._solve(D, Yc, ss_tot, cancel=cancel)
    out = []
    for s in shifts:
        check_cancel(cancel)
        Ds = np.ascontiguousarray(np.roll(D, s, axis=0))
        out.append(np.asarray(enc._solve(Ds, Yc, ss_tot, cancel=cancel)[1]))
    return enc, np.stack(out) if out else np.zeros((0, Yc.shape[1]), enc.r2_.dtype)
