"""Score declared atom ↔ network links against a planted truth (simulated data).

A simulation (:mod:`napari_brainorg.simulate`) plants *sources* (time courses built
from artificial neurons, not the analysis' atoms) that activate or deactivate
networks; its ``truth.json`` lists, for every scored atlas, the networks each source
covers with its sign (``expected_links``). After the pipeline has learned its own
atoms and declared associations, :func:`recovery_scores` scores **every
declaration**, activated and deactivated, in every atlas:

1. *Matching.* Learned atoms are paired one-to-one with planted sources by
   time-course correlation (:func:`match_atoms`: Hungarian assignment on ``|r|``;
   pairs below ``min_correlation`` stay unmatched). A learned atom anticorrelated
   with its source (``sign == -1``) has its direction flipped: its "deactivated"
   declarations say the source activates.
2. *Declarations.* A declared (atom, atlas, network, direction) is a **true
   positive** only if the atom is matched to a source that is planted in that
   network of that atlas with that (sign-corrected) direction; every other
   declaration, including those of unmatched atoms, is a **false positive**.
3. *Misses.* An expected (source, atlas, network, sign) that no declaration hits is a
   **false negative** (also when the source has no matched atom).

False positives in a network that the source covers only in part (below the
simulation's ``min_share``, with the declared sign) stay false positives; they are
also counted apart (``fp_partial``) so that a reader sees how many false alarms are
partial overlaps of the templates rather than links with nothing behind them.

``precision = tp / (tp + fp)``, ``recall`` = expected links found / expected links
(several atoms matched to one source may find the same link), with the counts, the
number of tests (rows of the tables) and of declarations, overall and per atlas and
direction, and the matching itself.

**A second reading: constituents** (:func:`source_constituents`,
``recovery_scores(..., constituents=...)``). The one-to-one matching assumes a source
*is* one learned atom. A planted source that is not an atom (an AN mix, an atom of
another dictionary) is, in the learned atoms' span, a combination ``s ≈ Σ_j β_j a_j``;
a network driven by ``s`` then really carries a unique (partial) coefficient
``c · β_j`` for every atom with ``β_j ≠ 0``, which is exactly what the association test
estimates. Declaring such an atom, with the sign of ``β_j`` times the link's sign, is
a correct statement about the data, not a false alarm, yet the one-to-one score
counts it as one. The constituent score credits a declaration when its atom's
standardised partial coefficient in a source planted in that network is at least
``min_beta`` (0.2: the atom alone carries ≥ 4 % of the source's variance through its
coefficient) with the matching sign; a declaration whose atom has
``|β| < min_beta`` for every source planted there stays a false positive. Both
readings are reported (``recovery.json``: the one-to-one score at the top level,
``constituents`` beside it): the one-to-one score is the headline and the stricter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from ..errors import ShapeError
from .consistency import _atoms_2d

MIN_CORRELATION = 0.5
#: smallest |standardised partial coefficient| of an atom in a source for the constituent reading
MIN_BETA = 0.2
CRITERION = (
    "A declaration (learned atom, atlas, network, direction) is a true positive only if the atom is matched "
    "one-to-one (Hungarian assignment on |time-course correlation|, |r| >= {min_corr}) to a planted source "
    "that the simulation planted in that network of that atlas with that sign, the direction flipped when "
    "the atom is anticorrelated with its source; every other declaration (either direction, every atlas) is a "
    "false positive; an expected link no declaration hits is a false negative."
)

CONSTITUENT_CRITERION = (
    "Constituent reading: each planted source is fitted by all learned atoms together (least squares, unit-SD "
    "source and atoms, drifts removed); a declaration (atom, atlas, network, direction) is a true positive when "
    "the atom's coefficient in a source planted in that network of that atlas has |beta| >= {min_beta} and "
    "sign(beta) x the link's sign is the declared direction; every other declaration is a false positive; an "
    "expected link no such declaration hits is a false negative."
)


def match_atoms(
    planted, learned, *, min_correlation: float = MIN_CORRELATION, one_to_one: bool = True
) -> tuple[dict[int, int | None], pd.DataFrame]:
    """Pair planted sources with learned atoms by time-course correlation.

    Parameters
    ----------
    planted : ndarray of shape (n_volumes, n_planted)
    learned : ndarray of shape (n_volumes, n_learned)
    min_correlation : float
        Pairs whose |r| is below this stay unmatched (``None``).
    one_to_one : bool
        True: the Hungarian assignment on ``|r|``, one atom per source. False: every
        learned atom is matched to the source it follows most closely when that
        ``|r|`` reaches ``min_correlation``, so a source the dictionary split into
        several atoms has several (extra rows in ``table``; ``matching`` keeps the
        closest).

    Returns
    -------
    matching : dict of int to int or None
        Planted source -> learned atom.
    table : DataFrame
        ``planted``, ``learned`` (or -1), ``correlation`` (signed r of the pair),
        ``sign`` (+1 / -1), ``matched`` (bool), ``best_other`` (largest |r| of the
        source with any other learned atom); one row per planted source (and, with
        ``one_to_one=False``, one more per further atom matched to it).
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
        others = np.abs(np.delete(corr[p], c)) if c is not None else np.abs(corr[p])
        matching[p] = int(c) if ok else None
        records.append(
            {
                "planted": p,
                "learned": int(c) if ok else -1,
                "correlation": r,
                "sign": int(np.sign(r)) if c is not None and r != 0 else 0,
                "matched": bool(ok),
                "best_other": float(others.max()) if others.size else np.nan,
            }
        )
    if not one_to_one and planted.shape[1]:
        best = np.abs(corr).argmax(axis=0)  # each learned atom's closest source
        taken = {(rec["planted"], rec["learned"]) for rec in records}
        for c in range(learned.shape[1]):
            p = int(best[c])
            r = float(corr[p, c])
            if abs(r) >= min_correlation and (p, c) not in taken and matching.get(p) != c:
                if not records[p]["matched"]:  # the source's closest atom, then
                    records[p].update(learned=c, correlation=r, sign=int(np.sign(r)), matched=True)
                    matching[p] = c
                else:
                    records.append({"planted": p, "learned": c, "correlation": r, "sign": int(np.sign(r)),
                                    "matched": True, "best_other": np.nan})
    return matching, pd.DataFrame(records, columns=["planted", "learned", "correlation", "sign", "matched",
                                                    "best_other"])


