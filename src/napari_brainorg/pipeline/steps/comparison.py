"""Steps that set models side by side (METHOD section 5 and the baselines).

Reads
    every model's atoms, tables and group scores (in memory, as the run has them), and
    each model's ``encoding/<model>/regions.tsv`` for region data.
Writes
    ``comparison/*.tsv`` and ``figures/models_comparison.png`` (coverage, consistency,
    diversity); ``comparison/baselines.tsv`` (each model against each baseline);
    each model's ``regions.tsv`` gains the baselines' r, with ``figures/<model>_regions.png``.
Key
    none: rebuilt on every run from the steps' outputs.
"""

from __future__ import annotations

import json

import numpy as np

from ..context import StepContext


def compare_models(ctx: StepContext, per_model: dict) -> None:
    """METHOD section 5 side by side: FBN coverage, temporal consistency of the atoms linked
    to one network (with the number of atoms and a size-matched null), diversity, R2."""
    from ...analyses import figures as figs
    from ...analyses.comparison import compare_models

    if not all(res["tables"] for res in per_model.values()):
        return
    atoms = {slug: res["atoms"] for slug, res in per_model.items()}
    tables = {}
    for slug, res in per_model.items():
        t = res["tables"]["activated"].copy()
        t["network"] = t["atlas"].astype(str) + ":" + t["network"].astype(str)
        tables[slug] = t
    r2 = {slug: res["group"].get("r2_cv", res["group"].get("r2_sparse")) for slug, res in per_model.items()}
    out = compare_models(atoms, tables, r2_by_model=r2, n_null=500, random_state=ctx.config.seed,
                         cancel=ctx.cancel)
    for name, table in out.items():
        ctx.writer.write_table(f"comparison/{name}.tsv", table.reset_index())
    ctx.writer.write_figure("figures/models_comparison.png",
                            figs.model_comparison_figure(out["coverage"], out["summary"]))
    ctx.summary["comparison"] = json.loads(out["summary"].to_json(orient="index"))


#: the comparisons of a model with a baseline: (metric, how a subject's value is read from the group arrays)
_METRICS = (
    ("median r_cv above chance", "subject_chance_atoms"),
    ("median r_cv", "subject_r_cv"),
    ("median r2_sparse", "subject_r2_sparse"),
)


def _subject_values(group: dict, key: str) -> np.ndarray:
    """Each subject's value of a comparison metric: the median over voxels of a subject map,
    or (chance arrays) the observed median minus its chance level."""
    if key.startswith("subject_chance_"):
        values = np.asarray(group[key], np.float64)
        return values[:, 0] - values[:, 1]
    return np.median(group[key], axis=1).astype(np.float64)


def compare_baselines(ctx: StepContext, models: dict, baselines: dict) -> None:
    """Each model against each baseline through the same tests: per-subject median
    held-out r of the model minus the baseline's, each first minus its own chance level
    (circular shifts of that feature set, alpha chosen again: a richer feature set has a
    higher chance r), then without that correction and on the paper's in-sample R2; a
    one-sided sign-flip p over subjects with a t interval; association counts side by side.
    -> comparison/baselines.tsv and summary.json["baseline_comparison"]."""
    import itertools

    import pandas as pd

    from ...encoding.stats import sign_flip_p
    from ..study import subject_ci

    rows = []
    for (m, res), (b, base) in itertools.product(models.items(), baselines.items()):
        for metric, key in _METRICS:
            if key not in res["group"] or key not in base["group"]:
                continue
            mv = _subject_values(res["group"], key)
            bv = _subject_values(base["group"], key)
            diff = mv - bv
            p, test = sign_flip_p(diff, random_state=ctx.config.seed)
            _, lo, hi = subject_ci(diff[:, None])
            rows.append({"model": m, "baseline": b, "baseline_kind": base.get("baseline"), "metric": metric,
                         "chance_corrected": key.startswith("subject_chance_"),
                         "model_value": float(mv.mean()), "baseline_value": float(bv.mean()),
                         "difference": float(diff.mean()), "ci_low": float(lo[0]), "ci_high": float(hi[0]),
                         "p": p, "n_subjects": int(diff.size), "test": test,
                         "model_associations": int(sum(t["associated"].astype(bool).sum()
                                                       for t in res["tables"].values())) if res["tables"] else None,
                         "baseline_associations": int(sum(t["associated"].astype(bool).sum()
                                                          for t in base["tables"].values())) if base["tables"] else None})
    if not rows:
        return
    table = pd.DataFrame(rows)
    ctx.writer.write_table("comparison/baselines.tsv", table)
    ctx.summary["baseline_comparison"] = [
        {**r, "reads": f"{r['model']} vs {r['baseline']} on {r['metric']}: {r['model_value']:.4f} vs "
                       f"{r['baseline_value']:.4f}, the model ahead by {r['difference']:+.4f} "
                       f"(p = {r['p']:.3g}, {r['test']}, {r['n_subjects']} subjects)"} for r in rows]


def region_results(ctx: StepContext, data, per_model: dict, baselines: dict) -> None:
    """Parcellated data: each model's regions.tsv gains the baselines' r per region; a
    figure of r with its CI over subjects, the noise ceiling and the baselines; the best
    regions in summary.json."""
    import pandas as pd

    from ...analyses.figures import region_results_figure

    if data.kind != "regions":
        return
    out = {}
    for slug, res in per_model.items():
        path = ctx.out / f"encoding/{slug}/regions.tsv"
        if res.get("baseline") or not path.exists():
            continue
        table = pd.read_csv(path, sep="\t", dtype={"region": str})
        for b, base in baselines.items():
            if "r_cv" in base["group"]:
                table[f"r_cv_{b}"] = base["group"]["r_cv"]
        ctx.writer.write_table(f"encoding/{slug}/regions.tsv", table)
        if "r_cv" in table:
            ctx.writer.write_figure(f"figures/{slug}_regions.png", region_results_figure(table, title=slug))
            cols = [c for c in ("region", "r_cv", "r_cv_ci_low", "r_cv_ci_high", "r2_cv", "q_cv", "r2_sparse",
                                "r2_sparse_null_p95", "r2_sparse_q", "noise_ceiling",
                                *[f"r_cv_{b}" for b in baselines]) if c in table]
            top = table.sort_values("r_cv", ascending=False).head(10)[cols]
            out[slug] = json.loads(top.to_json(orient="records"))
    if out:
        ctx.summary["regions"] = out
