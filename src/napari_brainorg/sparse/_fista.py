"""FISTA for the sparse codes of many columns on one Gram matrix (numpy or torch).

Each column ``b`` of ``D'X`` solves ``min_a 0.5 a' G a - b' a + lam |a|_1`` (``a >= 0``
when ``positive``) with ``G = D'D``, the lasso ``0.5 ||x - D a||^2 + lam |a|_1`` up to the
constant ``0.5 ||x||^2``, by proximal gradient steps of size ``1 / L`` (``L`` the largest
eigenvalue of ``G``) with momentum. The coordinate-descent alternative is :mod:`._cd`.
"""

from __future__ import annotations

import numpy as np

from .._backend import Backend
from .._progress import check_cancel
from ._arrays import _shape_of


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


def _copy(be: Backend, a):
    return a.copy() if be.name == "numpy" else a.clone()


def _lipschitz(be: Backend, gram) -> float:
    """Largest eigenvalue of the Gram matrix (the gradient's Lipschitz constant)."""
    g = np.asarray(be.to_numpy(gram), dtype=np.float64)
    g = 0.5 * (g + g.T)
    return float(np.linalg.eigvalsh(g)[-1]) if g.size else 0.0


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
