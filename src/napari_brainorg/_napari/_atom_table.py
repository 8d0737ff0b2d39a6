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
    ("activated", "activated networks"),
    ("deactivated", "deactivated networks"),
    ("best_score", "best score"),
)

#: tooltip of each column's header
HEADER_TIPS = {
    "atom": "The atom's number in the dictionary (a temporal pattern shared by a group of ANs)",
    "n_ans": "Number of artificial neurons (ANs) whose sparse code uses this atom",
    "main_layers": "The model layers holding most of the atom's ANs",
    "activated": "Networks the atom's positive map is associated with: network (statistic, q) — "
                 "the statistic tested, its FDR q-value; hover a cell for p and the test",
    "deactivated": "Networks the atom's negative map is associated with: network (statistic, q)",
    "best_score": "The largest association statistic of the atom over all networks and both signs",
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
    rows["main_layers"] = table["main_layers"].fillna("").astype(str) if "main_layers" in table else ""
    for part in ("activated", "deactivated"):
        names, tips = _associated(result, model, part)
        column = f"networks_{part}"
        if names or column not in table:
            # the association tables are the authority: statistic and q of each link
            rows[part] = rows["atom"].map(names).fillna("")
        else:
            rows[part] = table[column].fillna("").astype(str)
        rows[f"{part}_tip"] = rows["atom"].map(tips).fillna("")
    rows["best_score"] = table["best_score"].fillna(0.0).astype(float) if "best_score" in table else np.nan
    return rows
