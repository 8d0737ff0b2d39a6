"""Coordinate descent for many small lasso problems on one Gram matrix (numba).

Each column ``i`` of a chunk solves

``min_a 0.5 a' G a - c_i' a + lam_i |a|_1``   (``a >= 0`` when ``positive``)

with ``G = D' D`` (k, k) and ``c_i = D' x_i``, which is the lasso
``0.5 ||x_i - D a||^2 + lam_i |a|_1`` up to the constant ``0.5 ||x_i||^2``.

Cyclic coordinate descent keeps ``q = c - G a`` (the atoms' correlations with the
residual), so a coordinate costs O(1) to check and O(k) only when it moves. A full
sweep is the lasso's optimality (KKT) check: a coordinate with
``|q_j + G_jj a_j| <= lam`` is zero at the optimum given the others and is not
touched. After a full sweep only the non-zero coordinates (the working set, a
handful of the k atoms for sparse codes) are swept until they settle, then a full
sweep checks again; the column stops when a sweep changes ``a`` by at most
``tol * ||a||`` (2-norms), as FISTA's rule in :mod:`._fista`. Each coordinate
step minimises the objective exactly along that coordinate, so the objective never
rises: a warm start is never made worse.

Columns are independent: the caller runs parts of a chunk in threads (the kernel
releases the GIL), and a column's result does not depend on the other columns.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _step(q, a_row, j, gjj, lam_i, positive):
    """Minimise exactly along coordinate ``j``; returns the change of ``a_j`` (float64)."""
    old = np.float64(a_row[j])
    z = q[j] + gjj * old
    if positive:
        new = (z - lam_i) / gjj if z > lam_i else 0.0
    elif z > lam_i:
        new = (z - lam_i) / gjj
    elif z < -lam_i:
        new = (z + lam_i) / gjj
    else:
        new = 0.0
    a_row[j] = new
    return np.float64(a_row[j]) - old  # the stored (possibly float32) value


@njit(cache=True, nogil=True, inline="always")
def _coord(G, q, a_row, j, gjj, lam_i, positive):
    """One coordinate step, ``q`` updated for every coordinate; returns the change."""
    d = _step(q, a_row, j, gjj, lam_i, positive)
    if d != 0.0:
        for m in range(q.shape[0]):
            q[m] -= G[j, m] * d
    return d


@njit(cache=True, nogil=True)
def cd_lasso_gram(G, C, A, lam, positive, max_sweeps, tol, x_sq, res_sq, l1, sweeps,
                  AAt, l1_rows):
    """Solve every row of ``A`` in place (and, optionally, accumulate the statistics).

    Parameters
    ----------
    G : float64 array (k, k)
        Gram matrix of the atoms.
    C : array (n, k)
        ``D' x_i`` for each column, one per row.
    A : array (n, k), same dtype as C
        Warm start (zeros for a cold start), overwritten with the codes.
    lam : float64 array (n,)
    positive : bool
    max_sweeps : int
        Sweeps (full or over the working set) per column at most.
    tol : float
    x_sq : float64 array (n,) or (0,)
        ``||x_i||^2``; when given, ``res_sq`` receives ``||x_i - D a_i||^2``.
    res_sq, l1 : float64 arrays (n,)
        Outputs: residual sum of squares (if ``x_sq`` has n entries) and ``|a_i|_1``.
    sweeps : int32 array (n,)
        Output: sweeps used per column.
    AAt : float64 array (k, k), or (0, 0)
        When given, ``+= A' A`` (codes as rows), from the non-zero codes only.
    l1_rows : float64 array (k,)
        With ``AAt``: ``+= sum_i lam_i |a_ij|``.
    """
    n, k = C.shape
    tol2 = tol * tol
    want_res = x_sq.shape[0] == n
    want_stats = AAt.shape[0] == k
    nz = np.empty(k, np.int64)
    vals = np.empty(k)
    q = np.empty(k)
    act = np.empty(k, np.int64)
    a_ws = np.empty(k)
    diag = np.empty(k)
    for j in range(k):
        diag[j] = G[j, j]
    for i in range(n):
        a = A[i]
        lam_i = lam[i]
        for j in range(k):
            q[j] = C[i, j]
        n_act = 0
        for j in range(k):
            if diag[j] <= 0.0:
                a[j] = 0.0
            aj = np.float64(a[j])
            if aj != 0.0:
                act[n_act] = j
                n_act += 1
                for m in range(k):
                    q[m] -= G[j, m] * aj
        n_sw = 0
        # A warm start's non-zero codes are swept first; a full sweep then checks.
        full = n_act == 0
        while n_sw < max_sweeps:
            if full:
                # Full sweep: the optimality (KKT) check of every coordinate.
                d2 = 0.0
                a2 = 0.0
                n_act = 0
                for j in range(k):
                    gjj = diag[j]
                    if gjj <= 0.0:
                        continue
                    if a[j] == 0.0 and q[j] <= lam_i and (positive or q[j] >= -lam_i):
                        continue  # optimality holds at zero: the code stays zero
                    d = _coord(G, q, a, j, gjj, lam_i, positive)
                    d2 += d * d
                    aj = np.float64(a[j])
                    if aj != 0.0:
                        a2 += aj * aj
                        act[n_act] = j
                        n_act += 1
                n_sw += 1
                if d2 <= tol2 * a2:
                    break
            full = True
            # Working-set sweeps until the non-zero coordinates settle; meanwhile only
            # the working set's entries of q are kept up to date, the others are
            # caught up once afterwards.
            for t in range(n_act):
                a_ws[t] = a[act[t]]
            while n_sw < max_sweeps:
                d2 = 0.0
                a2 = 0.0
                for t in range(n_act):
                    j = act[t]
                    d = _step(q, a, j, diag[j], lam_i, positive)
                    if d != 0.0:
                        for u in range(n_act):
                            q[act[u]] -= G[j, act[u]] * d
                    d2 += d * d
                    aj = np.float64(a[j])
                    a2 += aj * aj
                n_sw += 1
                if d2 <= tol2 * a2:
                    break
            for t in range(n_act):
                j = act[t]
                dj = np.float64(a[j]) - a_ws[t]
                if dj != 0.0:
                    for m in range(k):
                        q[m] -= G[j, m] * dj
                    for u in range(n_act):
                        q[act[u]] += G[j, act[u]] * dj
        sweeps[i] = n_sw
        s1 = 0.0
        ac = 0.0
        aq = 0.0
        n_nz = 0
        for j in range(k):
            aj = np.float64(a[j])
            if aj != 0.0:
                s1 += abs(aj)
                ac += aj * C[i, j]
                aq += aj * q[j]
                nz[n_nz] = j
                vals[n_nz] = aj
                n_nz += 1
        l1[i] = s1
        if want_stats and n_nz > 0:
            for u in range(n_nz):
                j = nz[u]
                aj = vals[u]
                l1_rows[j] += lam_i * abs(aj)
                for w in range(n_nz):
                    AAt[j, nz[w]] += aj * vals[w]
        if want_res:
            # ||x - D a||^2 = ||x||^2 - 2 a'c + a'G a, and G a = c - q
            r = x_sq[i] - ac - aq
            res_sq[i] = r if r > 0.0 else 0.0
