"""Compare models side by side: network coverage, consistency, diversity, encoding.

Every function takes one entry per model (a mapping ``model name -> data``) and
returns a DataFrame with the models side by side. Counts of atoms are given beside
every consistency or diversity value, because a mean over fewer atoms varies more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import ShapeError
from .consistency import atom_diversity, groups_from_associations, temporal_consistency


def _check_table(name: str, table: pd.DataFrame, associated: str) -> None:
    missing = {"atom", "network", associated} - set(table.columns)
    if missing:
        raise ShapeError(
            f"The association table of model {name!r} lacks columns {sorted(missing)}; "
            f"it has {list(table.columns)}."
        )


def fbn_coverage(
    tables: Mapping[str, pd.DataFrame],
    *,
    networks: Sequence[str] | None = None,
    associated: str = "associated",
) -> pd.DataFrame:
    """How many atoms of each model are associated with each network.

    Parameters
    ----------
    tables : mapping of model name to association table
        Long tables with columns ``atom``, ``network`` and boolean ``associated``
        (activated or deactivated part, one kind for all models).
    networks : sequence of str, optional
        Row order (default: networks in order of first appearance over the tables).
    associated : str
        Name of the boolean column.

    Returns
    -------
    coverage : DataFrame of int, shape (n_networks, n_models)
        Index ``network``, one column per model; 0 where a model has no atom for
        that network.
    """
    names = [] if networks is None else list(networks)
    counts = {}
    for model, table in tables.items():
        _check_table(model, table, associated)
        if networks is None:
            names.extend(n for n in pd.unique(table["network"].astype(str)) if n not in names)
        hits = table[table[associated].astype(bool)]
        counts[model] = hits.groupby(hits["network"].astype(str))["atom"].nunique()
    out = pd.DataFrame({m: c.reindex(names).fillna(0).astype(np.int64) for m, c in counts.items()},
                       index=pd.Index(names, name="network"))
    out.columns.name = "model"
    return out


def coverage_summary(
    tables: Mapping[str, pd.DataFrame], *, associated: str = "associated"
) -> pd.DataFrame:
    """Per model: networks covered and atoms with at least one association.

    Returns
    -------
    summary : DataFrame indexed by model with columns ``n_atoms_tested``,
        ``n_atoms_associated``, ``n_networks``, ``n_networks_covered`` and
        ``networks_covered`` (names joined by ``"; "``).
    """
    rows = {}
    for model, table in tables.items():
        _check_table(model, table, associated)
        hits = table[table[associated].astype(bool)]
        covered = list(pd.unique(hits["network"].astype(str)))
        rows[model] = {
            "n_atoms_tested": int(table["atom"].nunique()),
            "n_atoms_associated": int(hits["atom"].nunique()),
            "n_networks": int(table["network"].nunique()),
            "n_networks_covered": len(covered),
            "networks_covered": "; ".join(covered),
        }
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "model"
    return out


def diversity_table(atoms_by_model: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Diversity of each model's atoms (see :func:`.consistency.atom_diversity`).

    Returns
    -------
    table : DataFrame indexed by model with columns ``n_atoms``, ``n_constant``,
        ``mean_abs_correlation``, ``diversity``, ``effective_number``,
        ``effective_fraction``.
    """
    out = pd.DataFrame.from_dict(
        {m: atom_diversity(a) for m, a in atoms_by_model.items()}, orient="index"
    )
    out.index.name = "model"
    return out


