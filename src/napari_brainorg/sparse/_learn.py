"""Dictionary learning: :func:`learn_dictionary`, codes and atoms in alternation.

One alternation reads ``X`` once, chunk by chunk (:func:`._encode._code_pass`): the
codes of every AN, warm-started, then the sufficient statistics ``X A'`` and ``A A'``
that the atom update (:mod:`._atom_steps`) and the objective need. The fit stops
when the objective stalls and no atom swap lowers it; the final codes are then
solved from zero, as :func:`~napari_brainorg.sparse.dictionary.sparse_encode` would.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .._backend import get_backend
from .._progress import check_cancel, report
from ..errors import ShapeError
from ._arrays import (
    _as_2d,
    _check_lam,
    _check_nonneg_real,
    _check_positive_int,
    _check_random_state,
    _dtype_for,
    _shape_of,
    _zeros,
)
from ._atom_steps import _data_pass, _init_atoms, _replace_weakest_atom, _update_atoms
from ._encode import _code_pass, _default_chunk, _resolve_solver
from ._objective import DEFAULT_ALPHA, _objective_from_stats
from ._threads import _workers

# Relative decrease of the objective per iteration below which an atom swap is tried
# (see learn_dictionary): early enough to skip the slow approach to a poor local
# minimum; a swap is kept only when it lowers the objective.
_SWAP_BELOW = 1e-2


@dataclass
class _Alternation:
    """Where the alternation of codes and atoms stands (what ``info`` reports of it)."""

    objective: list = field(default_factory=list)  # after each iteration
    n_reinit: list = field(default_factory=list)   # atoms re-initialised per iteration
    n_iter: int = 0
    converged: bool = False
    n_replaced: int = 0
    next_swap_try: int = 1                          # first iteration at which a slowing fit tries a swap
    xxt: np.ndarray | None = None                   # X X' (n_volumes, n_volumes), once a swap needs it


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
        x_sq_cols, x_sq, xxt, lam, D, A = _initialise(be, Xb, n_atoms, lam, init, rs, chunk_size, workers)
        code_kw = dict(solver=solver, positive=positive_codes, max_iter=code_max_iter, tol=code_tol,
                       chunk_size=chunk_size, workers=workers, cancel=cancel)
        run = _alternate(be, Xb, D, A, lam, x_sq_cols, x_sq, rs, xxt, max_iter=max_iter, tol=tol,
                         replace_atoms=replace_atoms, code_kw=code_kw, progress=progress)
        D_out, final = _final_codes(be, Xb, D, A, lam, x_sq_cols, x_sq, dtype, dict(code_kw, tol=code_tol / 10.0))
        report(progress, "dictionary", max_iter, max_iter)
        info = {
            "objective": run.objective,
            "final_objective": final,
            "n_iter": run.n_iter,
            "converged": run.converged,
            "lam": lam,
            "n_reinit": run.n_reinit,
            "n_replaced": run.n_replaced,
            "solver": solver,
            "time_s": time.perf_counter() - t0,
        }
        # The codes are computed one AN per row; A is returned as a (n_atoms, n_ans) view.
        A_out = np.asarray(be.to_numpy(A), dtype=dtype).T
    return D_out, A_out, info


def _initialise(be, Xb, n_atoms: int, lam, init, rs, chunk_size: int, workers):
    """The first atoms and zero codes, after one pass over ``X`` for the columns' norms and λ.

    Parameters
    ----------
    Xb : array of shape (n_volumes, n_ans)
        The data on the backend (numpy: as given, possibly a memory map).
    lam : float, array of shape (n_ans,) or None
        None: ``DEFAULT_ALPHA`` times the rms column norm of ``X``.
    init : {"svd", "random"} or array of shape (n_volumes, n_atoms)
        "svd" also computes ``X X'`` in the same pass.

    Returns
    -------
    x_sq_cols : float64 ndarray of shape (n_ans,)
        ``||x_i||^2``.
    x_sq : float
        Their sum.
    xxt : float64 ndarray of shape (n_volumes, n_volumes) or None
        ``X X'`` ("svd" only).
    lam : float or float64 ndarray of shape (n_ans,)
    D : float64 ndarray of shape (n_volumes, n_atoms)
        The first atoms (unit norm).
    A : backend array of shape (n_ans, n_atoms)
        Zero codes, one row per AN.
    """
    n_ans = _shape_of(Xb)[1]
    x_sq_cols, xxt = _data_pass(be, Xb, chunk_size, isinstance(init, str) and init == "svd", workers)
    x_sq = float(x_sq_cols.sum())
    lam = DEFAULT_ALPHA * math.sqrt(x_sq / n_ans) if lam is None else _check_lam(lam, n_ans)
    D = _init_atoms(be, Xb, n_atoms, init, rs, xxt)
    A = _zeros(be, (n_ans, n_atoms))
    return x_sq_cols, x_sq, xxt, lam, D, A


def _alternate(be, Xb, D, A, lam, x_sq_cols, x_sq: float, rs, xxt, *, max_iter: int, tol: float,
               replace_atoms: bool, code_kw: dict, progress=None) -> _Alternation:
    """Alternate codes and atoms until the stopping rule says so (``D`` and ``A`` in place).

    Parameters
    ----------
    D : float64 ndarray of shape (n_volumes, k)
        The atoms, updated in place.
    A : backend array of shape (n_ans, k)
        The codes, one row per AN, updated in place (zero: the first codes start cold).
    x_sq_cols : float64 ndarray of shape (n_ans,)
        ``||x_i||^2``; ``x_sq`` is their sum.
    xxt : float64 ndarray of shape (n_volumes, n_volumes) or None
        ``X X'`` when already computed (the "svd" start); a swap computes it otherwise.
    code_kw : dict
        The code pass's solver, limits, chunks, workers and ``cancel``.

    Returns
    -------
    _Alternation
        The objective after each iteration, the atoms re-initialised in each, the
        swaps made, the iterations run and whether the fit converged.
    """
    cancel = code_kw["cancel"]
    run = _Alternation(xxt=xxt)
    for n_iter in range(1, max_iter + 1):
        run.n_iter = n_iter
        check_cancel(cancel)
        XAt, AAt, l1_rows, res_sq, unused = _codes_then_atoms(be, Xb, D, A, lam, x_sq_cols, rs, n_iter > 1,
                                                              code_kw)
        run.objective.append(_objective_from_stats(D, XAt, AAt, float(l1_rows.sum()), x_sq))
        run.n_reinit.append(len(unused))
        report(progress, "dictionary", n_iter, max_iter)
        stalled, swap_now = _stopping_rule(run.objective, n_iter, tol, run.next_swap_try)
        if swap_now and not unused:
            if replace_atoms:
                if run.xxt is None:
                    run.xxt = _data_pass(be, Xb, code_kw["chunk_size"], True, code_kw["workers"])[1]
                if _replace_weakest_atom(be, Xb, D, A, lam, res_sq, run.xxt, XAt, AAt, l1_rows,
                                         code_kw["chunk_size"], code_kw["positive"], code_kw["workers"]):
                    run.n_replaced += 1
                    run.next_swap_try = n_iter + 1
                    continue
            run.next_swap_try = max_iter + 1
            if stalled:
                run.converged = True
                break
    return run


def _codes_then_atoms(be, Xb, D, A, lam, x_sq_cols, rs, warm: bool, code_kw: dict):
    """One iteration: the codes of every AN on ``D``, then one pass over the atoms.

    Returns
    -------
    XAt : float64 ndarray of shape (n_volumes, k)
    AAt : float64 ndarray of shape (k, k)
    l1_rows : float64 ndarray of shape (k,)
        ``X A'``, ``A A'`` and the λ-weighted L1 norm of each atom's codes, for the
        updated atoms (re-initialised atoms' entries zero, rescaled atoms' scaled).
    res_sq : float64 ndarray of shape (n_ans,)
        Each AN's squared residual with the codes of this iteration.
    unused : list of int
        The atoms that no AN used, re-initialised.
    """
    st = _code_pass(be, Xb, be.asarray(D), A, lam, warm=warm, x_sq=x_sq_cols, stats=True, **code_kw)
    XAt, AAt, l1_rows, res_sq = st["XAt"], st["AAt"], st["l1_rows"], st["res_sq"]
    unused = _update_atoms(be, D, XAt, AAt, A, Xb, res_sq, rs)
    if unused:
        l1_rows[unused] = 0.0
    _back_on_sphere(be, D, A, XAt, AAt, l1_rows)
    return XAt, AAt, l1_rows, res_sq, unused


def _back_on_sphere(be, D, A, XAt, AAt, l1_rows) -> None:
    """Put atoms that ended inside the unit ball back on the sphere, their codes scaled by the norm.

    ``D A`` is unchanged and the penalty falls, so the objective never rises.
    ``D`` (n_volumes, k), the codes ``A`` (n_ans, k) and their statistics ``XAt``
    (n_volumes, k), ``AAt`` (k, k) and ``l1_rows`` (k,) are updated in place.
    """
    norms = np.linalg.norm(D, axis=0)
    scale = np.where((norms > 0) & (norms < 1.0), norms, 1.0)
    if np.any(scale != 1.0):
        D /= scale
        A *= scale[None, :] if be.name == "numpy" else be.asarray(scale)[None, :]
        XAt *= scale
        AAt *= np.outer(scale, scale)
        l1_rows *= scale


def _stopping_rule(objective: list, n_iter: int, tol: float, next_swap_try: int) -> tuple[bool, bool]:
    """Whether the fit has stalled, and whether to try an atom swap now.

    The fit has stalled when the objective's relative decrease over the last
    iteration is at most ``tol``. A swap is tried once progress slows (relative
    decrease below ``_SWAP_BELOW``), not only at the final stall, so the iterations
    spent creeping towards a poor local minimum are saved; after a rejected try the
    caller sets ``next_swap_try`` past the end, so the next waits for the final stall.

    Returns
    -------
    stalled, swap_now : bool
    """
    f = objective[-1]
    decrease = abs(objective[-2] - f) / max(abs(f), 1e-300) if n_iter > 1 else np.inf
    stalled = decrease <= tol
    slowing = decrease <= max(_SWAP_BELOW, tol) and n_iter >= next_swap_try
    return stalled, stalled or slowing


def _final_codes(be, Xb, D, A, lam, x_sq_cols, x_sq: float, dtype: str, code_kw: dict):
    """The codes of the final atoms, solved from zero into ``A``, and their objective.

    The final codes start from zero, exactly as
    :func:`~napari_brainorg.sparse.dictionary.sparse_encode` (and so the estimator's
    ``transform``) computes them: when the lasso has several solutions (more atoms
    than volumes), a warm start could land on another one.

    Returns
    -------
    D_out : ndarray of shape (n_volumes, k), of ``dtype``
        The atoms in the output precision (the codes are solved on these).
    final : float
        The objective with these atoms and codes.
    """
    D_out = D.astype(dtype)
    st = _code_pass(be, Xb, be.asarray(D_out), A, lam, warm=False, x_sq=x_sq_cols, stats=True,
                    stage="sparse codes", **code_kw)
    final = _objective_from_stats(D_out.astype(np.float64), st["XAt"], st["AAt"], float(st["l1_rows"].sum()),
                                  x_sq)
    return D_out, final
