"""One readout per network: the atoms that jointly drive it, read as one driver and its parts.

Atoms share sources. A network driven by one source (a time course that is a mix of several
atoms) gives each of those atoms a unique coefficient in the association test, some of them
negative; read link by link, one positive drive then looks like "activated by atom 5,
deactivated by atoms 8 and 11". The readout reads the declared atoms of a network together
(METHOD §4b, "One readout per network"):

- the **driver** is the atoms' combination that best fits the network's time course (each
  subject's least-squares weights on the declared atoms, after the same drifts and
  confounds as the test; the group's weights are their mean);
- each atom's **share** of the driver is ``w_a x_a'd / d'd`` (the shares sum to 1; a
  negative share is a suppressor);
- the **main atom** has the largest share; the network is *activated* when the main atom's
  weight is positive and *deactivated* when it is negative;
- an atom whose weight has the other sign than the main atom's is a **part** of that
  driver (its counterweight), never presented as the opposite direction;
- the driver's **held-out fit**: each subject's weights learned on contiguous training
  blocks and its time course predicted on the held-out block (with a gap), r within each
  block, mean over blocks; mean over subjects with a t interval, beside the main atom alone.
"""

from __future__ import annotations

import numpy as np

from ..encoding.folds import contiguous_folds
from .association import _nuisance_basis, network_contrasts, network_time_series

__all__ = ["network_readout", "link_roles", "link_recurrence", "READOUT_COLUMNS"]

#: the columns of a readout table, one row per network with at least one declared atom
READOUT_COLUMNS = ["atlas", "network", "direction", "main_atom", "n_atoms", "atoms", "weights", "shares",
                   "r_heldout", "r_heldout_ci_low", "r_heldout_ci_high", "r_main_atom", "n_subjects"]


def _held_out_r(X: np.ndarray, y: np.ndarray, folds) -> float:
    """Mean over blocks of the within-block r of a least-squares fit learned on the rest."""
    rs = []
    for train, test in folds:
        w, *_ = np.linalg.lstsq(X[train], y[train], rcond=None)
        pred, obs = X[test] @ w, y[test]
        sd = pred.std() * obs.std()
        rs.append(float(((pred - pred.mean()) * (obs - obs.mean())).mean() / sd) if sd > 0 else 0.0)
    return float(np.mean(rs))


