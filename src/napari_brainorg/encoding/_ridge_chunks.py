"""Input checks of the ridge and the chunks of voxels it runs on.

Voxels are processed in chunks, so that memory stays bounded for 200,000 voxels: on
numpy, chunks small enough for a core's cache run on as many threads as BLAS may use
(each with single-threaded BLAS); on torch, one chunk at a time, large enough to keep
a GPU busy.
"""

from __future__ import annotations

import os

import numpy as np

from .._backend import Backend, get_backend
from .._progress import check_cancel
from ..errors import ConfigError, FMRIInputError, ShapeError, check_choice
from .folds import _check_int

# Working set of one chunk of voxels: the predictions of the whole α path on one test
# fold, (n_alphas, n_test, chunk). Small enough to stay in cache on a CPU, large
# enough to keep a GPU busy.
_CHUNK_BYTES = {"numpy": 128 * 2**20, "torch": 512 * 2**20}
#: Voxels per chunk on the spectral path (numpy).
_SPECTRAL_CHUNK = 1024
#: ... and at least this many when a few hundred voxels are split in four
_SPECTRAL_MIN_CHUNK = 256


def _check_alphas(alphas) -> np.ndarray:
    a = np.atleast_1d(np.asarray(alphas, dtype=np.float64)).ravel()
    if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ConfigError(f"'alphas' must be one or more finite numbers > 0; {alphas!r} was provided.")
    return a


def _as_float_2d(name: str, a, expected: str) -> np.ndarray:
    if type(a).__module__.split(".")[0] == "torch":
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.ndim != 2:
        raise ShapeError(f"{name!r} must be an array of shape {expected}; an array of shape {a.shape} was provided.")
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    return a


def _check_XY(X, Y):
    X = _as_float_2d("X", X, "(n_volumes, n_features)")
    Y = _as_float_2d("Y", Y, "(n_volumes, n_voxels)")
    if X.shape[0] != Y.shape[0]:
        raise ShapeError(
            f"'X' and 'Y' must have the same number of volumes (rows); X has {X.shape[0]} "
            f"and Y has {Y.shape[0]}."
        )
    if not np.all(np.isfinite(X)):
        raise ShapeError(f"'X' holds {int(np.count_nonzero(~np.isfinite(X)))} NaN or infinite values.")
    return X, Y


def _check_finite_chunk(Yc: np.ndarray, start: int) -> None:
    bad = ~np.isfinite(Yc).all(0)
    if bad.any():
        cols = (np.flatnonzero(bad)[:5] + start).tolist()
        raise FMRIInputError(
            f"'Y' holds NaN or infinite values in voxel columns {cols}"
            f"{' and more' if bad.sum() > 5 else ''}; remove them (mask) before encoding."
        )


def _resolve(backend: str, device, dtype, X, Y) -> Backend:
    if dtype is None:
        dtype = "float64" if (X.dtype == np.float64 and Y.dtype == np.float64) else "float32"
    return get_backend(backend, device, dtype)


def _chunk_size(bk: Backend, chunk_size, n_alphas: int, n_test: int, n_voxels: int,
                spectral: bool = False) -> int:
    if chunk_size is not None:
        return _check_int("chunk_size", chunk_size, 1)
    if spectral:
        # the spectral path's working set is a few kB per voxel: chunks that stay in
        # each core's L2 cache (measured in benchmarks/bench_ridge.py); a few hundred
        # voxels (a chance level's summary voxels) still make several chunks, so that
        # they run on every core. The size depends on the voxels only, never on the
        # threads: the same chunks, the same numbers, on any machine
        return int(max(1, min(n_voxels, _SPECTRAL_CHUNK, max(_SPECTRAL_MIN_CHUNK, -(-n_voxels // 4)))))
    itemsize = 8 if bk.dtype == "float64" else 4
    budget = _CHUNK_BYTES["numpy" if bk.name == "numpy" or bk.device == "cpu" else "torch"]
    return int(max(256, min(n_voxels, budget // max(1, n_alphas * n_test * itemsize))))


PATHS = ("auto", "spectral", "predictions")


def _use_spectral(path: str, bk: Backend) -> bool:
    check_choice("path", path, PATHS)
    if path == "spectral" and bk.name != "numpy":
        raise ConfigError(f"'path' 'spectral' runs on the numpy backend; backend {bk.name!r} was asked for "
                          "(use path='predictions' or 'auto').")
    return bk.name == "numpy" and path != "predictions"


def _load_chunk(bk: Backend, Y: np.ndarray, start: int, step: int, centre: bool):
    """Voxels ``start:start + step`` of ``Y`` in the backend's array type, checked finite.

    ``centre``: minus each voxel's mean over all volumes (one pass, which makes every
    later projection's mean correction small; scores do not depend on it), contiguous.
    """
    block = Y[:, start:start + step]
    _check_finite_chunk(block, start)
    if not centre:
        return bk.asarray(block)
    out = np.empty(block.shape, dtype=bk.dtype)
    np.subtract(block, block.mean(0, dtype=np.float64).astype(bk.dtype), out=out, casting="unsafe")
    return out


def _chunk_threads(bk: Backend) -> int:
    """Threads that process voxel chunks: the BLAS threads allowed now (numpy only).

    Each thread then runs BLAS single-threaded: the products are small, and one
    thread per core on separate chunks beats several threads on one small product. A
    limit set outside (``threadpoolctl``, ``OMP_NUM_THREADS`` on a Dask worker) is
    respected.
    """
    if bk.name != "numpy":
        return 1
    from .._backend import blas_controller

    counts = [int(i.get("num_threads", 1)) for i in blas_controller().select(user_api="blas").info()]
    return max(1, min(max(counts, default=1), os.cpu_count() or 1))


def _map_chunks(fn, starts, n_threads: int, cancel):
    """``fn(start)`` for every chunk, results in order; on ``n_threads`` threads.

    ``cancel`` is checked between chunks; chunks not yet started are dropped when the
    caller stops early.
    """
    if n_threads <= 1 or len(starts) <= 1:
        for start in starts:
            check_cancel(cancel)
            yield fn(start)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from .._backend import blas_limit

    todo = iter(starts)
    pending: deque = deque()
    with blas_limit(1), ThreadPoolExecutor(n_threads, thread_name_prefix="brainorg-ridge") as pool:
        try:
            check_cancel(cancel)
            for start in todo:
                pending.append(pool.submit(fn, start))
                if len(pending) >= 2 * n_threads:
                    break
            while pending:
                result = pending.popleft().result()
                check_cancel(cancel)
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(pool.submit(fn, nxt))
                yield result
        finally:
            for future in pending:
                future.cancel()