def source_constituents(planted, learned, *, nuisance=None, min_beta: float = MIN_BETA) -> pd.DataFrame:
    """Each planted source as a combination of the learned atoms (standardised partial coefficients).

    Parameters
    ----------
    planted : ndarray of shape (n_volumes, n_planted)
    learned : ndarray of shape (n_volumes, n_learned)
    nuisance : ndarray of shape (n_volumes, m), optional
        Regressors removed from both first (drifts, confounds), as the association
        test removes them.
    min_beta : float
        ``constituent`` is ``|beta| >= min_beta``.

    Returns
    -------
    DataFrame
        One row per source × atom: ``planted`` (column index), ``learned``, ``beta``
        (coefficient of the unit-SD atom in the least-squares fit of the unit-SD source
        on all atoms together), ``constituent`` (bool), ``r2`` (the source's variance
        the atoms explain, repeated per row).
    """
    planted = _atoms_2d(planted).astype(np.float64)
    learned = _atoms_2d(learned).astype(np.float64)
    if planted.shape[0] != learned.shape[0]:
        raise ShapeError(f"'planted' has {planted.shape[0]} volumes and 'learned' {learned.shape[0]}; "
                         "atoms must share the same volumes.")
    basis = np.ones((planted.shape[0], 1))
    if nuisance is not None:
        basis = np.column_stack([basis, np.asarray(nuisance, np.float64).reshape(planted.shape[0], -1)])
    q, _ = np.linalg.qr(basis)

    def clean(a):
        a = a - q @ (q.T @ a)
        sd = a.std(0)
        return a / np.where(sd > 0, sd, 1.0)

    P, L = clean(planted), clean(learned)
    beta = np.linalg.lstsq(L, P, rcond=None)[0]  # (n_learned, n_planted)
    r2 = 1.0 - ((P - L @ beta) ** 2).mean(0)
    n_l, n_p = beta.shape
    out = pd.DataFrame({"planted": np.repeat(np.arange(n_p), n_l), "learned": np.tile(np.arange(n_l), n_p),
                         "beta": beta.T.ravel(), "constituent": np.abs(beta.T.ravel()) >= min_beta,
                         "r2": np.repeat(r2, n_l)})
    out.attrs["min_beta"] = float(min_beta)
    return out


def _direction_of(part: str) -> int:
    return {"activated": 1, "deactivated": -1}[part]


