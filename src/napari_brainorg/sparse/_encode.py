"""Sparse codes on a fixed dictionary: :func:`sparse_encode` and the pass over ``X`` it runs.

For every column ``x`` of ``X``, ``min_a 0.5 ||x - D a||^2 + lam |a|_1`` on the Gram
matrix ``D'D``, one chunk of columns at a time, by coordinate descent (numpy; the
numba kernel of :mod:`._cd`) or by FISTA (numpy or torch; :mod:`._fista`). The same
pass over ``X`` gathers, while a chunk is in cache, what the atom update of
:func:`~napari_brainorg.sparse.dictionary.learn_dictionary` needs.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .._backend import Backend, get_backend
from .._progress import check_cancel, report
from ..errors import ShapeError, check_choice
from ._arrays import (
    _as_2d,
    _check_lam,
    _check_nonneg_real,
    _check_positive_int,
    _chunk,
    _dtype_for,
    _shape_of,
    _zeros,
)
from ._fista import _fista_chunk, _lipschitz
from ._threads import _workers

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
_CD_MIN_CHUNKS = 16  # chunks of a default split (whatever the number of threads)
_EMPTY = np.empty(0)
_EMPTY2 = np.empty((0, 0))


def _default_chunk(n_volumes: int, k: int, itemsize: int, solver: str = "fista", n_cols: int = 0) -> int:
    if solver == "cd":
        chunk = max(1, _CD_CHUNK_BYTES // ((n_volumes + 2 * k) * itemsize))
        # several chunks, so that worker threads share the work; their number does not
        # depend on the threads (sums over chunks are then the same with 1 or 8 threads)
        return min(chunk, max(_CD_MIN_PART, -(-n_cols // _CD_MIN_CHUNKS)))
    per_column = (n_volumes + 7 * k) * itemsize
    return max(1, _CHUNK_BYTES // per_column)


def _lam_row(be: Backend, lam, start: int, stop: int):
    """λ for columns ``start:stop``: a Python float, or a (1, c) array when per column."""
    if isinstance(lam, float):
        return lam
    return be.asarray(lam[start:stop].reshape(1, -1))


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
        ``||x_i||^2``; when given, ``res_sq`` is computed (needed with ``stats``).

    Returns
    -------
    dict
        ``n_iter`` (iterations or sweeps of the slowest column); with ``stats`` also
        ``XAt`` (n_volumes, k), ``AAt`` (k, k), ``l1_rows`` (k,) (λ-weighted |codes| per
        atom), all float64 numpy; with ``x_sq`` also ``res_sq`` (n_cols,) (per-column
        squared residual, from the solver's own ``D'x``: no second product).
    """
    n_volumes, n_cols = _shape_of(X)
    k = _shape_of(D)[1]
    per_col = not isinstance(lam, float)
    res_sq = np.empty(n_cols) if (stats or x_sq is not None) else None
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
                          positive, max_iter, tol, x_sq[sl] if res_sq is not None else _EMPTY,
                          res_sq[sl] if res_sq is not None else np.empty(n), np.empty(n), sweeps, AAt_c, l1_c)
            n_it = int(sweeps.max(initial=0))
            # X_c A_c' is a dense product (BLAS beats a scatter over the sparse codes)
            return n_it, ((xc @ Ac), AAt_c, l1_c) if stats else None
        else:
            n_it = _fista_chunk(be, gram, lipschitz, Cc.T, Ac, _lam_row(be, lam, sl.start, sl.stop),
                                warm=warm, positive=positive, max_iter=max_iter, tol=tol, cancel=cancel,
                                res_sq=res_sq[sl] if res_sq is not None else None,
                                x_sq=x_sq[sl] if res_sq is not None else None)
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
        out.update(XAt=XAt, AAt=0.5 * (AAt + AAt.T), l1_rows=l1_rows)
    if res_sq is not None:
        out["res_sq"] = res_sq
    return out


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
    return _sparse_encode(X, D, lam, positive=positive, max_iter=max_iter, tol=tol, init=init, backend=backend,
                          device=device, chunk_size=chunk_size, dtype=dtype, solver=solver, progress=progress,
                          cancel=cancel)[0]


def _sparse_encode(X, D, lam, *, positive, max_iter, tol, init, backend, device, chunk_size, dtype, solver,
                   progress, cancel, x_sq=None) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`sparse_encode`, and with ``x_sq`` (float64 (n_columns,), ``||x_i||²``) each
    column's squared residual ``||x_i - D a_i||²`` from the solver's own ``D'x``."""
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
        if x_sq is not None:
            x_sq = np.asarray(x_sq, dtype=np.float64)
            if x_sq.shape != (n_cols,):
                raise ShapeError(f"'x_sq' must have shape ({n_cols},); shape {x_sq.shape} was provided.")
        out = _code_pass(be, X, Db, A, lam, solver=solver, positive=positive, max_iter=max_iter, tol=tol,
                         chunk_size=chunk_size, workers=workers, warm=init is not None, x_sq=x_sq,
                         progress=progress, cancel=cancel)
        # solved one column per row: returned as a (k, n_columns) view
        return np.asarray(be.to_numpy(A), dtype=dtype).T, out.get("res_sq")
