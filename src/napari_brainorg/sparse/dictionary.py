"""Sparse dictionary learning over artificial neurons (ANs): the atoms.

The problem (METHOD §2) is

.. math::

    \\min_{D, A} \\tfrac12 \\lVert X - D A \\rVert_F^2 + \\lambda \\lVert A \\rVert_1
    \\quad \\text{s.t.} \\quad \\lVert d_j \\rVert_2 = 1,

with ``X`` of shape (n_volumes, n_ans) (z-scored columns), ``D`` of shape
(n_volumes, k) (the atoms: unit-norm time courses) and ``A`` of shape (k, n_ans)
(sparse codes: which atoms each AN uses).

- :func:`sparse_encode` solves the codes for a fixed ``D``, one chunk of columns
  at a time, on the Gram matrix ``D'D``: by coordinate descent (numpy; a numba
  kernel in :mod:`._cd` that checks every atom's optimality condition in a full
  sweep and then sweeps only the non-zero codes) or by FISTA (numpy or torch, CPU
  or CUDA). The encoding step uses it too, with voxels as columns.
- :func:`learn_dictionary` alternates codes (warm-started) and atoms
  (block-coordinate descent, one pass over the atoms, as in Mairal et al. 2010),
  reading ``X`` once per iteration, chunk by chunk: ``X`` may be a memory map and
  is never copied whole, so the peak memory stays near ``X``'s size plus the codes.
- :class:`SparseDictionary` wraps both with scikit-learn's contract and
  orientation (each AN is a sample).

Backends: numpy or torch (CPU or CUDA) through
:func:`napari_brainorg._backend.get_backend`. On numpy, column chunks run in
worker threads (as many as the BLAS threads allowed, at most the cores), each with
single-threaded BLAS.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin

from .._backend import Backend, get_backend
from .._progress import check_cancel, report
from ..errors import ShapeError, check_choice

__all__ = [
    "DEFAULT_ALPHA",
    "SOLVERS",
    "dictionary_objective",
    "lambda_from_alpha",
    "learn_dictionary",
    "sparse_encode",
    "SparseDictionary",
]

#: Default relative sparsity penalty: lambda = DEFAULT_ALPHA * rms column norm of X.
#: For z-scored ANs the rms norm is sqrt(n_volumes), so an AN takes up an atom only
#: where its (partial) correlation with the atom's time course exceeds about 0.15,
#: about 2.6 standard deviations of the correlation of two independent white series
#: over 300 volumes (the bundled story's length), and about 4.7 over 1,000.
DEFAULT_ALPHA = 0.15

# Relative decrease of the objective per iteration below which an atom swap is tried
# (see learn_dictionary): early enough to skip the slow approach to a poor local
# minimum; a swap is kept only when it lowers the objective.
_SWAP_BELOW = 1e-2
#: Code solvers: coordinate descent (numpy) or FISTA (numpy or torch); "auto" picks
#: coordinate descent on numpy and FISTA on torch.
SOLVERS = ("auto", "cd", "fista")
# Working set of one chunk of columns in the code solver. FISTA keeps a handful of
# (k, chunk) arrays besides the (n_volumes, chunk) slice of X; coordinate descent
# keeps D'X_c and the slice, small enough to stay in cache between the two products
# of a chunk (D'X_c, then X_c A_c).
_CHUNK_BYTES = 256 * 2**20
_CD_CHUNK_BYTES = 8 * 2**20
_CD_MIN_PART = 64  # smallest default chunk of columns
_EMPTY = np.empty(0)
_EMPTY2 = np.empty((0, 0))


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


def _default_chunk(n_volumes: int, k: int, itemsize: int, solver: str = "fista", n_cols: int = 0) -> int:
    if solver == "cd":
        chunk = max(1, _CD_CHUNK_BYTES // ((n_volumes + 2 * k) * itemsize))
        # at least a few chunks per worker thread, so that the threads share the work
        return min(chunk, max(_CD_MIN_PART, -(-n_cols // (4 * _n_threads()))))
    per_column = (n_volumes + 7 * k) * itemsize
    return max(1, _CHUNK_BYTES // per_column)


def _lam_row(be: Backend, lam, start: int, stop: int):
    """λ for columns ``start:stop``: a Python float, or a (1, c) array when per column."""
    if isinstance(lam, float):
        return lam
    return be.asarray(lam[start:stop].reshape(1, -1))


def _fista(be: Backend, gram, dtx, lam, lipschitz: float, a0, *, positive: bool,
           max_iter: int, tol: float, cancel=None):
    """FISTA over a block of columns at once, each column stopped on its own.

    Minimises ``0.5 a' G a - b' a + lam |a|_1`` for every column ``b`` of ``dtx``,
    with momentum restarted per column where it points uphill (O'Donoghue and
    Candès' gradient scheme), which keeps FISTA's speed without its oscillations.
    A column stops when ``||a_new - a|| <= tol * ||a_new||``; its result then no
    longer depends on the other columns of the block, and converged columns leave
    the working set so that the slow ones do not hold the rest back.

    Returns ``(A, n_iter)`` with ``n_iter`` the iterations of the slowest column.
    """
    if be.name == "numpy":
        return _fista_numpy(gram, dtx, lam, lipschitz, a0, positive=positive,
                            max_iter=max_iter, tol=tol, cancel=cancel)
    import torch

    step = 1.0 / lipschitz
    k, n = dtx.shape
    out = a0.clone()
    act = torch.arange(n, device=dtx.device)
    prop = torch.eye(k, dtype=dtx.dtype, device=dtx.device) - step * gram
    b = step * dtx
    thr = lam * step
    per_col_thr = torch.is_tensor(thr)
    a = a0.clone()
    y = a0.clone()
    t = torch.ones(n, dtype=dtx.dtype, device=dtx.device)
    done = torch.zeros(n, dtype=torch.bool, device=dtx.device)
    n_done = 0
    tol2 = tol * tol
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        z = torch.addmm(b, prop, y)
        z = torch.clamp(z - thr, min=0) if positive else _shrink(be, z, thr, False)
        diff = z - a
        uphill = ((y - z) * diff).sum(0) > 0
        t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
        beta = torch.where(uphill, torch.zeros_like(t), (t - 1.0) / t_new)
        t = torch.where(uphill, torch.ones_like(t), t_new)
        y = z + beta * diff
        a = z
        newly = (~done) & ((diff * diff).sum(0) <= tol2 * (z * z).sum(0))
        if bool(newly.any()):
            out[:, act[newly]] = z[:, newly]
            done |= newly
            n_done = int(done.sum())
        if n_done == done.numel():
            return out, n_iter
        if n_done >= max(1, done.numel() // 10):
            keep = ~done
            act, a, y, b, t = act[keep], a[:, keep], y[:, keep], b[:, keep], t[keep]
            if per_col_thr:
                thr = thr[:, keep]
            done = done[keep]
            n_done = 0
        if n_iter % 25 == 0:
            check_cancel(cancel)
    out[:, act[~done]] = a[:, ~done]
    return out, n_iter


def _fista_numpy(gram, dtx, lam, lipschitz, a0, *, positive, max_iter, tol, cancel=None):
    """:func:`_fista` for numpy, in preallocated buffers (the loop is memory-bound)."""
    dt = dtx.dtype
    k, n = dtx.shape
    step = 1.0 / lipschitz
    # z = y - step (G y - b) = (I - step G) y + step b
    prop = (np.eye(k) - step * np.asarray(gram, dtype=np.float64)).astype(dt)
    b = np.ascontiguousarray(step * dtx, dtype=dt)
    per_col_thr = not isinstance(lam, float)
    thr = np.asarray(lam * step, dtype=dt) if per_col_thr else dt.type(lam * step)
    out = np.array(a0, dtype=dt, order="C")
    act = np.arange(n)
    a = out.copy()
    y = a.copy()
    z = np.empty_like(a)
    tmp = np.empty_like(a)
    t = np.ones(n, dtype=dt)
    done = np.zeros(n, dtype=bool)
    n_done = 0
    tol2 = tol * tol
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        np.matmul(prop, y, out=z)
        z += b
        if positive:
            z -= thr
            np.maximum(z, 0, out=z)
        else:
            np.clip(z, -thr, thr, out=tmp)
            z -= tmp
        # z holds the new iterate; a becomes the step taken, y the gap to the new point.
        np.subtract(z, a, out=a)
        y -= z
        uphill = np.einsum("ij,ij->j", y, a) > 0
        newly = np.einsum("ij,ij->j", a, a) <= tol2 * np.einsum("ij,ij->j", z, z)
        newly &= ~done
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_new
        beta[uphill] = 0.0
        t_new[uphill] = 1.0
        t = t_new
        np.multiply(a, beta, out=y)
        y += z
        a, z = z, a
        if newly.any():
            out[:, act[newly]] = a[:, newly]
            done |= newly
            n_done += int(newly.sum())
        if n_done == done.size:
            return out, n_iter
        if n_done >= max(1, done.size // 10):
            keep = ~done
            act, a, y, b, t = act[keep], a[:, keep], y[:, keep], b[:, keep], t[keep]
            z, tmp = np.empty_like(a), np.empty_like(a)
            if per_col_thr:
                thr = np.ascontiguousarray(thr[:, keep])
            done = done[keep]
            n_done = 0
        if n_iter % 25 == 0:
            check_cancel(cancel)
    out[:, act[~done]] = a[:, ~done]
    return out, n_iter


def _column_smooth_loss(be: Backend, gram, dtx, a):
    """Per column ``0.5 a' G a - b' a`` (the residual is ``|x|^2 + 2`` this)."""
    return _sum_cols(be, a * (0.5 * (gram @ a) - dtx))


def _column_l1(be: Backend, a):
    return _sum_cols(be, abs(a))


def _resolve_solver(be: Backend, solver: str) -> str:
    check_choice("solver", solver, SOLVERS)
    if solver == "auto":
        return "cd" if be.name == "numpy" else "fista"
    if solver == "cd" and be.name != "numpy":
        raise ValueError(
            "'solver' 'cd' runs on the numpy backend only; with backend 'torch' use "
            "solver='fista' (or 'auto')."
        )
    return solver


_CONTROLLER = None


def _blas_controller():
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def _n_threads() -> int:
    """Worker threads: the BLAS threads the caller allows (e.g. a Dask worker's 1), at most the cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    blas = [int(i["num_threads"]) for i in _blas_controller().select(user_api="blas").info()]
    return max(1, min([cores] + blas))


class _Workers:
    """Column chunks processed by ``n`` threads, their results taken in chunk order.

    Each thread runs single-threaded BLAS and numba kernels (both release the GIL) on
    its own chunk, so nothing waits at a barrier between threads: on a loaded
    machine this keeps the cores busy where multi-threaded BLAS on small products
    spins. Results are consumed in order, so sums over chunks are deterministic.
    """

    def __init__(self, n: int):
        self.n = max(1, int(n))
        self.pool = None
        if self.n > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(self.n, thread_name_prefix="brainorg-sparse")

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None

    def map(self, fn, n_cols: int, chunk_size: int):
        """Yield ``(slice, fn(slice))`` for consecutive column chunks, in order."""
        slices = (slice(s, min(s + chunk_size, n_cols)) for s in range(0, n_cols, chunk_size))
        if self.pool is None:
            for sl in slices:
                yield sl, fn(sl)
            return
        from collections import deque
        from concurrent.futures import wait

        pending = deque()
        try:
            for sl in slices:
                pending.append((sl, self.pool.submit(fn, sl)))
                if len(pending) >= 2 * self.n:
                    sl0, fut = pending.popleft()
                    yield sl0, fut.result()
            while pending:
                sl0, fut = pending.popleft()
                yield sl0, fut.result()
        finally:
            # On an error or a cancel, let no chunk run on behind the caller's back.
            for _, fut in pending:
                fut.cancel()
            wait([fut for _, fut in pending])


@contextlib.contextmanager
def _workers(be: Backend, solver: str):
    """Worker threads for the coordinate-descent path (BLAS limited to one thread each)."""
    if be.name != "numpy" or solver != "cd":
        yield _Workers(1)
        return
    n = _n_threads()
    with _blas_controller().limit(limits=1, user_api="blas"):
        w = _Workers(n)
        try:
            yield w
        finally:
            w.close()


def _chunk(be: Backend, X, sl: slice):
    """Columns ``sl`` of ``X`` as a backend array of the backend's dtype (a view when possible)."""
    if be.name == "numpy":
        return np.asarray(X[:, sl], dtype=be.dtype)
    return be.asarray(X[:, sl])


def _code_pass(be: Backend, X, D, A, lam, *, solver: str, positive: bool, max_iter: int,
               tol: float, chunk_size: int, workers, warm: bool = True, x_sq=None,
               stats: bool = False, progress=None, cancel=None, stage: str = "sparse codes") -> dict:
    """Codes of every column of ``X`` on the atoms ``D``, in one pass over ``X``.

    ``X`` (n_volumes, n_cols) is read one chunk of columns at a time (numpy arrays,
    memory maps or torch tensors; never copied whole). For each chunk: ``C = X_c' D``,
    the codes (coordinate descent or FISTA, in place in ``A``), and, when ``stats``,
    the sufficient statistics of the atom update and of the objective, while the
    chunk is still in cache.

    Parameters
    ----------
    D : backend array (n_volumes, k), the backend's dtype
    A : backend array (n_cols, k)
        Codes, one row per column of ``X``: the warm start when ``warm`` (else zeroed
        chunk by chunk), overwritten.
    lam : float or float64 ndarray (n_cols,)
    workers : _Workers
    x_sq : float64 ndarray (n_cols,), optional
        ``||x_i||^2``; needed for ``res_sq`` (``stats``).

    Returns
    -------
    dict
        ``n_iter`` (iterations or sweeps of the slowest column); with ``stats`` also
        ``XAt`` (n_volumes, k), ``AAt`` (k, k), ``l1_rows`` (k,) (λ-weighted |codes| per
        atom) and ``res_sq`` (n_cols,) (per-column squared residual), all float64 numpy.
    """
    n_volumes, n_cols = _shape_of(X)
    k = _shape_of(D)[1]
    per_col = not isinstance(lam, float)
    res_sq = np.empty(n_cols) if stats else None
    if solver == "cd":
        from ._cd import cd_lasso_gram

        Dn = np.asarray(be.to_numpy(D), dtype=np.float64)
        G = Dn.T @ Dn
        G = np.ascontiguousarray(0.5 * (G + G.T))
    else:
        gram = D.T @ D
        lipschitz = _lipschitz(be, gram)

    def work(sl):
        xc = _chunk(be, X, sl)
        Cc = xc.T @ D
        col_check = np.asarray(be.to_numpy(Cc.sum(1)))
        if not np.isfinite(col_check).all():
            bad = np.flatnonzero(~np.isfinite(col_check))[:5] + sl.start
            raise ValueError(
                f"'X' must contain only finite values; columns {bad.tolist()} contain NaN or inf."
            )
        Ac = A[sl]
        if not warm:
            Ac[...] = 0
        if solver == "cd":
            n = sl.stop - sl.start
            sweeps = np.empty(n, dtype=np.int32)
            AAt_c, l1_c = (np.zeros((k, k)), np.zeros(k)) if stats else (_EMPTY2, _EMPTY)
            cd_lasso_gram(G, np.ascontiguousarray(Cc), Ac, lam[sl] if per_col else np.full(n, lam),
                          positive, max_iter, tol, x_sq[sl] if stats else _EMPTY,
                          res_sq[sl] if stats else np.empty(n), np.empty(n), sweeps, AAt_c, l1_c)
            n_it = int(sweeps.max(initial=0))
            # X_c A_c' is a dense product (BLAS beats a scatter over the sparse codes)
            return n_it, ((xc @ Ac), AAt_c, l1_c) if stats else None
        else:
            n_it = _fista_chunk(be, gram, lipschitz, Cc.T, Ac, _lam_row(be, lam, sl.start, sl.stop),
                                warm=warm, positive=positive, max_iter=max_iter, tol=tol, cancel=cancel,
                                res_sq=res_sq[sl] if stats else None, x_sq=x_sq[sl] if stats else None)
        if not stats:
            return n_it, None
        absA = np.asarray(be.to_numpy(abs(Ac)))
        return n_it, (np.asarray(be.to_numpy(xc @ Ac)), np.asarray(be.to_numpy(Ac.T @ Ac)),
                      (lam[sl] @ absA) if per_col else lam * absA.sum(0, dtype=np.float64))

    out = {"n_iter": 0}
    if stats:
        XAt = np.zeros((n_volumes, k))
        AAt = np.zeros((k, k))
        l1_rows = np.zeros(k)
    n_chunks = max(1, -(-n_cols // chunk_size))
    report(progress, stage, 0, n_chunks)
    check_cancel(cancel)
    for c, (_, (n_it, st)) in enumerate(workers.map(work, n_cols, chunk_size)):
        out["n_iter"] = max(out["n_iter"], n_it)
        if stats:
            XAt += st[0]
            AAt += st[1]
            l1_rows += st[2]
        report(progress, stage, c + 1, n_chunks)
        check_cancel(cancel)
    if stats:
        out.update(XAt=XAt, AAt=0.5 * (AAt + AAt.T), l1_rows=l1_rows, res_sq=res_sq)
    return out


def _fista_chunk(be, gram, lipschitz, dtx, Ac, lam_c, *, warm, positive, max_iter, tol, cancel,
                 res_sq=None, x_sq=None) -> int:
    """FISTA on one chunk (``dtx`` (k, c), codes ``Ac`` (c, k) in place); returns its iterations."""
    k, n = _shape_of(dtx)
    if lipschitz <= 0.0:
        # Every atom is zero: the only minimiser is a zero code.
        Ac[...] = 0
        if res_sq is not None:
            res_sq[:] = x_sq
        return 0
    a0 = _copy(be, Ac.T)
    ac, n_it = _fista(be, gram, dtx, lam_c, lipschitz, a0, positive=positive, max_iter=max_iter,
                      tol=tol, cancel=cancel)
    want = res_sq is not None
    smooth = _column_smooth_loss(be, gram, dtx, ac) if (want or warm) else None
    if warm:
        # FISTA is not monotone: never hand back a code worse than the warm start.
        smooth_old = _column_smooth_loss(be, gram, dtx, a0)
        worse = (smooth_old + lam_c * _column_l1(be, a0) < smooth + lam_c * _column_l1(be, ac)).reshape(-1)
        if bool(worse.any()):
            ac[:, worse] = a0[:, worse]
            smooth = _where(be, worse.reshape(1, -1), smooth_old, smooth)
    Ac[...] = ac.T
    if want:
        r = np.asarray(be.to_numpy(smooth), dtype=np.float64).ravel()
        res_sq[:] = np.maximum(x_sq + 2.0 * r, 0.0)
    return n_it


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


# --------------------------------------------------------------------------- codes


def sparse_encode(X, D, lam, *, positive=False, max_iter=200, tol=1e-4, init=None,
                  backend="numpy", device=None, chunk_size=None, dtype="float32",
                  solver="auto", progress=None, cancel=None) -> np.ndarray:
    """Sparse codes of every column of ``X`` on a fixed dictionary ``D``.

    Solves, independently for every column ``x`` of ``X``,

    ``min_a 0.5 * ||x - D a||_2^2 + lam * ||a||_1``   (and ``a >= 0`` if ``positive``)

    on the Gram matrix ``G = D' D`` and ``D' X`` (computed once per chunk of columns;
    ``X`` is read chunk by chunk and may be a memory map), by

    - coordinate descent (``solver="cd"``, numpy): each coordinate minimised exactly
      in turn; a full sweep checks every atom's optimality condition (a zero code
      with ``|d_j' r| <= lam`` stays zero at O(1) cost), then only the non-zero codes
      are swept until they settle, then a full sweep checks again. Monotone, so a
      warm start is never made worse;
    - FISTA (``solver="fista"``, numpy or torch): step ``1 / L`` with ``L`` the
      largest eigenvalue of ``G``, momentum restarted per column where it points
      uphill, all columns of a chunk at once.

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
        Maximum iterations (FISTA) or sweeps (coordinate descent) per column.
    tol : float, default 1e-4
        Stop a column when ``||a_new - a||_2 <= tol * ||a_new||_2`` between two
        iterations (or over a sweep). Each column stops on its own, so its code does
        not depend on which other columns share its chunk.
    init : array of shape (k, n_columns), optional
        Warm start. A column is never returned with an objective worse than its
        warm start.
    backend : {"numpy", "torch", "auto"}, default "numpy"
    device : str, optional
        torch device (``"cuda"``, ``"cpu"``); ignored by numpy.
    chunk_size : int, optional
        Columns per chunk; by default a chunk of ``X`` takes about 8 MiB (coordinate
        descent) or one chunk's working set about 256 MiB (FISTA).
    dtype : {"float32", "float64"}, default "float32"
        Precision of the computation and of the result.
    solver : {"auto", "cd", "fista"}, default "auto"
        Coordinate descent ("cd", numpy only) or FISTA; "auto": "cd" on numpy,
        "fista" on torch.
    progress : callable, optional
        ``progress("sparse codes", done_chunks, n_chunks)``.
    cancel : object with ``is_set()``, optional
        Checked between chunks (and every 25 iterations).

    Returns
    -------
    A : ndarray of shape (k, n_columns)
        The codes, as a numpy array of ``dtype`` (the transpose of a C-ordered
        (n_columns, k) array: each column's code is contiguous).

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
    solver = _resolve_solver(be, solver)
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
        chunk_size = _default_chunk(n_volumes, k, np.dtype(dtype).itemsize, solver, n_cols)
    chunk_size = _check_positive_int("chunk_size", chunk_size)
    Db = be.asarray(D)
    if not np.isfinite(be.to_numpy(Db)).all():
        raise ValueError("'D' must contain only finite values; NaN or inf was found.")
    with contextlib.ExitStack() as stack:
        if be.name == "torch":
            import torch

            stack.enter_context(torch.inference_mode())
        workers = stack.enter_context(_workers(be, solver))
        A = _zeros(be, (n_cols, k))
        if init is not None:
            A[...] = be.asarray(init).T
        _code_pass(be, X, Db, A, lam, solver=solver, positive=positive, max_iter=max_iter, tol=tol,
                   chunk_size=chunk_size, workers=workers, warm=init is not None, progress=progress,
                   cancel=cancel)
        # solved one column per row: returned as a (k, n_columns) view
        return np.asarray(be.to_numpy(A), dtype=dtype).T


# --------------------------------------------------------------------------- objective


def _column_blocks(n_cols: int, n_rows: int, budget: int = 64 * 2**20):
    step = max(1, budget // max(1, 8 * n_rows))
    for start in range(0, n_cols, step):
        yield slice(start, min(start + step, n_cols))


def _rms_column_norm(X) -> float:
    """sqrt(mean over columns of the squared column norm), in float64, streamed."""
    n_rows, n_cols = _shape_of(X)
    if n_cols == 0:
        return 0.0
    total = 0.0
    for sl in _column_blocks(n_cols, n_rows):
        block = np.asarray(Backend().to_numpy(X[:, sl]), dtype=np.float64)
        total += float(np.einsum("ij,ij->", block, block))
    return math.sqrt(total / n_cols)


def lambda_from_alpha(X, alpha: float) -> float:
    """The absolute penalty λ for a relative one: ``λ = alpha * rms column norm of X``.

    Parameters
    ----------
    X : array of shape (n_volumes, n_ans)
    alpha : float >= 0

    Returns
    -------
    lam : float
        ``alpha * sqrt(mean_i ||x_i||^2)``; for z-scored columns this is
        ``alpha * sqrt(n_volumes)``, and an AN then uses an atom only where its
        partial correlation with the atom exceeds about ``alpha``.
    """
    X = _as_2d("X", X, "(n_volumes, n_ans)")
    return _check_nonneg_real("alpha", alpha) * _rms_column_norm(X)


def dictionary_objective(X, D, A, lam) -> float:
    """``0.5 * ||X - D A||_F^2 + lam * ||A||_1``, computed in float64 by column blocks.

    Parameters
    ----------
    X : array of shape (n_volumes, n_columns)
    D : array of shape (n_volumes, k)
    A : array of shape (k, n_columns)
    lam : float or array of shape (n_columns,)

    Returns
    -------
    float
    """
    to_np = Backend().to_numpy
    X = _as_2d("X", X, "(n_volumes, n_columns)")
    D = np.asarray(to_np(_as_2d("D", D, "(n_volumes, k)")), dtype=np.float64)
    A = _as_2d("A", A, "(k, n_columns)")
    n_volumes, n_cols = _shape_of(X)
    if D.shape[0] != n_volumes or _shape_of(A) != (D.shape[1], n_cols):
        raise ShapeError(
            f"'D' and 'A' must have shapes ({n_volumes}, k) and (k, {n_cols}); arrays of "
            f"shapes {D.shape} and {_shape_of(A)} were provided."
        )
    lam = _check_lam(lam, n_cols)
    total = 0.0
    for sl in _column_blocks(n_cols, n_volumes + D.shape[1]):
        xb = np.asarray(to_np(X[:, sl]), dtype=np.float64)
        ab = np.asarray(to_np(A[:, sl]), dtype=np.float64)
        resid = xb - D @ ab
        l1 = np.abs(ab).sum(0)
        total += 0.5 * float(np.einsum("ij,ij->", resid, resid))
        total += float(np.sum(l1 * (lam if isinstance(lam, float) else lam[sl])))
    return total


# --------------------------------------------------------------------------- atoms


def _data_pass(be: Backend, X, chunk_size: int, want_xxt: bool, workers=None):
    """One pass over ``X``: per-column ``||x_i||^2`` and, if asked, ``X X'`` (both float64).

    Raises ValueError when ``X`` holds NaN or inf.
    """
    n_volumes, n_cols = _shape_of(X)
    x_sq = np.empty(n_cols)
    xxt = np.zeros((n_volumes, n_volumes)) if want_xxt else None

    def work(sl):
        xc = _chunk(be, X, sl)
        if be.name == "numpy":
            x_sq[sl] = np.einsum("ij,ij->j", xc, xc, dtype=np.float64)
        else:
            x_sq[sl] = np.asarray(be.to_numpy((xc * xc).sum(0)), dtype=np.float64)
        if not np.isfinite(x_sq[sl]).all():
            raise ValueError("'X' must contain only finite values; NaN or inf was found.")
        return np.asarray(be.to_numpy(xc @ xc.T)) if want_xxt else None

    for _, part in (workers or _Workers(1)).map(work, n_cols, chunk_size):
        if want_xxt:
            xxt += part
    if want_xxt:
        xxt = 0.5 * (xxt + xxt.T)
    return x_sq, xxt


def _init_atoms(be, X, n_atoms: int, init, rs, xxt):
    """Initial dictionary (n_volumes, k) as float64 numpy, from ``X X'`` (``xxt``) for "svd"."""
    n_volumes, n_ans = _shape_of(X)
    if not isinstance(init, str):
        D0 = np.asarray(be.to_numpy(init), dtype=np.float64)
        if D0.shape != (n_volumes, n_atoms):
            raise ShapeError(
                f"'init' must be 'svd', 'random' or an array of shape ({n_volumes}, {n_atoms}) "
                f"(n_volumes, n_atoms); an array of shape {D0.shape} was provided."
            )
        norms = np.linalg.norm(D0, axis=0)
        if not np.all(np.isfinite(D0)) or np.any(norms == 0):
            raise ValueError("'init' must hold finite, non-zero atoms; a zero or non-finite column was found.")
        return D0 / norms
    check_choice("init", init, ("svd", "random"))
    n_filled = 0
    D0 = np.zeros((n_volumes, n_atoms))
    if init == "svd":
        # Left singular vectors from the small (n_volumes, n_volumes) covariance X X'
        # (one pass over X), never an SVD of the full (n_volumes, n_ans) matrix.
        evals, evecs = np.linalg.eigh(xxt)
        order = np.argsort(evals)[::-1]
        keep = order[evals[order] > 1e-10 * max(evals.max(initial=0.0), 1e-300)][:n_atoms]
        vecs = evecs[:, keep]
        # A singular vector's sign is arbitrary; fix it so runs are reproducible.
        flip = np.sign(vecs[np.abs(vecs).argmax(0), np.arange(vecs.shape[1])])
        D0[:, : vecs.shape[1]] = vecs * flip
        n_filled = vecs.shape[1]
    else:
        cols = rs.choice(n_ans, size=min(n_atoms, n_ans), replace=False)
        if be.name == "torch":
            import torch

            picked = X[:, torch.as_tensor(cols, device=X.device)]
        else:
            picked = X[:, cols]  # reads only these columns (X may be a memory map)
        picked = np.asarray(be.to_numpy(picked), dtype=np.float64)
        norms = np.linalg.norm(picked, axis=0)
        ok = norms > 0
        D0[:, : ok.sum()] = picked[:, ok] / norms[ok]
        n_filled = int(ok.sum())
    if n_filled < n_atoms:
        # More atoms than the data's rank (or than ANs): random unit directions.
        extra = rs.standard_normal((n_volumes, n_atoms - n_filled))
        D0[:, n_filled:] = extra / np.linalg.norm(extra, axis=0)
    return D0


def _update_atoms(be, D, XAt, AAt, A, X, res_sq, rs):
    """One block-coordinate pass over the atoms (exact minimisation on ||d_j|| <= 1).

    ``D`` (float64 numpy, (n_volumes, k)) is updated in place from ``X A'`` and
    ``A A'``. Atoms that no AN uses are re-initialised from the residuals of the
    worst-reconstructed ANs; their codes (columns of ``A``, (n_ans, k)) and
    statistics are set to zero. Returns the indices of those atoms.
    """
    k = D.shape[1]
    diag = AAt.diagonal().copy()
    unused_threshold = 1e-10 * max(float(diag.max(initial=0.0)), 1e-300)
    unused = [j for j in range(k) if diag[j] <= unused_threshold]
    used = [j for j in range(k) if diag[j] > unused_threshold]
    for j in used:
        u = D[:, j] + (XAt[:, j] - D @ AAt[:, j]) / diag[j]
        D[:, j] = u / max(float(np.linalg.norm(u)), 1.0)
    if unused:
        # Worst-reconstructed ANs first; a stable sort keeps ties (and runs) deterministic.
        order = np.argsort(-res_sq, kind="stable")
        for rank, j in enumerate(unused):
            A[:, j] = 0
            XAt[:, j] = 0.0
            AAt[j, :] = 0.0
            AAt[:, j] = 0.0
            i = int(order[rank % len(order)])
            x = np.asarray(be.to_numpy(X[:, i]), dtype=np.float64)
            r = x - D @ np.asarray(be.to_numpy(A[i]), dtype=np.float64)
            nr = float(np.linalg.norm(r))
            if not (nr > 1e-12 * max(math.sqrt(float(res_sq.max(initial=0.0))), 1e-300)):
                r = rs.standard_normal(D.shape[0])
                nr = float(np.linalg.norm(r))
            D[:, j] = r / nr
    return unused


def _rank_one_gain(c, lam, positive: bool):
    """Codes of a unit-norm atom on residual correlations ``c`` (float64) and the objective drop."""
    a = np.maximum(c - lam, 0.0) if positive else c - np.clip(c, -lam, lam)
    return a, 0.5 * float(a @ a)


def _correlations(be, X, V, D, A, j: int, chunk_size: int, workers=None):
    """``v' (x_i - D a_i + d_j a_ji)`` for every AN ``i`` and column ``v`` of ``V``: (n_ans, m) float64.

    One pass over ``X``; ``V`` (n_volumes, m) and ``D`` float64 numpy, ``A`` (n_ans, k).
    """
    n_volumes, n_ans = _shape_of(X)
    Vb = be.asarray(V)
    DtV = D.T @ V
    djV = V.T @ D[:, j]
    out = np.empty((n_ans, V.shape[1]))

    def work(sl):
        Ac = np.asarray(be.to_numpy(A[sl]), dtype=np.float64)
        out[sl] = np.asarray(be.to_numpy(_chunk(be, X, sl).T @ Vb), dtype=np.float64) - Ac @ DtV
        out[sl] += Ac[:, [j]] * djV

    for _ in (workers or _Workers(1)).map(work, n_ans, chunk_size):
        pass
    return out


def _residual_times(be, X, W, D, A, j: int, chunk_size: int, workers=None):
    """``sum_i (x_i - D a_i + d_j a_ji) w_i'`` for the columns of ``W`` (n_ans, m): (n_volumes, m).

    One pass over ``X``; float64 numpy in and out.
    """
    n_volumes, n_ans = _shape_of(X)
    XW = np.zeros((n_volumes, W.shape[1]))
    AtW = np.zeros((D.shape[1], W.shape[1]))

    def work(sl):
        return (np.asarray(be.to_numpy(_chunk(be, X, sl) @ be.asarray(W[sl])), dtype=np.float64),
                np.asarray(be.to_numpy(A[sl]), dtype=np.float64).T @ W[sl])

    for _, (xw, atw) in (workers or _Workers(1)).map(work, n_ans, chunk_size):
        XW += xw
        AtW += atw
    return XW - D @ AtW + np.outer(D[:, j], AtW[j])


def _replace_weakest_atom(be, X, D, A, lam, res_sq, xxt, XAt, AAt, l1_rows, chunk_size: int,
                          positive: bool, workers=None) -> bool:
    """Swap the least useful atom for the residual's leading direction, if that helps.

    Alternating minimisation can settle with one atom shared by two sources of
    variance and another atom barely used. With every other atom and code fixed,
    removing atom ``j`` raises the objective by
    ``sum_i a_ji d_j'r_i - a_ji^2 |d_j|^2 / 2 - lam |a_ji|`` (``r_i`` the residual
    without atom ``j``), which is ``(D'XA')_jj - (GAA')_jj + G_jj (AA')_jj / 2 -
    lam |a_j|_1`` (no pass over ``X``); a unit-norm atom ``d`` with its best codes
    lowers it by ``sum_i (|d'r_i| - lam)_+^2 / 2``: both are exact, so the swap is
    made only when it lowers the objective, and the descent stays monotone.
    Candidates: the leading eigenvector of the residual covariance
    ``(X - DA)(X - DA)'`` (from ``X X'``, ``X A'`` and ``A A'``) and the residual of
    the worst-reconstructed AN, each refined by one block-coordinate step (three
    passes over ``X`` for both candidates together).

    ``D`` is float64 numpy (n_volumes, k); ``A`` (n_ans, k) the codes; ``xxt``,
    ``XAt`` and ``AAt`` float64 numpy ``X X'``, ``X A'`` and ``A' A`` of these codes;
    ``l1_rows`` (k,) the λ-weighted L1 norm of each atom's codes.

    Returns True when an atom was replaced (``D`` and ``A`` updated in place).
    """
    gram = D.T @ D
    g = gram.diagonal()
    loss_if_removed = (np.einsum("ij,ij->j", D, XAt) - np.einsum("jl,lj->j", gram, AAt)
                       + 0.5 * g * AAt.diagonal() - l1_rows)
    j = int(np.argmin(loss_if_removed))
    i = int(np.argmax(res_sq))
    cross = XAt @ D.T
    resid_cov = xxt - cross - cross.T + D @ AAt @ D.T
    from scipy.linalg import eigh

    n = resid_cov.shape[0]
    _, top = eigh(0.5 * (resid_cov + resid_cov.T), subset_by_index=[n - 1, n - 1])
    a_i = np.asarray(be.to_numpy(A[i]), dtype=np.float64)
    worst = np.asarray(be.to_numpy(X[:, i]), dtype=np.float64) - D @ a_i + D[:, j] * a_i[j]
    cands = [d / nd for d in (top[:, 0], worst) if (nd := float(np.linalg.norm(d))) > 0]
    if not cands:
        return False
    V = np.stack(cands, 1)
    corr = _correlations(be, X, V, D, A, j, chunk_size, workers)
    found = []
    for m in range(V.shape[1]):
        a, gain = _rank_one_gain(corr[:, m], lam, positive)
        if positive and gain == 0.0:
            V[:, m] = -V[:, m]
            a, gain = _rank_one_gain(-corr[:, m], lam, positive)
        found.append((V[:, m], a, gain))
    useful = [m for m in range(len(found)) if found[m][2] > 0]
    if useful:
        # One block-coordinate step on each new atom given its codes.
        refined = _residual_times(be, X, np.stack([found[m][1] for m in useful], 1), D, A, j, chunk_size,
                                   workers)
        norms = np.linalg.norm(refined, axis=0)
        ok = [t for t in range(len(useful)) if norms[t] > 0]
        if ok:
            R = refined[:, ok] / norms[ok]
            corr_r = _correlations(be, X, R, D, A, j, chunk_size, workers)
            for col, t in enumerate(ok):
                a_ref, gain_ref = _rank_one_gain(corr_r[:, col], lam, positive)
                if gain_ref > found[useful[t]][2]:
                    found[useful[t]] = (R[:, col], a_ref, gain_ref)
    best_d, best_a, best_gain = max(found, key=lambda f: f[2])
    if not best_gain > 0 or best_gain <= loss_if_removed[j] + 1e-7 * abs(loss_if_removed).max(initial=0.0):
        return False
    D[:, j] = best_d
    A[:, j] = best_a if be.name == "numpy" else be.asarray(best_a)
    return True


def _objective_from_stats(D, XAt, AAt, l1: float, x_sq: float) -> float:
    """0.5||X - D A||^2 + λ||A||_1 from X A' (n_volumes, k), A A' (k, k) and the λ-weighted |A|."""
    fit = x_sq - 2.0 * float(np.sum(D * XAt)) + float(np.sum((D.T @ D) * AAt))
    return 0.5 * max(fit, 0.0) + l1


def learn_dictionary(X, n_atoms=64, lam=None, *, max_iter=200, tol=1e-6, init="svd",
                     random_state=None, positive_codes=False, code_max_iter=200, code_tol=1e-3,
                     replace_atoms=True, backend="numpy", device=None, dtype="float32",
                     chunk_size=None, solver="auto", progress=None, cancel=None):
    """Learn atoms ``D`` and sparse codes ``A`` with ``X ≈ D A``.

    Minimises ``0.5 * ||X - D A||_F^2 + lam * ||A||_1`` over ``D`` with unit-norm
    columns and ``A``, alternating

    1. codes: :func:`sparse_encode`'s solver on all ANs, warm-started from the
       previous codes (never worse than them);
    2. atoms: one pass of block-coordinate descent over the atoms, each the exact
       minimiser on the unit ball given the others (Mairal et al. 2010, as in
       scikit-learn's ``_update_dict``), using only ``X A'`` and ``A A'``. Atoms that
       end inside the ball are put back on the sphere with their codes scaled by the
       norm (which lowers the penalty, so the objective never rises); atoms that no AN
       uses are re-initialised from the residual of the worst-reconstructed ANs.
    3. swaps: alternating minimisation can settle with one atom covering two
       sources and another barely used. Once progress slows, the least useful atom
       is swapped for the leading direction of the residual when, with everything
       else fixed, that provably lowers the objective.

    Each iteration reads ``X`` once, chunk by chunk: ``D' X_c``, the chunk's codes, then
    ``X_c A_c'`` and ``A_c' A_c`` while the chunk is in cache. The objective and the
    swap test's cost of removing an atom are computed from these small matrices, so
    they are exact and free. Memory: ``X`` is never copied (a memory map is read in
    place), the codes take ``4 * n_ans * n_atoms`` bytes (float32) and the chunks a
    few MiB per thread.

    Parameters
    ----------
    X : array of shape (n_volumes, n_ans)
        AN responses, z-scored columns. numpy array (a ``np.memmap`` of a ``.npy``
        file is read in place) or torch tensor.
    n_atoms : int, default 64
        k, the number of atoms (the paper's 64).
    lam : float >= 0 or array of shape (n_ans,), optional
        λ exactly as in the objective. Default ``DEFAULT_ALPHA * rms column norm``
        (see :func:`lambda_from_alpha`).
    max_iter : int, default 200
        Maximum alternations.
    tol : float, default 1e-6
        Stop when the objective's relative decrease over one iteration is below ``tol``.
    init : {"svd", "random"} or array of shape (n_volumes, n_atoms), default "svd"
        "svd": the leading left singular vectors of ``X`` (deterministic; random
        directions beyond the data's rank). "random": ``n_atoms`` distinct ANs drawn
        with ``random_state``, normalised.
    random_state : int, RandomState or None
        Seeds "random" initialisation, padding and re-initialisation draws.
    positive_codes : bool, default False
        Constrain codes to be non-negative.
    code_max_iter : int, default 200
        The code solver's iteration limit for each code step (see :func:`sparse_encode`).
    code_tol : float, default 1e-3
        The code solver's tolerance inside the alternation (warm-started, so the codes
        need not be exact); the final codes are solved to ``code_tol / 10``.
    replace_atoms : bool, default True
        Once progress slows (relative decrease below 1e-2) and again when it stalls,
        try swapping the least useful atom for the residual's leading direction,
        kept only if it lowers the objective (see :func:`_replace_weakest_atom`);
        the fit has converged when the objective stalls and no swap helps.
    backend : {"numpy", "torch", "auto"}, default "numpy"
    device : str, optional
        torch device. ``X`` is moved to it once (n_volumes * n_ans * 4 bytes).
    dtype : {"float32", "float64"}, default "float32"
    chunk_size : int, optional
        ANs per chunk in the code step.
    solver : {"auto", "cd", "fista"}, default "auto"
        The code solver (see :func:`sparse_encode`).
    progress : callable, optional
        ``progress("dictionary", iteration, max_iter)``.
    cancel : object with ``is_set()``, optional

    Returns
    -------
    D : ndarray of shape (n_volumes, n_atoms)
        Atoms (unit-norm time courses).
    A : ndarray of shape (n_atoms, n_ans)
        Codes of the final ``D``, equal to ``sparse_encode(X, D, lam,
        max_iter=code_max_iter, tol=code_tol / 10)``.
    info : dict
        ``objective`` (list, after each iteration), ``final_objective`` (after the
        final code refit), ``n_iter``, ``converged``, ``lam``, ``n_reinit`` (list,
        atoms re-initialised per iteration), ``n_replaced`` (atom swaps),
        ``solver`` (the code solver used), ``time_s``.
    """
    t0 = time.perf_counter()
    dtype = _dtype_for(dtype)
    be = get_backend(backend, device, dtype)
    solver = _resolve_solver(be, solver)
    X = _as_2d("X", X, "(n_volumes, n_ans)")
    n_volumes, n_ans = _shape_of(X)
    if n_volumes < 1 or n_ans < 1:
        raise ShapeError(f"'X' must have at least one volume and one AN; shape {(n_volumes, n_ans)} was provided.")
    n_atoms = _check_positive_int("n_atoms", n_atoms)
    max_iter = _check_positive_int("max_iter", max_iter)
    tol = _check_nonneg_real("tol", tol)
    code_max_iter = _check_positive_int("code_max_iter", code_max_iter)
    code_tol = _check_nonneg_real("code_tol", code_tol)
    if chunk_size is None:
        chunk_size = _default_chunk(n_volumes, n_atoms, np.dtype(dtype).itemsize, solver, n_ans)
    chunk_size = _check_positive_int("chunk_size", chunk_size)
    rs = _check_random_state(random_state)

    with contextlib.ExitStack() as stack:
        if be.name == "torch":
            import torch

            stack.enter_context(torch.inference_mode())
        workers = stack.enter_context(_workers(be, solver))
        # numpy: X stays where it is (array or memory map) and is read chunk by chunk;
        # torch: X is moved to the device once.
        Xb = be.asarray(X) if be.name == "torch" else X
        x_sq_cols, xxt = _data_pass(be, Xb, chunk_size, isinstance(init, str) and init == "svd", workers)
        x_sq = float(x_sq_cols.sum())
        lam = DEFAULT_ALPHA * math.sqrt(x_sq / n_ans) if lam is None else _check_lam(lam, n_ans)
        D = _init_atoms(be, Xb, n_atoms, init, rs, xxt)
        A = _zeros(be, (n_ans, n_atoms))
        objective, n_reinit = [], []
        converged = False
        n_iter = 0
        code_kw = dict(solver=solver, positive=positive_codes, max_iter=code_max_iter, tol=code_tol,
                       chunk_size=chunk_size, workers=workers, cancel=cancel)
        n_replaced = 0
        next_swap_try = 1
        for n_iter in range(1, max_iter + 1):
            check_cancel(cancel)
            st = _code_pass(be, Xb, be.asarray(D), A, lam, warm=n_iter > 1, x_sq=x_sq_cols, stats=True,
                            **code_kw)
            XAt, AAt, l1_rows, res_sq = st["XAt"], st["AAt"], st["l1_rows"], st["res_sq"]
            unused = _update_atoms(be, D, XAt, AAt, A, Xb, res_sq, rs)
            if unused:
                l1_rows[unused] = 0.0
            norms = np.linalg.norm(D, axis=0)
            scale = np.where((norms > 0) & (norms < 1.0), norms, 1.0)
            if np.any(scale != 1.0):
                D /= scale
                A *= scale[None, :] if be.name == "numpy" else be.asarray(scale)[None, :]
                XAt *= scale
                AAt *= np.outer(scale, scale)
                l1_rows *= scale
            f = _objective_from_stats(D, XAt, AAt, float(l1_rows.sum()), x_sq)
            objective.append(f)
            n_reinit.append(len(unused))
            report(progress, "dictionary", n_iter, max_iter)
            decrease = abs(objective[-2] - f) / max(abs(f), 1e-300) if n_iter > 1 else np.inf
            stalled = decrease <= tol
            # A swap is tried once progress slows (not only at the final stall), so the
            # iterations spent creeping towards a poor local minimum are saved; after a
            # rejected try, the next waits for the final stall.
            slowing = decrease <= max(_SWAP_BELOW, tol) and n_iter >= next_swap_try
            if (stalled or slowing) and not unused:
                if replace_atoms and xxt is None:
                    xxt = _data_pass(be, Xb, chunk_size, True, workers)[1]
                if replace_atoms and _replace_weakest_atom(be, Xb, D, A, lam, res_sq, xxt, XAt, AAt, l1_rows,
                                                           chunk_size, positive_codes, workers):
                    n_replaced += 1
                    next_swap_try = n_iter + 1
                    continue
                next_swap_try = max_iter + 1
                if not stalled:
                    continue
                converged = True
                break
        code_kw["tol"] = code_tol / 10.0
        # The final codes start from zero, exactly as sparse_encode (and so the
        # estimator's transform) computes them: when the lasso has several solutions
        # (more atoms than volumes), a warm start could land on another one.
        D_out = D.astype(dtype)
        st = _code_pass(be, Xb, be.asarray(D_out), A, lam, warm=False, x_sq=x_sq_cols, stats=True,
                        stage="sparse codes", **code_kw)
        final = _objective_from_stats(D_out.astype(np.float64), st["XAt"], st["AAt"], float(st["l1_rows"].sum()),
                                      x_sq)
        report(progress, "dictionary", max_iter, max_iter)
        info = {
            "objective": objective,
            "final_objective": final,
            "n_iter": n_iter,
            "converged": converged,
            "lam": lam,
            "n_reinit": n_reinit,
            "n_replaced": n_replaced,
            "solver": solver,
            "time_s": time.perf_counter() - t0,
        }
        # The codes are computed one AN per row; A is returned as a (n_atoms, n_ans) view.
        A_out = np.asarray(be.to_numpy(A), dtype=dtype).T
    return D_out, A_out, info


# --------------------------------------------------------------------------- estimator



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
    objective_ : ndarray of shape (n_iter_,)
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