def declarations(tables: Mapping[str, pd.DataFrame] | pd.DataFrame, *, associated: str = "associated") -> pd.DataFrame:
    """Every test of the association tables as (atom, atlas, network, direction, declared).

    Parameters
    ----------
    tables : mapping ``{"activated": DataFrame, "deactivated": DataFrame}`` or one DataFrame
        Columns ``atom``, ``network``, the boolean ``associated``, and ``atlas``
        (default ``""``); one DataFrame needs a ``direction`` column
        (``activated``/``deactivated`` or +1/-1).

    Returns
    -------
    DataFrame with ``atom`` (int), ``atlas``, ``network``, ``direction`` (+1/-1), ``declared`` (bool)
    """
    if isinstance(tables, pd.DataFrame):
        if "direction" not in tables.columns:
            raise ShapeError("One association table needs a 'direction' column; give "
                             "{'activated': table, 'deactivated': table} otherwise.")
        parts = [(None, tables)]
    else:
        parts = list(tables.items())
    frames = []
    for part, df in parts:
        missing = {"atom", "network", associated} - set(df.columns)
        if missing:
            raise ShapeError(f"The {part or 'association'} table lacks columns {sorted(missing)}; "
                             f"it has {list(df.columns)}.")
        if part is None:
            raw = df["direction"]
            direction = raw.map(lambda d: _direction_of(d) if isinstance(d, str) else int(np.sign(d))).to_numpy()
        else:
            direction = np.full(len(df), _direction_of(part))
        frames.append(pd.DataFrame({
            "atom": df["atom"].to_numpy().astype(np.int64),
            "atlas": df["atlas"].astype(str).to_numpy() if "atlas" in df.columns else "",
            "network": df["network"].astype(str).to_numpy(),
            "direction": direction.astype(int),
            "declared": df[associated].astype(bool).to_numpy(),
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["atom", "atlas", "network", "direction", "declared"])


def direction_reading(expected_links, tables: Mapping[str, pd.DataFrame], constituents: pd.DataFrame | None = None,
                      *, min_share: float = 0.5) -> dict:
    """Whether a planted network reads as one drive in its planted direction.

    A network driven positively by one source must not be presented as "activated by
    atom 5, deactivated by atom 8" when atom 8 is a negatively weighted part of that same
    source in the atoms' span. On every planted network (a share of at least
    ``min_share`` of it in the source's mask) with declared links, this reading counts:

    - ``opposite_parts_tested`` / ``opposite_parts_presented``: declared links shown in the
      other direction than their network's main link (the main driver of the readout, or
      the link with the largest |statistic| without one), as the link tests label them
      (``direction``) and as they are presented (``network_direction``, the direction of
      the network's driver, when the tables have it);
    - ``networks_right_direction``: networks whose presented direction, read in the
      source's terms (the direction times the sign of the main atom's coefficient in the
      planted source, ``constituents``), is the planted sign.

    Parameters
    ----------
    expected_links : list of dict
        ``truth.json``'s ``expected_links`` (``source``, ``atlas``, ``network``, ``sign``,
        ``share``).
    tables : mapping ``{"activated": DataFrame, "deactivated": DataFrame}``
    constituents : DataFrame, optional
        :func:`source_constituents` (``planted`` = source id, ``learned``, ``beta``);
        without it ``networks_right_direction`` is not computed.
    min_share : float, default 0.5

    Returns
    -------
    dict
    """
    planted: dict[tuple[str, str], tuple[int, int]] = {}
    for row in expected_links:
        if float(row.get("share", 1.0)) >= min_share:
            planted[(str(row.get("atlas", "")), str(row["network"]))] = (int(row["source"]), int(np.sign(row["sign"])))
    beta = ({(int(r.planted), int(r.learned)): float(r.beta) for r in constituents.itertuples(index=False)}
            if constituents is not None else None)
    links = pd.concat([df.assign(_part=part) for part, df in tables.items()], ignore_index=True)
    links = links[links["associated"].astype(bool)]
    out = {"networks_planted": len(planted), "networks_declared": 0, "opposite_parts_tested": 0,
           "opposite_parts_presented": 0, "networks_right_direction": None if beta is None else 0,
           "min_share": min_share}
    for (atlas, network), (source, sign) in planted.items():
        here = links[(links["atlas"].astype(str) == atlas) & (links["network"].astype(str) == network)]
        if not len(here):
            continue
        out["networks_declared"] += 1
        tested = here["_part"].map(_direction_of).to_numpy()
        shown = (here["network_direction"].map(_direction_of).to_numpy() if "network_direction" in here.columns
                 else tested)
        if "role" in here.columns and (here["role"] == "main driver").any():
            main = int(np.flatnonzero((here["role"] == "main driver").to_numpy())[0])
        else:
            main = int(np.argmax(np.abs(here["statistic"].to_numpy()))) if "statistic" in here.columns else 0
        out["opposite_parts_tested"] += int(np.sum(tested != tested[main]))
        out["opposite_parts_presented"] += int(np.sum(shown != shown[main]))
        if beta is not None:
            in_source = shown[main] * np.sign(beta.get((source, int(here["atom"].iloc[main])), 0.0))
            out["networks_right_direction"] += int(in_source == sign)
    return out


def _expected(expected_links) -> set[tuple[int, str, str, int]]:
    out = set()
    for row in expected_links:
        out.add((int(row["source"]), str(row.get("atlas", "")), str(row["network"]), int(np.sign(row["sign"]))))
    return out


def _rates(tp: int, fp: int, fn: int, hits: int | None = None) -> dict:
    """``hits``: distinct expected links found (several atoms of one source may find one)."""
    hits = tp if hits is None else hits
    precision = tp / (tp + fp) if tp + fp else None
    recall = hits / (hits + fn) if hits + fn else None
    f1 = (2 * precision * recall / (precision + recall)) if precision and recall else (0.0 if tp + fp and tp + fn else None)
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def recovery_scores(
    expected_links: Sequence[Mapping],
    tables: Mapping[str, pd.DataFrame] | pd.DataFrame,
    matching: pd.DataFrame | Mapping[int, int | None] | None = None,
    *,
    associated: str = "associated",
    min_correlation: float = MIN_CORRELATION,
    partial_links: Sequence[Mapping] | None = None,
    constituents: pd.DataFrame | None = None,
) -> dict:
    """Precision and recall of every declared association against the planted truth.

    Parameters
    ----------
    expected_links : sequence of mappings
        ``source``, ``atlas``, ``network``, ``sign`` (+1 activates, -1 deactivates):
        the links a perfect analysis declares (``truth.json``'s ``expected_links``).
    tables : mapping ``{"activated": DataFrame, "deactivated": DataFrame}`` or one DataFrame
        Every test the analysis made (see :func:`declarations`).
    matching : DataFrame from :func:`match_atoms`, or mapping source -> atom, optional
        Default: source ``i`` is atom ``i`` with sign +1 (the truth was planted with
        the analysis' own atoms).
    associated : str
        Name of the boolean column in the tables.
    min_correlation : float
        The matching threshold used (stated in ``criterion``).
    partial_links : sequence of mappings, optional
        ``source``, ``atlas``, ``network``, ``sign``, ``share``: networks a source covers
        in part (``truth.json``'s ``network_shares``); false positives there are
        counted in ``fp_partial`` too.
    constituents : DataFrame from :func:`source_constituents`, optional
        With ``planted`` holding source ids. Scores the constituent reading instead of
        the one-to-one matching: a declaration is a true positive when its atom is a
        constituent of a source planted in that network whose link sign times
        ``sign(beta)`` is the declared direction; an expected link is found when any
        such declaration hits it. ``matching`` is then only reported.

    Returns
    -------
    scores : dict (JSON-ready)
        ``precision``, ``recall``, ``f1`` (None when undefined), ``tp``, ``fp``, ``fn``,
        ``n_tests``, ``n_declared``, ``n_expected``, ``fp_partial``; ``by_atlas`` and ``by_direction``
        with the same counts; ``false_positive_rate`` (fp / tests that are not
        expected links); ``matching`` (one record per source); ``details`` (one
        record per expected link or declaration: ``source``, ``atom``, ``atlas``,
        ``network``, ``direction``, ``status`` in {"tp", "fn", "fp"}); ``criterion``.
    """
    decl = declarations(tables, associated=associated)
    expected_all = _expected(expected_links)
    scored_atlases = set(decl["atlas"]) if len(decl) else set()
    expected = {e for e in expected_all if e[1] in scored_atlases} if scored_atlases else expected_all
    if matching is None:
        sources = sorted({e[0] for e in expected_all})
        match_table = pd.DataFrame({"planted": sources, "learned": sources, "correlation": 1.0,
                                    "sign": 1, "matched": True})
    elif isinstance(matching, pd.DataFrame):
        match_table = matching
    else:
        match_table = pd.DataFrame([{"planted": int(k), "learned": -1 if v is None else int(v),
                                     "correlation": np.nan, "sign": 1, "matched": v is not None}
                                    for k, v in matching.items()])
    atom_to_source = {int(r.learned): (int(r.planted), int(r.sign) or 1)
                      for r in match_table.itertuples() if bool(r.matched)}
    source_to_atom = {s: a for a, (s, _) in atom_to_source.items()}

    partial = {}
    for row in partial_links or ():
        key = (int(row["source"]), str(row.get("atlas", "")), str(row["network"]), int(np.sign(row["sign"])))
        if key not in expected_all:
            partial[key] = float(row.get("share", np.nan))
    details, hit = [], set()
    declared = decl[decl["declared"]]
    members: dict[int, list[tuple[int, int]]] = {}
    if constituents is not None:
        for r in constituents[constituents["constituent"]].itertuples(index=False):
            members.setdefault(int(r.learned), []).append((int(r.planted), int(np.sign(r.beta)) or 1))
    for row in declared.itertuples(index=False):
        src, sign = atom_to_source.get(int(row.atom), (None, 1))
        key = None if src is None else (src, row.atlas, row.network, int(row.direction) * sign)
        if constituents is not None:
            keys = [(s_, row.atlas, row.network, int(row.direction) * b) for s_, b in members.get(int(row.atom), [])]
            found = [k for k in keys if k in expected]
            key = found[0] if found else (keys[0] if keys else None)
            src, sign = (key[0], int(np.sign(key[3] * row.direction))) if key is not None else (None, 1)
        ok = key is not None and key in expected
        if ok:
            hit.add(key)
        details.append({"source": -1 if src is None else src, "atom": int(row.atom), "atlas": row.atlas,
                        "network": row.network, "direction": "activated" if row.direction > 0 else "deactivated",
                        "source_sign": None if src is None else int(row.direction) * sign,
                        "status": "tp" if ok else "fp", "partial_share": partial.get(key)})
    for src, atlas, network, sign in sorted(expected - hit):
        atom = source_to_atom.get(src)
        atom_sign = atom_to_source[atom][1] if atom is not None else 1
        details.append({"source": src, "atom": -1 if atom is None else atom, "atlas": atlas, "network": network,
                        "direction": "activated" if sign * atom_sign > 0 else "deactivated",
                        "source_sign": sign, "status": "fn", "partial_share": None})
    det = pd.DataFrame(details, columns=["source", "atom", "atlas", "network", "direction", "source_sign",
                                         "status", "partial_share"])

    def counts(mask_det, n_tests, n_decl, n_exp) -> dict:
        sub = det[mask_det]
        found = sub[sub["status"] == "tp"]
        hits = len(set(zip(found["source"], found["atlas"], found["network"], found["source_sign"])))
        out = _rates(int(len(found)), int((sub["status"] == "fp").sum()), int((sub["status"] == "fn").sum()), hits)
        out.update(n_tests=int(n_tests), n_declared=int(n_decl), n_expected=int(n_exp),
                   fp_partial=int(((sub["status"] == "fp") & sub["partial_share"].notna()).sum()))
        return out

    overall = counts(np.ones(len(det), bool), len(decl), int(decl["declared"].sum()), len(expected))
    by_atlas = {a: counts((det["atlas"] == a).to_numpy(), (decl["atlas"] == a).sum(),
                          (decl["declared"] & (decl["atlas"] == a)).sum(),
                          sum(1 for e in expected if e[1] == a))
                for a in sorted(scored_atlases)}
    by_direction = {}
    for name, d in (("activated", 1), ("deactivated", -1)):
        here = (det["direction"] == name).to_numpy()
        by_direction[name] = counts(here, (decl["direction"] == d).sum(),
                                    (decl["declared"] & (decl["direction"] == d)).sum(),
                                    int((here & (det["status"] != "fp").to_numpy()).sum()))
    negatives = len(decl) - overall["tp"] - overall["fn"]
    return {
        **overall,
        "false_positive_rate": float(overall["fp"] / negatives) if negatives > 0 else None,
        "by_atlas": by_atlas,
        "by_direction": by_direction,
        "matching": [{k: (None if isinstance(v, float) and not np.isfinite(v) else
                          (v.item() if hasattr(v, "item") else v)) for k, v in rec.items()}
                     for rec in match_table.to_dict(orient="records")],
        "details": det.astype(object).where(det.notna(), None).to_dict(orient="records"),
        "criterion": (CRITERION.format(min_corr=min_correlation) if constituents is None else
                      CONSTITUENT_CRITERION.format(min_beta=float(constituents.attrs.get("min_beta", MIN_BETA)))),
    }
