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


def _associated(result: ResultFolder, model: str, part: str, score: str = "overlap_rate") -> dict[int, str]:
    table = result.associations(model, part=part)
    if table is None or not len(table):
        return {}
    table = table[table["associated"].astype(bool)]
    if score not in table.columns:
        score = next((c for c in ("overlap_rate", "dice", "correlation") if c in table.columns), None)
    out: dict[int, list[str]] = {}
    order = table.sort_values(score, ascending=False) if score else table
    for row in order.itertuples(index=False):
        prefix = f"{row.atlas}:" if "atlas" in table.columns else ""
        value = f" ({getattr(row, score):.2f})" if score else ""
        out.setdefault(int(row.atom), []).append(f"{prefix}{row.network}{value}")
    return {a: "; ".join(v) for a, v in out.items()}


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
        column = f"networks_{part}"
        if column in table:
            rows[part] = table[column].fillna("").astype(str)
        else:
            rows[part] = rows["atom"].map(_associated(result, model, part)).fillna("")
    rows["best_score"] = table["best_score"].fillna(0.0).astype(float) if "best_score" in table else np.nan
    return rows
