"""The planted sources: time courses built from the artificial neurons, not the atoms.

:func:`an_mix_sources` mixes member ANs of chosen atoms into sources the analysis'
dictionary does not hold; :func:`random_an_mix_sources` mixes random ANs, members of no
atom in particular; :func:`distinct_sources` picks sources as uncorrelated with
one another (and with nuisance courses such as the word rate) as possible.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError


def an_mix_sources(an_responses, codes, atoms, *, n_members: int = 30, seed: int = 0):
    """Planted sources that are no dictionary atom: signed means of a few member ANs.

    For each chosen atom ``a``, ``n_members`` of its member ANs (non-zero code) are
    drawn at random and averaged, each with the sign of its code, so the source
    lives in the AN space the dictionary summarises but is not its atom.

    Parameters
    ----------
    an_responses : ndarray of shape (n_volumes, n_ans)
    codes : ndarray or sparse matrix of shape (n_atoms, n_ans)
    atoms : sequence of int
        Atoms whose members are mixed, one source each.
    n_members : int
        ANs per source (all members when an atom has fewer).
    seed : int

    Returns
    -------
    sources : ndarray of shape (n_volumes, len(atoms)), float64, columns z-scored
    info : list of dict
        Per source: ``atom``, ``n_members_available``, ``members`` (AN columns used).
    """
    import scipy.sparse as sp

    X = np.asarray(an_responses, dtype=np.float64)
    if X.ndim != 2:
        raise ShapeError(f"'an_responses' must be 2D (n_volumes, n_ans); shape {X.shape} was provided.")
    C = sp.csr_matrix(codes)
    if C.shape[1] != X.shape[1]:
        raise ShapeError(f"'codes' has {C.shape[1]} ANs; 'an_responses' has {X.shape[1]}.")
    rng = np.random.default_rng(seed)
    out, info = np.empty((X.shape[0], len(atoms))), []
    for j, a in enumerate(atoms):
        row = C.getrow(int(a))
        members, values = row.indices, row.data
        if members.size == 0:
            raise ShapeError(f"Atom {a} has no member AN; it cannot seed a planted source.")
        take = rng.choice(members.size, size=min(n_members, members.size), replace=False)
        cols, signs = members[take], np.sign(values[take])
        out[:, j] = X[:, cols] @ signs / cols.size
        info.append({"atom": int(a), "n_members_available": int(members.size),
                     "members": sorted(int(c) for c in cols)})
    return _zscore(out), info


def random_an_mix_sources(an_responses, n_sources: int, *, n_members: int = 4, seed: int = 0):
    """Planted sources that owe nothing to the dictionary: sparse mixes of random ANs.

    Each source is the sum of ``n_members`` ANs drawn at random among all of them (not
    the members of one atom), each with a random sign and a weight drawn uniformly in
    [0.5, 1]: a source the atoms can only approximate as a combination of several atoms,
    some with negative weights.

    Parameters
    ----------
    an_responses : ndarray of shape (n_volumes, n_ans)
    n_sources : int
    n_members : int, default 4
    seed : int

    Returns
    -------
    sources : ndarray of shape (n_volumes, n_sources), float64, columns z-scored
    info : list of dict
        Per source: ``members`` (AN columns) and their signed ``weights``.
    """
    X = np.asarray(an_responses, dtype=np.float64)
    if X.ndim != 2:
        raise ShapeError(f"'an_responses' must be 2D (n_volumes, n_ans); shape {X.shape} was provided.")
    if not 0 < n_members <= X.shape[1]:
        raise ShapeError(f"'n_members' must be between 1 and the number of ANs ({X.shape[1]}); "
                         f"{n_members} was provided.")
    rng = np.random.default_rng(seed)
    out, info = np.empty((X.shape[0], int(n_sources))), []
    for j in range(int(n_sources)):
        cols = np.sort(rng.choice(X.shape[1], size=n_members, replace=False))
        weights = rng.choice([-1.0, 1.0], size=n_members) * rng.uniform(0.5, 1.0, size=n_members)
        out[:, j] = X[:, cols] @ weights
        info.append({"members": [int(c) for c in cols], "weights": [round(float(w), 4) for w in weights]})
    return _zscore(out), info


def _zscore(a: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=0)
    sd = a.std(axis=0)
    return a / np.where(sd > 0, sd, 1.0)


def distinct_sources(sources, n: int, *, avoid=None) -> list[int]:
    """Greedy choice of ``n`` sources as uncorrelated with one another as possible.

    Parameters
    ----------
    sources : ndarray of shape (n_volumes, n_candidates)
    n : int
    avoid : ndarray of shape (n_volumes, m), optional
        Time courses the chosen sources should also not follow (e.g. word rate).

    Returns
    -------
    chosen : list of int, sorted
    """
    corr = np.abs(np.corrcoef(np.asarray(sources, float).T))
    np.fill_diagonal(corr, 0)
    penalty = np.zeros(corr.shape[0])
    if avoid is not None and np.size(avoid):
        z = _zscore(np.asarray(sources, float))
        w = _zscore(np.asarray(avoid, float).reshape(len(z), -1))
        penalty = np.abs(z.T @ w / len(z)).max(axis=1)
    chosen = [int(np.argmin(np.maximum(corr.max(1), penalty)))]
    while len(chosen) < min(n, corr.shape[0]):
        score = np.maximum(corr[:, chosen].max(1), penalty)
        score[chosen] = np.inf
        chosen.append(int(np.argmin(score)))
    return sorted(chosen)
