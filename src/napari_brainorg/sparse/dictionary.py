"""Sparse dictionary learning over artificial neurons (ANs): the atoms.

The problem (METHOD §2) is

.. math::

    \\min_{D, A} \\tfrac12 \\lVert X - D A \\rVert_F^2 + \\lambda \\lVert A \\rVert_1
    \\quad \\text{s.t.} \\quad \\lVert d_j \\rVert_2 = 1,

with ``X`` of shape (n_volumes, n_ans) (z-scored columns), ``D`` of shape
(n_volumes, k) (the atoms: unit-norm time courses) and ``A`` of shape (k, n_ans)
(sparse codes: which atoms each AN uses).

This module is the package's face: the functions below are defined beside it, as
scikit-learn's ``sparse_encode`` sits beside its estimators, and imported from here.

- :func:`sparse_encode` (:mod:`._encode`) solves the codes for a fixed ``D``, one
  chunk of columns at a time, on the Gram matrix ``D'D``: by coordinate descent
  (numpy; a numba kernel in :mod:`._cd` that checks every atom's optimality
  condition in a full sweep and then sweeps only the non-zero codes) or by FISTA
  (:mod:`._fista`; numpy or torch, CPU or CUDA). The encoding step uses it too, with
  voxels as columns.
- :func:`learn_dictionary` (:mod:`._learn`) alternates codes (warm-started) and
  atoms (block-coordinate descent, one pass over the atoms, as in Mairal et al.
  2010; :mod:`._atom_steps`), reading ``X`` once per iteration, chunk by chunk: ``X``
  may be a memory map and is never copied whole, so the peak memory stays near
  ``X``'s size plus the codes.
- :func:`dictionary_objective` and :func:`lambda_from_alpha` (:mod:`._objective`):
  the objective and λ's scale.
- :class:`SparseDictionary` wraps them with scikit-learn's contract and
  orientation (each AN is a sample).

Backends: numpy or torch (CPU or CUDA) through
:func:`napari_brainorg._backend.get_backend`. On numpy, column chunks run in
worker threads (:mod:`._threads`: as many as the BLAS threads allowed, at most the
cores), each with single-threaded BLAS.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin

from ..errors import ShapeError, check_choice
from ._arrays import _as_2d, _check_nonneg_real, _dtype_for
from ._atom_steps import _replace_weakest_atom  # noqa: F401  (the tests import it from here)
from ._encode import SOLVERS, sparse_encode
from ._learn import learn_dictionary
from ._objective import DEFAULT_ALPHA, _rms_column_norm, dictionary_objective, lambda_from_alpha

__all__ = [
    "DEFAULT_ALPHA",
    "SOLVERS",
    "dictionary_objective",
    "lambda_from_alpha",
    "learn_dictionary",
    "sparse_encode",
    "SparseDictionary",
]

class SparseDictionary(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Sparse dictionary learning over ANs, with scikit-learn's contract.

    Each AN is a sample and each volume a feature (scikit-learn's orientation), so
    ``fit(X)`` takes ``X`` of shape (n_ans, n_volumes), i.e. the transpose of the
    pipeline's ``an_responses``. It minimises

    ``0.5 * ||X' - D A||_F^2 + lam * ||A||_1``  with unit-norm columns of ``D``,

    through :func:`learn_dictionary`; ``components_`` holds ``D'``.

    Parameters
    ----------
    n_atoms : int, default 64
        k, the number of atoms (the paper's 64).
    alpha : float, default DEFAULT_ALPHA (0.15)
        Sparsity penalty. With ``alpha_scale="rms"`` the λ of the objective is
        ``lam_ = alpha * sqrt(mean_i ||x_i||^2)`` (the root-mean-square norm of the
        ANs' time courses), which is ``alpha * sqrt(n_volumes)`` for z-scored ANs:
        a code is non-zero only where the AN's partial correlation with an atom
        exceeds about ``alpha``, whatever the number of volumes. The default 0.15
        is about 2.6 standard deviations of the correlation between two independent
        white series over 300 volumes, so chance correlations rarely make an AN
        join an atom while an AN whose time course follows an atom does;
        :func:`napari_brainorg.sparse.selection.sweep_dictionary` checks the choice
        on the data at hand. With ``alpha_scale="none"``, ``lam_ = alpha`` exactly
        (scikit-learn's ``DictionaryLearning(alpha=lam_)`` minimises the same
        objective).
    alpha_scale : {"rms", "none"}, default "rms"
    max_iter : int, default 200
        Maximum alternations of codes and atoms.
    tol : float, default 1e-6
        Relative decrease of the objective at which the alternation stops.
    init : {"svd", "random"}, default "svd"
        Initial atoms: leading left singular vectors of the data (deterministic), or
        ``n_atoms`` ANs drawn with ``random_state``.
    random_state : int, RandomState, Generator or None
        Seeds the random draws; a fixed seed gives the same atoms on every run.
    positive_codes : bool, default False
    code_max_iter : int, default 200
    code_tol : float, default 1e-3
        The code solver's limits inside the alternation (see :func:`learn_dictionary`);
        ``transform`` solves codes to ``code_tol / 10``.
    backend : {"numpy", "torch", "auto"}, default "numpy"
    device : str, optional
        torch device, e.g. ``"cuda"``.
    dtype : {"float32", "float64"}, default "float32"
        Precision of the computation and of the codes.
    chunk_size : int, optional
        ANs per chunk in the code step.
    solver : {"auto", "cd", "fista"}, default "auto"
        The code solver: coordinate descent on numpy, FISTA on torch (see
        :func:`sparse_encode`).

    Attributes
    ----------
    components_ : ndarray of shape (n_atoms, n_volumes)
        Atom time courses (unit norm).
    codes_ : ndarray of shape (n_atoms, n_ans)
        Codes of the ANs the dictionary was fitted on.
    lam_ : float
        λ of the objective.
    n_iter_ : int
        Alternations run.
    objective_ : ndarray of shape (``n_iter_``,)
        Objective after each alternation.
    final_objective_ : float
        Objective with the final codes.
    converged_ : bool
    n_features_in_ : int
        n_volumes.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((500, 60))  # 500 ANs, 60 volumes
    >>> sd = SparseDictionary(n_atoms=8, random_state=0).fit(X)
    >>> sd.components_.shape, sd.transform(X).shape
    ((8, 60), (500, 8))
    """

    def __init__(self, n_atoms=64, alpha=DEFAULT_ALPHA, *, alpha_scale="rms", max_iter=200,
                 tol=1e-6, init="svd", random_state=None, positive_codes=False,
                 code_max_iter=200, code_tol=1e-3, backend="numpy", device=None,
                 dtype="float32", chunk_size=None, solver="auto"):
        self.n_atoms = n_atoms
        self.alpha = alpha
        self.alpha_scale = alpha_scale
        self.max_iter = max_iter
        self.tol = tol
        self.init = init
        self.random_state = random_state
        self.positive_codes = positive_codes
        self.code_max_iter = code_max_iter
        self.code_tol = code_tol
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.chunk_size = chunk_size
        self.solver = solver

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = [_dtype_for(self.dtype)]
        return tags

    def fit(self, X, y=None, *, progress=None, cancel=None):
        """Learn the atoms from ``X`` of shape (n_ans, n_volumes); returns ``self``."""
        self._fit(X, progress=progress, cancel=cancel)
        return self

    def fit_transform(self, X, y=None, *, progress=None, cancel=None):
        """Fit and return the codes of ``X``, shape (n_ans, n_atoms)."""
        return self._fit(X, progress=progress, cancel=cancel).T

    def _fit(self, X, progress=None, cancel=None):
        from sklearn.utils.validation import validate_data

        check_choice("alpha_scale", self.alpha_scale, ("rms", "none"))
        check_choice("init", self.init, ("svd", "random"))
        dtype = _dtype_for(self.dtype)
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        alpha = _check_nonneg_real("alpha", self.alpha)
        lam = alpha * _rms_column_norm(X.T) if self.alpha_scale == "rms" else alpha
        D, A, info = learn_dictionary(
            X.T, self.n_atoms, lam, max_iter=self.max_iter, tol=self.tol, init=self.init,
            random_state=self.random_state, positive_codes=self.positive_codes,
            code_max_iter=self.code_max_iter, code_tol=self.code_tol, backend=self.backend,
            device=self.device, dtype=dtype, chunk_size=self.chunk_size, solver=self.solver,
            progress=progress, cancel=cancel,
        )
        self.components_ = np.ascontiguousarray(D.T)
        self.codes_ = A
        self.lam_ = float(lam)
        self.n_iter_ = int(info["n_iter"])
        self.objective_ = np.asarray(info["objective"], dtype=np.float64)
        self.final_objective_ = float(info["final_objective"])
        self.converged_ = bool(info["converged"])
        if not self.converged_:
            import warnings

            from sklearn.exceptions import ConvergenceWarning

            warnings.warn(
                f"SparseDictionary did not converge in max_iter={self.max_iter} iterations "
                f"(tol={self.tol}); raise 'max_iter' or 'tol'.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return A

    def _check_fitted(self):
        if not hasattr(self, "components_"):
            from ..errors import NotFittedError

            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call 'fit' with "
                f"AN responses of shape (n_ans, n_volumes) before using this method."
            )

    def __sklearn_is_fitted__(self):
        return hasattr(self, "components_")

    @property
    def atoms_(self) -> np.ndarray:
        """Atom time courses as columns, shape (n_volumes, n_atoms) (``components_.T``)."""
        self._check_fitted()
        return self.components_.T

    @property
    def _n_features_out(self):
        return self.components_.shape[0]

    def transform(self, X, *, progress=None, cancel=None):
        """Codes of ``X`` (n_ans, n_volumes) on the fitted atoms, shape (n_ans, n_atoms)."""
        from sklearn.utils.validation import validate_data

        self._check_fitted()
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        A = sparse_encode(
            X.T, self.components_.T, self.lam_, positive=self.positive_codes,
            max_iter=self.code_max_iter, tol=self.code_tol / 10.0, backend=self.backend,
            device=self.device, chunk_size=self.chunk_size, dtype=_dtype_for(self.dtype),
            solver=self.solver, progress=progress, cancel=cancel,
        )
        return A.T

    def inverse_transform(self, codes):
        """Reconstructed time courses ``codes @ components_``, shape (n_ans, n_volumes)."""
        self._check_fitted()
        codes = _as_2d("codes", np.asarray(codes), f"(n_ans, {self.components_.shape[0]})")
        if codes.shape[1] != self.components_.shape[0]:
            raise ShapeError(
                f"'codes' must have shape (n_ans, {self.components_.shape[0]}); an array of "
                f"shape {codes.shape} was provided."
            )
        return codes @ self.components_
