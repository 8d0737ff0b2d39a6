"""The atoms' side of dictionary learning: the first atoms, their update, the swap of the weakest.

- :func:`_init_atoms`: leading left singular vectors of ``X`` (from ``X X'``, gathered
  by :func:`_data_pass`), or ANs drawn at random; random unit directions beyond that.
- :func:`_update_atoms`: one pass of block-coordinate descent over the atoms (Mairal
  et al. 2010) from ``X A'`` and ``A A'``; unused atoms restart from a residual.
- :func:`_replace_weakest_atom`: the least useful atom swapped for the residual's
  leading direction when that provably lowers the objective.

``D`` is float64 numpy (n_volumes, k); the codes ``A`` are (n_ans, k) on the backend.
"""

from __future__ import annotations

import math

import numpy as np

from .._backend import Backend
from ..errors import ShapeError, check_choice
from ._arrays import _chunk, _shape_of
from ._threads import _Workers


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
