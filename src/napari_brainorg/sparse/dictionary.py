"""Sparse dictionary learning over artificial neurons (ANs): the atoms.

The problem (METHOD §2) is

.. math::

    \\min_{D, A} \\tfrac12 \\lVert X - D A \\rVert_F^2 + \\lambda \\lVert A \\rVert_1
    \\quad \\text{s.t.} \\quad \\lVert d_j \\rVert_2 = 1,

with ``X`` of shape (n_volumes, n_ans) (z-scored columns), ``D`` of shape
(n_volumes, k) (the atoms: unit-norm time courses) and ``A`` of shape (k, n_ans)
(sparse codes: which atoms each AN uses).

- :func:`sparse_encode` solves the codes for a fixed ``D``, batched over every
  column at once (FISTA on the Gram matrix). The encoding step uses it too, with
  voxels as columns.
- :func:`learn_dictionary` alternates codes (warm-started FISTA) and atoms
  (block-coordinate descent, one pass over the atoms, as in Mairal et al. 2010).
- :class:`SparseDictionary` wraps both with scikit-learn's contract and
  orientation (each AN is a sample).

Every solver runs on numpy or torch (CPU or CUDA) through
:func:`napari_brainorg._backend.get_backend`.
"""

from __future__ import annotations

import math
import time
from numbers import Integral, Real

import numpy as np

from .._backend import Backend, get_backend
from .._progress import check_cancel, report
from ..errors import ShapeError, check_choice

__all__ = [
    "DEFAULT_ALPHA",
    "sparse_encode",
]

#: Default relative sparsity penalty: lambda = DEFAULT_ALPHA * rms column norm of X.
#: For z-scored ANs the rms norm is sqrt(n_volumes), so an AN takes up an atom only
#: where its (partial) correlation with the atom's time course exceeds about 0.15,
#: about 2.6 standard deviations of the correlation of two independent white series
#: over 300 volumes (the bundled story's length), and about 4.7 over 1,000.
DEFAULT_ALPHA = 0.15

# Working-set size of one chunk of columns in the code solver; what matters is the
# handful of (k, chunk) arrays FISTA keeps plus the (n_volumes, chunk) slice of X.
_CHUNK_BYTES = 256 * 2**20


# --------------------------------------------------------------------------- helpers


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


def _sum_cols(be: Backend, a):
    """Column sums as a (1, n) array."""
    return a.sum(0, keepdims=True) if be.name == "numpy" else a.sum(0, keepdim=True)


def _fro(be: Backend, a) -> float:
    if be.name == "numpy":
        return float(np.sqrt(np.vdot(a, a)))
    return float(a.norm())


def _shrink(be: Backend, z, thr, positive: bool):
    """Proximal operator of ``thr * |.|_1`` (plus the non-negativity constraint)."""
    if be.name == "numpy":
        if positive:
            return np.maximum(z - thr, 0, out=z)
        return z - np.clip(z, -thr, thr)
    import torch

    if positive:
        return torch.clamp(z - thr, min=0)
    return z - torch.minimum(torch.maximum(z, -thr), thr) if torch.is_tensor(thr) else z - torch.clamp(z, -thr, thr)


def _where(be: Backend, cond, a, b):
    return np.where(cond, a, b) if be.name == "numpy" else be.xp.where(cond, a, b)


def _zeros(be: Backend, shape):
    if be.name == "numpy":
        return np.zeros(shape, dtype=be.dtype)
    import torch

    return torch.zeros(shape, dtype=getattr(torch, be.dtype), device=be.device)


def _copy(be: Backend, a):
    return a.copy() if be.name == "numpy" else a.clone()


def _lipschitz(be: Backend, gram) -> float:
    """Largest eigenvalue of the Gram matrix (the gradient's Lipschitz constant)."""
    g = np.asarray(be.to_numpy(gram), dtype=np.float64)
    g = 0.5 * (g + g.T)
    return float(np.linalg.eigvalsh(g)[-1]) if g.size else 0.0


