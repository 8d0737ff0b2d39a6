"""The rows of the atom explorer's table, from a result folder's tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from ..io.results import ResultFolder

#: (column of :func:`atom_rows`, header shown in the table)
COLUMNS = (
    ("atom", "atom"),
    ("n_ans", "ANs"),
    ("main_layers", "main layers"),
    ("statistic", "statistic"),  # before the long network lists: on screen in a docked panel
    ("q", "q"),
    ("activated", "activated networks"),
    ("deactivated", "deactivated networks"),
)

#: how a number column is written (others: two decimals)
FORMATS = {"statistic": "{:+.2f}", "q": "{:.3g}"}

#: tooltip of each column's header
HEADER_TIPS = {
    "atom": "The atom's number in the dictionary (a temporal pattern shared by a group of ANs)",
    "n_ans": "Number of artificial neurons (ANs) whose sparse code uses this atom",
    "activated": "Networks the atom's positive map is associated with: network (statistic, q) — "
                 "the statistic tested, its FDR q-value; hover a cell for p and the test",
    "deactivated": "Networks the atom's negative map is associated with: network (statistic, q)",
    "main_layers": "The model layers holding most of the atom's ANs (runs of layers as first-last; "
                   "of how many layers, when the model has many)",
    "statistic": "The association statistic of the atom's strongest network test (smallest q, over "
                 "networks and both parts): positive for an activated network, negative for a "
                 "deactivated one; hover a cell for the network",
    "q": "The FDR q-value of that test (sort by it to see the atoms with links first)",
}

#: association statistic column, in order of preference (i7-inference's 'statistic' first)
SCORE_COLUMNS = ("statistic", "overlap_rate", "overlap", "dice", "correlation")


def association_score_column(table) -> str | None:
    """The column holding the tested statistic of an association table (by name)."""
    return next((c for c in SCORE_COLUMNS if c in table.columns), None)


def _associated(result: ResultFolder, model: str, part: str) -> tuple[dict[int, str], dict[int, str]]:
    """Per atom: the associated networks ``'atlas:network (stat, q)'`` and a detailed tooltip."""
    table = result.associations(model, part=part)
    if table is None or not len(table) or "associated" not in table.columns:
        return {}, {}
    table = table[table["associated"].astype(bool)]
    score = association_score_column(table)
    out: dict[int, list[str]] = {}
    tips: dict[int, list[str]] = {}
    order = table.sort_values(score, ascending=False) if score else table
    for row in order.to_dict("records"):
        prefix = f"{row['atlas']}:" if "atlas" in row else ""
        bits = []
        if score:
            bits.append(f"{float(row[score]):.2f}")
        if "q" in row:
            bits.append(f"q {float(row['q']):.3f}")
        out.setdefault(int(row["atom"]), []).append(f"{prefix}{row['network']} ({', '.join(bits)})")
        test = row.get("test", row.get("p_method", ""))
        detail = [f"{score} = {float(row[score]):.3f}" if score else "",
                  f"p = {float(row['p']):.4f}" if "p" in row else "",
                  f"q = {float(row['q']):.4f}" if "q" in row else "",
                  f"test: {test}" if test else ""]
        tips.setdefault(int(row["atom"]), []).append(f"{prefix}{row['network']}: " + ", ".join(d for d in detail if d))
    return ({a: "; ".join(v) for a, v in out.items()}, {a: "\n".join(v) for a, v in tips.items()})


def compact_layers(text: str, n_layers: int | None = None) -> str:
    """``'3,4,5,6,9,10'`` as ``'3-6, 9-10'`` (and ``' (6 of 30)'`` when ``n_layers`` is given and
    more than a few are listed): a deep model's main layers at a glance."""
    try:
        layers = sorted({int(v) for v in str(text).replace(" ", "").split(",") if v != ""})
    except ValueError:
        return str(text)
    if not layers:
        return ""
    runs, start = [], layers[0]
    for prev, cur in zip(layers, layers[1:] + [None]):
        if cur != prev + 1:
            runs.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = cur
    out = ", ".join(runs)
    if n_layers and len(layers) > 3:
        out += f" ({len(layers)} of {n_layers})"
    return out


def strongest_links(result: ResultFolder, model: str) -> pandas.DataFrame | None:
    """Per atom, its strongest network test: the smallest q over networks and both parts.

    Returns
    -------
    DataFrame indexed by atom with ``statistic`` (signed: + activated, - deactivated),
    ``q`` and ``network`` (``'atlas:network (part)'``); ``None`` without association tables.
    """
    import pandas as pd

    parts = []
    for part, sign in (("activated", 1.0), ("deactivated", -1.0)):
        table = result.associations(model, part=part)
        if table is None or not len(table) or "q" not in table.columns:
            continue
        score = association_score_column(table)
        prefix = table["atlas"].astype(str) + ":" if "atlas" in table.columns else ""
        parts.append(pd.DataFrame({
            "atom": table["atom"].astype(int),
            "statistic": sign * (table[score].astype(float) if score else np.nan),
            "magnitude": table[score].astype(float).abs() if score else 0.0,
            "q": table["q"].astype(float),
            "network": prefix + table["network"].astype(str) + f" ({part})"}))
    if not parts:
        return None
    tests = pd.concat(parts, ignore_index=True)
    tests = tests.sort_values(["atom", "q", "magnitude"], ascending=[True, True, False], kind="stable")
    return tests.groupby("atom").first()[["statistic", "q", "network"]]


def atom_rows(result: ResultFolder, model: str, n_atoms: int | None = None) -> pandas.DataFrame:
    """One row per atom: id, number of ANs, main layers, associated networks with scores.

    Parameters
    ----------
    result : ResultFolder
    model : str
    n_atoms : int, optional
        Number of atoms (rows) when the result has no atoms table.

    Returns
    -------
    DataFrame with the columns of :data:`COLUMNS` (strings empty where none).
    """
    import pandas as pd

    table = result.atoms_table(model)
    if table is None:
        if n_atoms is None:
            n_atoms = result.atom_timecourses(model).shape[1]
        table = pd.DataFrame({"atom": np.arange(n_atoms)})
    rows = pd.DataFrame({"atom": table["atom"].astype(int)})
    rows["n_ans"] = table["n_ans"].fillna(0).astype(int) if "n_ans" in table else 0
    hist = result.layer_histogram(model)
    n_layers = None if hist is None else hist.shape[1]
    rows["main_layers"] = ([compact_layers(v, n_layers) for v in table["main_layers"].fillna("").astype(str)]
                           if "main_layers" in table else "")
    for part in ("activated", "deactivated"):
        names, tips = _associated(result, model, part)
        column = f"networks_{part}"
        if names or column not in table:
            # the association tables are the authority: statistic and q of each link
            rows[part] = rows["atom"].map(names).fillna("")
        else:
            rows[part] = table[column].fillna("").astype(str)
        rows[f"{part}_tip"] = rows["atom"].map(tips).fillna("")
    strongest = strongest_links(result, model)
    if strongest is None:
        rows["statistic"], rows["q"], rows["statistic_tip"] = np.nan, np.nan, ""
    else:
        picked = strongest.reindex(rows["atom"].to_numpy())
        rows["statistic"] = picked["statistic"].to_numpy(float)
        rows["q"] = picked["q"].to_numpy(float)
        rows["statistic_tip"] = picked["network"].fillna("").to_numpy(object)
    return rows
