"""Score recovered atom ↔ network links against a planted truth (simulated data).

A simulation (:mod:`napari_brainorg.simulate`) plants links "atom a drives network
n". After the pipeline runs on the simulated fMRI, the association table says which
(atom, network) pairs it declared associated. :func:`recovery_scores` counts:

- a true positive: a planted (atom, network) link whose atom's learned counterpart
  is declared associated with that network;
- a false negative: a planted link not declared (including planted atoms that have no
  learned counterpart);
- a false positive: a declared (atom, network) pair that was not planted.

Matching atoms. When the pipeline encodes with the very dictionary that planted the
signal, atom ``a`` is atom ``a`` (``atom_matching=None``). When the dictionary was
learned again (another seed, k, λ, or subsampled ANs), planted and learned atoms are
paired one-to-one by :func:`match_atoms`: the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``) maximises the summed absolute Pearson
correlation of the paired time courses, and pairs below ``min_correlation`` are left
unmatched. Dictionary atoms have an arbitrary sign: a learned atom that is the
negative of its planted atom (``sign == -1`` in the match table) turns an activation
into a deactivation, so score its links against the deactivated table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from ..errors import ShapeError
from .consistency import _atoms_2d


def match_atoms(
    planted, learned, *, min_correlation: float = 0.5
) -> tuple[dict[int, int | None], pd.DataFrame]:
    """Pair planted atoms with learned atoms by time-course correlation (Hungarian).

    Parameters
    ----------
    planted : ndarray of shape (n_volumes, n_planted)
    learned : ndarray of shape (n_volumes, n_learned)
    min_correlation : float
        Pairs whose |r| is below this stay unmatched (``None``).

    Returns
    -------
    matching : dict of int to int or None
        Planted atom -> learned atom.
    table : DataFrame
        ``planted``, ``learned`` (or -1), ``correlation`` (signed r of the pair),
        ``sign`` (+1 / -1), ``matched`` (bool); one row per planted atom.
    """
    planted = _atoms_2d(planted)
    learned = _atoms_2d(learned)
    if planted.shape[0] != learned.shape[0]:
        raise ShapeError(
            f"'planted' has {planted.shape[0]} volumes and 'learned' {learned.shape[0]}; "
            "atoms must share the same volumes."
        )

    def z(a):
        a = a - a.mean(axis=0)
        n = np.linalg.norm(a, axis=0)
        return a / np.where(n > 0, n, np.inf)

    corr = z(planted).T @ z(learned)
    rows, cols = linear_sum_assignment(-np.abs(corr))
    pair_of = dict(zip(rows.tolist(), cols.tolist()))
    records, matching = [], {}
    for p in range(planted.shape[1]):
        c = pair_of.get(p)
        r = float(corr[p, c]) if c is not None else np.nan
        ok = c is not None and abs(r) >= min_correlation
        matching[p] = int(c) if ok else None
        records.append(
            {
                "planted": p,
                "learned": int(c) if ok else -1,
                "correlation": r,
                "sign": int(np.sign(r)) if c is not None and r != 0 else 0,
                "matched": bool(ok),
            }
        )
    return matching, pd.DataFrame(records, columns=["planted", "learned", "correlation", "sign", "matched"])


def _links(truth_links: Mapping) -> set[tuple[int, str]]:
    pairs = set()
    for atom, networks in truth_links.items():
        if isinstance(networks, str):
            networks = [networks]
        for network in networks:
            pairs.add((int(atom), str(network)))
    return pairs


def recovery_scores(
    truth_links: Mapping[int, Sequence[str]],
    found: pd.DataFrame,
    atom_matching: Mapping[int, int | None] | None = None,
    *,
    associated: str = "associated",
) -> dict:
    """Precision, recall and F1 of the declared associations against planted links.

    Parameters
    ----------
    truth_links : mapping of planted atom to network names
        As in ``truth.json`` (keys may be strings of integers).
    found : DataFrame
        Columns ``atom`` (learned atom), ``network`` and boolean ``associated``; the
        rows are every pair that was tested (so the false-positive rate can be
        computed), or at least the declared ones.
    atom_matching : mapping of planted atom to learned atom (or None), optional
        Default: identity (the planting dictionary is the one that was used).
    associated : str
        Name of the boolean column in ``found``.

    Returns
    -------
    scores : dict (JSON-ready)
        ``precision`` (tp / (tp + fp); 0 when nothing was declared), ``recall``
        (tp / (tp + fn); 0 when nothing was planted), ``f1``, ``tp``, ``fp``,
        ``fn``, ``n_tested`` (rows of ``found``), ``false_positive_rate``
        (fp / tested pairs that were not planted; None when none) and ``details``
        (one dict per planted or declared link: ``planted_atom``, ``atom``,
        ``network``, ``status`` in {"tp", "fn", "fp"}).
    """
    missing = {"atom", "network", associated} - set(found.columns)
    if missing:
        raise ShapeError(
            f"'found' lacks columns {sorted(missing)}; it has {list(found.columns)}."
        )
    truth = _links(truth_links)
    if atom_matching is None:
        atom_matching = {a: a for a, _ in truth}
    matching = {int(k): (None if v is None else int(v)) for k, v in atom_matching.items()}
    inverse = {v: k for k, v in matching.items() if v is not None}

    atoms = found["atom"].to_numpy().astype(np.int64)
    networks = found["network"].astype(str).to_numpy()
    flags = found[associated].astype(bool).to_numpy()
    declared = set(zip(atoms[flags].tolist(), networks[flags].tolist()))
    tested = set(zip(atoms.tolist(), networks.tolist()))

    expected = {}
    for planted_atom, network in truth:
        expected[(planted_atom, network)] = matching.get(planted_atom)
    details = []
    tp = fn = 0
    planted_as_learned = set()
    for (planted_atom, network), learned in sorted(expected.items()):
        hit = learned is not None and (learned, network) in declared
        if learned is not None:
            planted_as_learned.add((learned, network))
        tp += hit
        fn += not hit
        details.append(
            {"planted_atom": planted_atom, "atom": -1 if learned is None else learned,
             "network": network, "status": "tp" if hit else "fn"}
        )
    false_pos = sorted(declared - planted_as_learned)
    fp = len(false_pos)
    for atom, network in false_pos:
        details.append(
            {"planted_atom": inverse.get(atom, -1), "atom": atom, "network": network, "status": "fp"}
        )
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    negatives = len(tested - planted_as_learned)
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "n_tested": int(len(tested)),
        "false_positive_rate": float(fp / negatives) if negatives else None,
        "details": details,
    }