def consistency_table(
    atoms_by_model: Mapping[str, np.ndarray],
    groups_by_model: Mapping[str, Mapping[str, Sequence[int]] | pd.DataFrame],
    *,
    n_null: int = 1000,
    random_state=0,
    cancel=None,
) -> pd.DataFrame:
    """Temporal consistency of each network's atoms, per model (long format).

    Parameters
    ----------
    atoms_by_model : mapping of model name to ndarray of shape (n_volumes, n_atoms)
    groups_by_model : mapping of model name to {network: atoms} or an association table
    n_null, random_state, cancel
        See :func:`.consistency.temporal_consistency`.

    Returns
    -------
    table : DataFrame with a ``model`` column followed by the columns of
        :func:`.consistency.temporal_consistency` (``n_atoms`` always present).
    """
    missing = set(atoms_by_model) ^ set(groups_by_model)
    if missing:
        raise ShapeError(
            "'atoms_by_model' and 'groups_by_model' must name the same models; "
            f"{sorted(missing)} appear in only one."
        )
    parts = []
    for model, atoms in atoms_by_model.items():
        part = temporal_consistency(atoms, groups_by_model[model], n_null=n_null,
                                    random_state=random_state, cancel=cancel)
        part.insert(0, "model", model)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def encoding_summary(
    r2_by_model: Mapping[str, object],
    *,
    mask_img=None,
    threshold: float = 0.05,
) -> pd.DataFrame:
    """Summary of each model's R² map over the voxels of the mask.

    Parameters
    ----------
    r2_by_model : mapping of model name to R²
        An ndarray of shape (n_voxels,) (already masked), (n_subjects, n_voxels)
        (summarised on the mean over subjects), or a 3D NIfTI image / path
        (masked with ``mask_img``).
    mask_img : NIfTI image or path, optional
        Required for images; must be on the same grid (nilearn checks).
    threshold : float
        Reported as ``fraction_above``: the fraction of voxels with R² above it.

    Returns
    -------
    summary : DataFrame indexed by model with columns ``n_voxels``, ``mean``,
        ``median``, ``p95``, ``max``, ``fraction_above``.
    """
    rows = {}
    for model, r2 in r2_by_model.items():
        values = _r2_values(model, r2, mask_img)
        values = values[np.isfinite(values)]
        rows[model] = {
            "n_voxels": int(values.size),
            "mean": float(values.mean()) if values.size else np.nan,
            "median": float(np.median(values)) if values.size else np.nan,
            "p95": float(np.percentile(values, 95)) if values.size else np.nan,
            "max": float(values.max()) if values.size else np.nan,
            "fraction_above": float(np.mean(values > threshold)) if values.size else np.nan,
        }
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "model"
    return out


def _r2_values(model: str, r2, mask_img) -> np.ndarray:
    if isinstance(r2, np.ndarray):
        if r2.ndim == 2:
            return r2.mean(axis=0)
        if r2.ndim == 1:
            return r2
        raise ShapeError(
            f"R² of model {model!r} must be (n_voxels,) or (n_subjects, n_voxels) when given "
            f"as an array; shape {r2.shape} was provided."
        )
    if mask_img is None:
        raise ShapeError(
            f"R² of model {model!r} is an image; give 'mask_img' to choose its voxels."
        )
    from nilearn.masking import apply_mask

    values = apply_mask(r2, mask_img)
    return np.asarray(values, dtype=float).reshape(-1) if values.ndim == 1 else values.mean(axis=0)


def compare_models(
    atoms_by_model: Mapping[str, np.ndarray],
    tables_by_model: Mapping[str, pd.DataFrame],
    *,
    r2_by_model: Mapping[str, object] | None = None,
    mask_img=None,
    n_null: int = 1000,
    random_state=0,
    associated: str = "associated",
    cancel=None,
) -> dict[str, pd.DataFrame]:
    """All side-by-side tables of METHOD §5 in one call.

    Parameters
    ----------
    atoms_by_model : mapping of model name to atoms (n_volumes, n_atoms)
    tables_by_model : mapping of model name to its association table
    r2_by_model : mapping of model name to its R² map, optional
    mask_img, n_null, random_state, associated, cancel
        Passed on.

    Returns
    -------
    tables : dict with
        ``coverage`` (networks × models, atoms associated), ``consistency`` (long:
        model, network, n_atoms, consistency, null...), and ``summary`` (one row per
        model: ``n_atoms`` of the dictionary, diversity columns,
        ``mean_consistency`` over networks with ≥ 2 atoms beside
        ``n_networks_with_consistency``, coverage columns, and with R² maps
        ``r2_median``/``r2_p95``).
    """
    coverage = fbn_coverage(tables_by_model, associated=associated)
    groups = {m: groups_from_associations(t, associated=associated) for m, t in tables_by_model.items()}
    consistency = consistency_table(atoms_by_model, groups, n_null=n_null,
                                    random_state=random_state, cancel=cancel)
    summary = diversity_table(atoms_by_model).join(coverage_summary(tables_by_model, associated=associated))
    valid = consistency.dropna(subset=["consistency"])
    agg = valid.groupby("model").agg(mean_consistency=("consistency", "mean"),
                                     n_networks_with_consistency=("consistency", "size"),
                                     mean_consistency_null=("null_mean", "mean"))
    summary = summary.join(agg)
    summary["n_networks_with_consistency"] = summary["n_networks_with_consistency"].fillna(0).astype(np.int64)
    if r2_by_model is not None:
        enc = encoding_summary(r2_by_model, mask_img=mask_img)
        summary = summary.join(enc[["median", "p95"]].rename(columns={"median": "r2_median", "p95": "r2_p95"}))
    summary.index.name = "model"
    return {"coverage": coverage, "consistency": consistency, "summary": summary}