def _t_interval(values: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    n = values.size
    if n < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return float(values.mean() - half), float(values.mean() + half)


def _driver(X: np.ndarray, ys: list[np.ndarray], folds) -> dict:
    """The driver of one network from its declared atoms' residualised time courses ``X``
    (shared by every subject: the story is) and each subject's network series ``ys``."""
    weights = np.mean([np.linalg.lstsq(X, y, rcond=None)[0] for y in ys], axis=0)
    d = X @ weights
    dd = float(d @ d)
    shares = weights * (X.T @ d) / dd if dd > 0 else np.zeros_like(weights)
    main = int(np.argmax(shares))
    held = np.array([_held_out_r(X, y, folds) for y in ys])
    alone = np.array([_held_out_r(X[:, [main]], y, folds) for y in ys])
    lo, hi = _t_interval(held)
    return {"weights": weights, "shares": shares, "main": main, "r": float(held.mean()), "lo": lo, "hi": hi,
            "r_main": float(alone.mean()), "n_subjects": int(held.size)}


def network_readout(atoms, fmri, networks, declared, *, tr: float, network_names, atlas_names, confounds=None,
                    highpass_cutoff: float | None = 128.0, network_score: str = "mean", n_folds: int = 5,
                    gap: int = 5):
    """The readout of every network with at least one declared atom.

    Parameters
    ----------
    atoms : array of shape (n_volumes, k)
    fmri : list of arrays of shape (n_volumes, n_voxels)
        Every subject's data, as the association test read it.
    networks : array of shape (n_networks, n_voxels), bool
        The networks the test used (disjoint), in the order of ``network_names``.
    declared : dict of int -> list of int
        Network index -> the atoms declared for it (either direction).
    tr : float
    network_names, atlas_names : list of str, one per network
    confounds : array of shape (n_volumes, n_confounds), optional
    highpass_cutoff : float or None
        The drifts removed with the confounds, as in the test.
    network_score : {"mean", "contrast"}
    n_folds, gap : int
        The contiguous blocks of the held-out fit.

    Returns
    -------
    pandas.DataFrame
        :data:`READOUT_COLUMNS`; ``atoms``, ``weights`` and ``shares`` are ``;``-joined
        lists in the order of ``atoms`` (the main atom first).
    """
    import pandas as pd

    atoms = np.asarray(atoms, dtype=np.float64)
    n = atoms.shape[0]
    rows = []
    wanted = sorted(j for j, a in declared.items() if a)
    if wanted:
        Q = _nuisance_basis(n, tr, highpass_cutoff, confounds)
        Xr = atoms - Q @ (Q.T @ atoms)
        C = network_contrasts(np.asarray(networks, bool)[wanted], network_score)
        series = [network_time_series(Y, C, Q) for Y in fmri]
        folds = contiguous_folds(n, n_folds, gap)
    for col, j in enumerate(wanted if wanted else []):
        members = sorted(set(int(a) for a in declared[j]))
        fit = _driver(Xr[:, members], [s[:, col] for s in series], folds)
        order = [fit["main"]] + [i for i in np.argsort(-np.abs(fit["shares"])) if i != fit["main"]]
        rows.append({
            "atlas": atlas_names[j], "network": network_names[j],
            "direction": "activated" if fit["weights"][fit["main"]] > 0 else "deactivated",
            "main_atom": members[fit["main"]], "n_atoms": len(members),
            "atoms": ";".join(str(members[i]) for i in order),
            "weights": ";".join(f"{fit['weights'][i]:+.4f}" for i in order),
            "shares": ";".join(f"{fit['shares'][i]:.3f}" for i in order),
            "r_heldout": fit["r"], "r_heldout_ci_low": fit["lo"], "r_heldout_ci_high": fit["hi"],
            "r_main_atom": fit["r_main"], "n_subjects": fit["n_subjects"]})
    return pd.DataFrame(rows, columns=READOUT_COLUMNS)


def link_roles(table, readout):
    """Each declared link's place in its network's readout.

    Parameters
    ----------
    table : pandas.DataFrame
        Association rows (``atlas``, ``network``, ``atom``, ``direction``, ``associated``).
    readout : pandas.DataFrame
        :func:`network_readout`'s table.

    Returns
    -------
    role : list of str
        ``"main driver"``, ``"part"`` (same sign as the main atom), ``"counterweight"``
        (the other sign: a part of the network's driver, not the opposite direction), or
        ``""`` for links not declared.
    network_direction : list of str
        The direction of the network's driver ("activated" / "deactivated"; "" when not
        declared): how the link is presented.
    """
    by_network = {(r.atlas, r.network): r for r in readout.itertuples(index=False)}
    roles, directions = [], []
    for atlas, network, atom, associated in zip(table["atlas"], table["network"], table["atom"], table["associated"]):
        r = by_network.get((atlas, network))
        if not bool(associated) or r is None:
            roles.append("")
            directions.append("")
            continue
        members = [int(a) for a in str(r.atoms).split(";")]
        weights = [float(w) for w in str(r.weights).split(";")]
        w = dict(zip(members, weights))
        main_sign = np.sign(w[int(r.main_atom)])
        role = ("main driver" if int(atom) == int(r.main_atom)
                else "part" if np.sign(w.get(int(atom), 0.0)) == main_sign else "counterweight")
        roles.append(role)
        directions.append(r.direction)
    return roles, directions


def link_recurrence(table, restart_tables, threshold: float) -> np.ndarray:
    """How often each declared link recurs when the dictionary is learned again.

    Parameters
    ----------
    table : pandas.DataFrame
        Association rows (``atlas``, ``network``, ``atom``, ``direction``, ``statistic``,
        ``associated``).
    restart_tables : list of pandas.DataFrame
        The same test's observed statistics (no null draws needed) for each other start's
        atoms, matched to these atoms one to one by time course and turned to correlate
        positively with them, so ``atom`` means the same atom.
    threshold : float
        The |statistic| a link must reach: the weakest statistic declared in this run.

    Returns
    -------
    ndarray of shape (len(table),)
        The fraction of restarts in which the matched atom's statistic on the same network
        and direction has the link's sign and reaches ``threshold``; NaN for rows that
        are not declared (and without restarts).
    """
    out = np.full(len(table), np.nan)
    if not restart_tables:
        return out
    keys = ["atlas", "network", "atom", "direction"]
    others = [r.set_index(keys)["statistic"] for r in restart_tables]
    rows = table.reset_index(drop=True)
    for i, row in rows.iterrows():
        if not bool(row["associated"]):
            continue
        key = (row["atlas"], row["network"], int(row["atom"]), row["direction"])
        sign = np.sign(row["statistic"])
        hits = [float(np.sign(s[key]) == sign and abs(s[key]) >= threshold) for s in others if key in s.index]
        out[i] = float(np.mean(hits)) if hits else 0.0
    return out
