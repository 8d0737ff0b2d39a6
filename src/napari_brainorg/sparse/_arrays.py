"""Argument checks and backend-neutral array helpers of the sparse solvers.

Arrays are numpy arrays (memory maps included) or torch tensors; a helper asks the
backend (:func:`napari_brainorg._backend.get_backend`) for what differs between them.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

from .._backend import Backend
from ..errors import ShapeError, check_choice


def _dtype_for(dtype) -> str:
    if dtype is None:
        return "float32"
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    check_choice("dtype", name, ("float32", "float64"))
    return name


def _shape_of(a) -> tuple[int, ...]:
    return tuple(int(s) for s in a.shape)


def _as_2d(name: str, a, expected: str):
    """Return ``a`` as something with ``.shape`` and ``.ndim`` (numpy or torch)."""
    if not hasattr(a, "shape") or not hasattr(a, "ndim"):
        a = np.asarray(a)
    if a.ndim != 2:
        raise ShapeError(
            f"{name!r} must be a 2D array of shape {expected}; an array of shape "
            f"{_shape_of(a)} was provided."
        )
    return a


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name!r} must be an integer >= {minimum}; {value!r} was provided.")
    return int(value)


def _check_nonneg_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name!r} must be a finite number >= 0; {value!r} was provided.")
    return float(value)


def _check_random_state(random_state):
    """A numpy Generator or RandomState for ``random_state`` (None, int or either)."""
    if isinstance(random_state, (np.random.Generator, np.random.RandomState)):
        return random_state
    if random_state is None or (isinstance(random_state, Integral) and not isinstance(random_state, bool)):
        return np.random.default_rng(random_state)
    raise ValueError(
        f"'random_state' must be None, an integer, a numpy Generator or RandomState; "
        f"{random_state!r} was provided."
    )


def _check_lam(lam, n_cols: int):
    if np.ndim(lam) == 0:
        return _check_nonneg_real("lam", float(lam) if isinstance(lam, (np.floating, np.integer)) else lam)
    lam = np.asarray(lam, dtype=np.float64).ravel()
    if lam.shape != (n_cols,):
        raise ShapeError(
            f"'lam' must be a number or an array of shape ({n_cols},) (one per column of X); "
            f"an array of shape {np.shape(lam)} was provided."
        )
    if not np.isfinite(lam).all() or (lam < 0).any():
        raise ValueError("'lam' must hold finite values >= 0; negative or non-finite values were provided.")
    return lam


def _zeros(be: Backend, shape):
    if be.name == "numpy":
        return np.zeros(shape, dtype=be.dtype)
    import torch

    return torch.zeros(shape, dtype=getattr(torch, be.dtype), device=be.device)


def _chunk(be: Backend, X, sl: slice):
    """Columns ``sl`` of ``X`` as a backend array of the backend's dtype (a view when possible)."""
    if be.name == "numpy":
        return np.asarray(X[:, sl], dtype=be.dtype)
    return be.asarray(X[:, sl])
