"""Worker threads of the coordinate-descent path: column chunks, each on one BLAS thread."""

from __future__ import annotations

import contextlib

from .._backend import Backend, available_cores, blas_controller as _blas_controller


def _n_threads() -> int:
    """Worker threads: the BLAS threads the caller allows (e.g. a Dask worker's 1), at most the cores."""
    cores = available_cores()
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