def _default_chunk(n_volumes: int, k: int, itemsize: int) -> int:
    per_column = (n_volumes + 7 * k) * itemsize
    return max(1, _CHUNK_BYTES // per_column)


def _lam_row(be: Backend, lam, start: int, stop: int):
    """λ for columns ``start:stop``: a Python float, or a (1, c) array when per column."""
    if isinstance(lam, float):
        return lam
    return be.asarray(lam[start:stop].reshape(1, -1))


def _fista(be: Backend, gram, dtx, lam, lipschitz: float, a0, *, positive: bool,
           max_iter: int, tol: float, cancel=None):
    """FISTA over a block of columns at once.

    Minimises ``0.5 a' G a - b' a + lam |a|_1`` for every column ``b`` of ``dtx``,
    with momentum restarted per column where it points uphill (O'Donoghue and
    Candès' gradient scheme), which keeps FISTA's speed without its oscillations.

    Returns ``(A, n_iter)``.
    """
    step = 1.0 / lipschitz
    thr = lam * step
    a = _copy(be, a0)
    y = _copy(be, a0)
    n_cols = a.shape[1]
    t = _zeros(be, (1, n_cols)) + 1.0
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        z = y - step * (gram @ y - dtx)
        a_new = _shrink(be, z, thr, positive)
        diff = a_new - a
        uphill = _sum_cols(be, (y - a_new) * diff) > 0
        t_new = 0.5 * (1.0 + (1.0 + 4.0 * t * t) ** 0.5)
        beta = _where(be, uphill, 0.0, (t - 1.0) / t_new)
        t = _where(be, uphill, 1.0, t_new)
        y = a_new + beta * diff
        delta = _fro(be, diff)
        scale = _fro(be, a_new)
        a = a_new
        if delta <= tol * max(scale, 1e-30):
            break
        if n_iter % 25 == 0:
            check_cancel(cancel)
    return a, n_iter


def _column_smooth_loss(be: Backend, gram, dtx, a):
    """Per column ``0.5 a' G a - b' a`` (the residual is ``|x|^2 + 2`` this)."""
    return _sum_cols(be, a * (0.5 * (gram @ a) - dtx))


def _column_l1(be: Backend, a):
    return _sum_cols(be, abs(a))


def _encode_block(be, X, D, gram, lam, lipschitz, init, *, positive, max_iter, tol,
                  chunk_size, progress, cancel, stage, want_residual=False):
    """Code every column of ``X`` (backend or numpy array) chunk by chunk.

    Returns ``(A, n_iter_max, residual_sq)`` with ``A`` a backend array (k, n_cols)
    and ``residual_sq`` a float64 numpy array of per-column |x - D a|^2, or None.
    """
    n_volumes, n_cols = _shape_of(X)
    k = _shape_of(D)[1]
    A = _zeros(be, (k, n_cols))
    res_sq = np.empty(n_cols) if want_residual else None
    n_iter_max = 0
    n_chunks = max(1, -(-n_cols // chunk_size))
    report(progress, stage, 0, n_chunks)
    for c, start in enumerate(range(0, n_cols, chunk_size)):
        check_cancel(cancel)
        stop = min(start + chunk_size, n_cols)
        xc = be.asarray(X[:, start:stop])
        dtx = D.T @ xc
        finite = np.isfinite(be.to_numpy(_sum_cols(be, dtx))).all()
        if not finite:
            bad = ~np.isfinite(be.to_numpy(_sum_cols(be, dtx))).ravel()
            raise ValueError(
                f"'X' must contain only finite values; columns "
                f"{(np.flatnonzero(bad)[:5] + start).tolist()} contain NaN or inf."
            )
        lam_c = _lam_row(be, lam, start, stop)
        if lipschitz <= 0.0:
            # Every atom is zero: the only minimiser is a zero code.
            ac = _zeros(be, (k, stop - start))
            n_it = 0
        else:
            a0 = _zeros(be, (k, stop - start)) if init is None else be.asarray(init[:, start:stop])
            ac, n_it = _fista(be, gram, dtx, lam_c, lipschitz, a0, positive=positive,
                              max_iter=max_iter, tol=tol, cancel=cancel)
            if init is not None:
                # FISTA is not monotone: never hand back a code worse than the warm start.
                f_new = _column_smooth_loss(be, gram, dtx, ac) + lam_c * _column_l1(be, ac)
                f_old = _column_smooth_loss(be, gram, dtx, a0) + lam_c * _column_l1(be, a0)
                ac = _where(be, f_old < f_new, a0, ac)
        A[:, start:stop] = ac
        if want_residual:
            x_sq = _sum_cols(be, xc * xc)
            r = x_sq + 2.0 * _column_smooth_loss(be, gram, dtx, ac)
            res_sq[start:stop] = np.maximum(np.asarray(be.to_numpy(r), dtype=np.float64).ravel(), 0.0)
        n_iter_max = max(n_iter_max, n_it)
        report(progress, stage, c + 1, n_chunks)
    return A, n_iter_max, res_sq


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


# --------------------------------------------------------------------------- codes


def sparse_encode(X, D, lam, *, positive=False, max_iter=200, tol=1e-4, init=None,
                  backend="numpy", device=None, chunk_size=None, dtype="float32",
                  progress=None, cancel=None) -> np.ndarray:
    """Sparse codes of every column of ``X`` on a fixed dictionary ``D``.

    Solves, independently for every column ``x`` of ``X``,

    ``min_a 0.5 * ||x - D a||_2^2 + lam * ||a||_1``   (and ``a >= 0`` if ``positive``)

    with FISTA on the Gram matrix ``G = D' D`` and ``D' X`` (computed once per chunk
    of columns), step ``1 / L`` with ``L`` the largest eigenvalue of ``G``, and
    momentum restarted per column where it points uphill. Columns are processed all
    at once, in chunks that bound the memory.

    Parameters
    ----------
    X : array of shape (n_volumes, n_columns)
        Data, one column per AN (or per voxel). numpy array or torch tensor.
    D : array of shape (n_volumes, k)
        Dictionary (atoms as columns). Unit-norm columns are usual but not required.
    lam : float >= 0, or array of shape (n_columns,)
        The L1 penalty λ exactly as written in the objective above (one per column
        when an array).
    positive : bool, default False
        Constrain the codes to be non-negative.
    max_iter : int, default 200
        Maximum FISTA iterations per chunk.
    tol : float, default 1e-4
        Stop a chunk when ``||A_new - A||_F <= tol * ||A_new||_F``.
    init : array of shape (k, n_columns), optional
        Warm start. A column is never returned with an objective worse than its
        warm start.
    backend : {"numpy", "torch", "auto"}, default "numpy"
    device : str, optional
        torch device (``"cuda"``, ``"cpu"``); ignored by numpy.
    chunk_size : int, optional
        Columns per chunk; default keeps one chunk's working set near 256 MiB.
    dtype : {"float32", "float64"}, default "float32"
        Precision of the computation and of the result.
    progress : callable, optional
        ``progress("sparse codes", done_chunks, n_chunks)``.
    cancel : object with ``is_set()``, optional
        Checked between chunks (and every 25 iterations).

    Returns
    -------
    A : ndarray of shape (k, n_columns)
        The codes, as a numpy array of ``dtype``.

    Raises
    ------
    ShapeError
        When ``X``, ``D``, ``lam`` or ``init`` do not have matching shapes.
    ValueError
        For NaN/inf in the data or an invalid parameter.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> D = rng.standard_normal((100, 8)); D /= np.linalg.norm(D, axis=0)
    >>> X = D[:, :2] @ rng.standard_normal((2, 50))
    >>> A = sparse_encode(X, D, lam=0.1)
    >>> A.shape
    (8, 50)
    """
    dtype = _dtype_for(dtype)
    be = get_backend(backend, device, dtype)
    X = _as_2d("X", X, "(n_volumes, n_columns)")
    D = _as_2d("D", D, "(n_volumes, k)")
    n_volumes, n_cols = _shape_of(X)
    if _shape_of(D)[0] != n_volumes:
        raise ShapeError(
            f"'D' must have one row per row of X: expected shape ({n_volumes}, k); "
            f"an array of shape {_shape_of(D)} was provided."
        )
    k = _shape_of(D)[1]
    lam = _check_lam(lam, n_cols)
    max_iter = _check_positive_int("max_iter", max_iter)
    tol = _check_nonneg_real("tol", tol)
    if init is not None:
        init = _as_2d("init", init, f"({k}, {n_cols})")
        if _shape_of(init) != (k, n_cols):
            raise ShapeError(
                f"'init' must have shape ({k}, {n_cols}) (k atoms x n_columns); an array of "
                f"shape {_shape_of(init)} was provided."
            )
    if chunk_size is None:
        chunk_size = _default_chunk(n_volumes, k, np.dtype(dtype).itemsize)
    chunk_size = _check_positive_int("chunk_size", chunk_size)
    Db = be.asarray(D)
    if not np.isfinite(be.to_numpy(Db)).all():
        raise ValueError("'D' must contain only finite values; NaN or inf was found.")
    if be.name == "torch":
        import torch

        ctx = torch.inference_mode()
    else:
        import contextlib

        ctx = contextlib.nullcontext()
    with ctx:
        gram = Db.T @ Db
        lipschitz = _lipschitz(be, gram)
        A, _, _ = _encode_block(be, X, Db, gram, lam, lipschitz, init, positive=positive,
                                max_iter=max_iter, tol=tol, chunk_size=chunk_size,
                                progress=progress, cancel=cancel, stage="sparse codes")
        return np.asarray(be.to_numpy(A), dtype=dtype)
