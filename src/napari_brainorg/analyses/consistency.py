"""Temporal consistency of the atoms linked to one network, and diversity of all atoms.

The paper (METHOD §5) says newer models balance the *consistency* of the atoms that
one functional brain network (FBN) recruits against the *diversity* of the atoms
overall. Two definitions are fixed here:

- **Consistency** of a set of atoms: the mean Pearson correlation between the time
  courses of every pair of atoms in the set (undefined, NaN, for fewer than two
  atoms). The number of atoms is reported beside it every time, because the mean of
  fewer correlations varies more (a reviewer's point). :func:`temporal_consistency`
  also gives a size-matched null: the consistency of random sets of atoms of the same
  size drawn from all atoms of the model, so an FBN's value is read against what any
  group of that many atoms would give.
- **Diversity** of the atoms: ``1 - mean |r|`` over all pairs of atoms (column
  ``diversity``), and the effective number of independent atoms, ``exp`` of the
  Shannon entropy of the normalised eigenvalues of the atoms' correlation matrix
  (Roy & Vetterli 2007, "effective rank"; column ``effective_number``, between 1 and
  n_atoms). Both are returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .._progress import check_cancel
from ..errors import ShapeError


def _atoms_2d(atoms) -> np.ndarray:
    atoms = np.asarray(atoms, dtype=np.float64)
    if atoms.ndim != 2:
        raise ShapeError(
            f"'atoms' must be 2D (n_volumes, n_atoms); shape {atoms.shape} was provided."
        )
    return atoms


def atom_correlations(atoms) -> np.ndarray:
    """Pearson correlation between every pair of atom time courses.

    Parameters
    ----------
    atoms : ndarray of shape (n_volumes, n_atoms)
        The dictionary D (one time course per column).

    Returns
    -------
    corr : ndarray of shape (n_atoms, n_atoms)
        NaN rows/columns for atoms whose time course is constant.
    """
    atoms = _atoms_2d(atoms)
    centred = atoms - atoms.mean(axis=0)
    norms = np.linalg.norm(centred, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = centred / np.where(norms > 0, norms, np.nan)
    corr = z.T @ z
    np.clip(corr, -1.0, 1.0, out=corr)
    return corr


def _set_consistency(corr: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """Mean off-diagonal correlation for each row of ``sets`` (n_sets, m)."""
    m = sets.shape[1]
    if m < 2:
        return np.full(sets.shape[0], np.nan)
    block = corr[sets[:, :, None], sets[:, None, :]]
    total = block.sum(axis=(1, 2)) - np.trace(block, axis1=1, axis2=2)
    return total / (m * (m - 1))


def set_consistency(atoms, members: Sequence[int]) -> float:
    """Mean pairwise correlation of the time courses of the atoms in ``members``.

    Parameters
    ----------
    atoms : ndarray of shape (n_volumes, n_atoms)
    members : sequence of int
        Atom indices (columns of ``atoms``).

    Returns
    -------
    consistency : float
        NaN when fewer than two atoms are given.
    """
    corr = atom_correlations(atoms)
    members = _check_members(members, corr.shape[0], "members")
    return float(_set_consistency(corr, members[None, :])[0])


def _check_members(members, n_atoms: int, name: str) -> np.ndarray:
    members = np.unique(np.asarray(list(members), dtype=np.int64))
    if members.size and (members.min() < 0 or members.max() >= n_atoms):
        raise ShapeError(
            f"{name!r} holds atom indices {members.tolist()}; expected indices in [0, {n_atoms - 1}]."
        )
    return members


def groups_from_associations(
    table: pd.DataFrame, *, associated: str = "associated", networks: Sequence[str] | None = None
) -> dict[str, list[int]]:
    """Network -> atoms associated with it, from an atom × network association table.

    Parameters
    ----------
    table : DataFrame
        Long table with columns ``atom``, ``network`` and a boolean ``associated``
        (the tables written by ``networks``).
    associated : str
        Name of the boolean column.
    networks : sequence of str, optional
        Networks to list (default: every network in the table, in order of
        appearance); networks with no associated atom map to ``[]``.

    Returns
    -------
    groups : dict of str to list of int
    """
    missing = {"atom", "network", associated} - set(table.columns)
    if missing:
        raise ShapeError(
            f"The association table lacks columns {sorted(missing)}; it has {list(table.columns)}."
        )
    names = list(pd.unique(table["network"])) if networks is None else list(networks)
    hits = table[table[associated].astype(bool)]
    grouped = hits.groupby("network", sort=False)["atom"].apply(lambda s: sorted(int(a) for a in s))
    return {str(n): list(grouped.get(n, [])) for n in names}


def temporal_consistency(
    atoms,
    groups: Mapping[str, Sequence[int]] | pd.DataFrame,
    *,
    n_null: int = 1000,
    random_state=0,
    cancel=None,
) -> pd.DataFrame:
    """Consistency of the atoms linked to each network, with a size-matched null.

    Parameters
    ----------
    atoms : ndarray of shape (n_volumes, n_atoms)
    groups : mapping of network name to atom indices, or an association table
        (see :func:`groups_from_associations`).
    n_null : int
        Random atom sets drawn (without replacement, from all atoms) for each set
        size; 0 skips the null.
    random_state : int, Generator or None
    cancel : cancel token, optional

    Returns
    -------
    table : DataFrame, one row per network, columns
        ``network``, ``n_atoms``, ``atoms`` (space-separated indices),
        ``consistency`` (mean pairwise r; NaN below two atoms),
        ``consistency_sd`` (SD of the pairwise r), ``null_mean``, ``null_sd``
        (consistency of random sets of ``n_atoms`` atoms), ``z``
        (``(consistency - null_mean) / null_sd``) and ``p`` (one-sided,
        ``(1 + #{null >= observed}) / (1 + n_null)``).
    """
    corr = atom_correlations(atoms)
    n_atoms = corr.shape[0]
    if isinstance(groups, pd.DataFrame):
        groups = groups_from_associations(groups)
    if n_null < 0:
        raise ValueError(f"'n_null' must be >= 0; {n_null!r} was provided.")
    rng = np.random.default_rng(random_state)
    null_cache: dict[int, np.ndarray] = {}
    rows = []
    for network, members in groups.items():
        check_cancel(cancel)
        members = _check_members(members, n_atoms, f"groups[{network!r}]")
        m = members.size
        if m >= 2:
            pair_r = corr[np.ix_(members, members)][np.triu_indices(m, k=1)]
            consistency, spread = float(np.mean(pair_r)), float(np.std(pair_r))
        else:
            consistency, spread = np.nan, np.nan
        null_mean = null_sd = z = p = np.nan
        if n_null and 2 <= m <= n_atoms:
            if m not in null_cache:
                # Random subsets as the first m columns of a random permutation per draw.
                sets = np.argsort(rng.random((n_null, n_atoms)), axis=1)[:, :m]
                null_cache[m] = _set_consistency(corr, sets)
            null = null_cache[m]
            null_mean, null_sd = float(np.nanmean(null)), float(np.nanstd(null))
            z = (consistency - null_mean) / null_sd if null_sd > 0 else np.nan
            p = float((1 + np.sum(null >= consistency - 1e-12)) / (1 + null.size))
        rows.append(
            {
                "network": str(network),
                "n_atoms": int(m),
                "atoms": " ".join(str(int(a)) for a in members),
                "consistency": consistency,
                "consistency_sd": spread,
                "null_mean": null_mean,
                "null_sd": null_sd,
                "z": z,
                "p": p,
            }
        )
    return pd.DataFrame(
        rows,
        columns=["network", "n_atoms", "atoms", "consistency", "consistency_sd",
                 "null_mean", "null_sd", "z", "p"],
    )


def consistency_null_curve(
    atoms, sizes: Sequence[int] | None = None, *, n_draws: int = 1000, random_state=0
) -> pd.DataFrame:
    """How the consistency of random atom sets varies with the set size.

    Shows the reviewer's point directly: the spread of a mean of pairwise
    correlations shrinks as the set grows.

    Parameters
    ----------
    atoms : ndarray of shape (n_volumes, n_atoms)
    sizes : sequence of int, optional
        Set sizes (default 2..min(n_atoms, 20)).
    n_draws : int
    random_state : int, Generator or None

    Returns
    -------
    curve : DataFrame with columns ``n_atoms``, ``mean``, ``sd``, ``q025``, ``q975``
    """
    corr = atom_correlations(atoms)
    n_atoms = corr.shape[0]
    if sizes is None:
        sizes = range(2, min(n_atoms, 20) + 1)
    rng = np.random.default_rng(random_state)
    rows = []
    for m in sizes:
        m = int(m)
        if not 2 <= m <= n_atoms:
            raise ValueError(f"Set sizes must lie in [2, {n_atoms}]; {m} was provided.")
        sets = np.argsort(rng.random((n_draws, n_atoms)), axis=1)[:, :m]
        values = _set_consistency(corr, sets)
        rows.append(
            {
                "n_atoms": m,
                "mean": float(np.nanmean(values)),
                "sd": float(np.nanstd(values)),
                "q025": float(np.nanquantile(values, 0.025)),
                "q975": float(np.nanquantile(values, 0.975)),
            }
        )
    return pd.DataFrame(rows, columns=["n_atoms", "mean", "sd", "q025", "q975"])


def atom_diversity(atoms) -> dict[str, float]:
    """Diversity of a dictionary's atoms, two ways.

    Parameters
    ----------
    atoms : ndarray of shape (n_volumes, n_atoms)

    Returns
    -------
    diversity : dict
        ``n_atoms``; ``mean_abs_correlation`` (mean |r| over all pairs);
        ``diversity`` = 1 - mean_abs_correlation (1: uncorrelated atoms, 0: all
        identical up to sign); ``effective_number`` = exp(H(λ / Σλ)) with λ the
        eigenvalues of the correlation matrix (1 when all atoms are one time course,
        n_atoms when they are orthogonal); ``effective_fraction`` =
        effective_number / n_atoms. Constant atoms are left out (``n_constant``).
    """
    corr = atom_correlations(atoms)
    constant = np.isnan(np.diag(corr))
    corr = corr[np.ix_(~constant, ~constant)]
    k = corr.shape[0]
    if k >= 2:
        mean_abs = float(np.mean(np.abs(corr[np.triu_indices(k, k=1)])))
    else:
        mean_abs = np.nan
    if k >= 1:
        eig = np.clip(np.linalg.eigvalsh(corr), 0.0, None)
        p = eig / eig.sum()
        entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
        effective = float(np.exp(entropy))
    else:
        effective = np.nan
    return {
        "n_atoms": int(k),
        "n_constant": int(constant.sum()),
        "mean_abs_correlation": mean_abs,
        "diversity": 1.0 - mean_abs if k >= 2 else np.nan,
        "effective_number": effective,
        "effective_fraction": effective / k if k else np.nan,
    }
