"""Steps that set models side by side (METHOD section 5 and the baselines).

Reads
    every model's atoms, tables and group scores (in memory, as the run has them), and
    each model's ``encoding/<model>/regions.csv`` for region data.
Writes
    ``comparison/*.csv`` and ``figures/models_comparison.png`` (coverage, consistency,
    diversity); ``comparison/baselines.csv`` (each model against each baseline);
    each model's ``regions.csv`` gains the baselines' r, with ``figures/<model>_regions.png``.
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
        ctx.writer.write_table(f"comparison/{name}.csv", table.reset_index())
    ctx.writer.write_figure("figures/models_comparison.png",
                            figs.model_comparison_figure(out["coverage"], out["summary"]))
    ctx.summary["comparison"] = json.loads(out["summary"].to_json(orient="index"))


def compare_baselines(ctx: StepContext, models: dict, baselines: dict) -> None:
    """Each model against each baseline through the same tests: per-subject median
    held-out r (and the paper's in-sample R2) of the model minus the baseline's, with a
    one-sided exact sign-flip p over subjects; association counts side by side.
    -> comparison/baselines.csv and summary.json["baseline_comparison"]."""
    import itertools

    import pandas as pd

    rows = []
    for (m, res), (b, base) in itertools.product(models.items(), baselines.items()):
        for metric, key in (("median r_cv", "subject_r_cv"), ("median r2_sparse", "subject_r2_sparse")):
            if key not in res["group"] or key not in base["group"]:
                continue
            mv = np.median(res["group"][key], axis=1).astype(np.float64)
            bv = np.median(base["group"][key], axis=1).astype(np.float64)
            diff = mv - bv
            n = diff.size
            # exact sign flips over subjects (one-sided: the model beats the baseline); a
            # draw equal to the observed mean up to rounding counts as reaching it
            tol = 1e-9 * max(1.0, float(np.abs(diff).max(initial=0.0)))
            if n <= 16:  # every pattern, the observed one included: p >= 2**-n
                null = (np.array(list(itertools.product([1.0, -1.0], repeat=n))) * diff).mean(1)
                p = float(np.mean(null >= diff.mean() - tol))
            else:
                signs = np.random.default_rng(ctx.config.seed).choice([1.0, -1.0], size=(10000, n))
                p = float((1 + np.sum((signs * diff).mean(1) >= diff.mean() - tol)) / 10001)
            rows.append({"model": m, "baseline": b, "baseline_kind": base.get("baseline"), "metric": metric,
                         "model_value": float(mv.mean()), "baseline_value": float(bv.mean()),
                         "difference": float(diff.mean()), "p": p, "n_subjects": int(n),
                         "test": "exact sign-flip over subjects, one-sided" if n <= 16 else
                                 "sign-flip over subjects (10,000 draws), one-sided",
                         "model_associations": int(sum(t["associated"].astype(bool).sum()
                                                       for t in res["tables"].values())) if res["tables"] else None,
                         "baseline_associations": int(sum(t["associated"].astype(bool).sum()
                                                          for t in base["tables"].values())) if base["tables"] else None})
    if not rows:
        return
    table = pd.DataFrame(rows)
    ctx.writer.write_table("comparison/baselines.csv", table)
    ctx.summary["baseline_comparison"] = [
        {**r, "reads": f"{r['model']} vs {r['baseline']} on {r['metric']}: {r['model_value']:.4f} vs "
                       f"{r['baseline_value']:.4f}, the model ahead by {r['difference']:+.4f} "
                       f"(p = {r['p']:.3g}, {r['test']}, {r['n_subjects']} subjects)"} for r in rows]


def region_results(ctx: StepContext, data, per_model: dict, baselines: dict) -> None:
    """Parcellated data: each model's regions.csv gains the baselines' r per region; a
    figure of r with its CI over subjects, the noise ceiling and the baselines; the best
    regions in summary.json."""
    import pandas as pd

    from ...analyses.figures import region_results_figure

    if data.kind != "regions":
        return
    out = {}
    for slug, res in per_model.items():
        path = ctx.out / f"encoding/{slug}/regions.csv"
        if res.get("baseline") or not path.exists():
            continue
        table = pd.read_csv(path)
        for b, base in baselines.items():
            if "r_cv" in base["group"]:
                table[f"r_cv_{b}"] = base["group"]["r_cv"]
        ctx.writer.write_table(f"encoding/{slug}/regions.csv", table)
        if "r_cv" in table:
            ctx.writer.write_figure(f"figures/{slug}_regions.png", region_results_figure(table, title=slug))
            cols = [c for c in ("region", "r_cv", "r_cv_ci_low", "r_cv_ci_high", "r2_cv", "q_cv", "r2_sparse",
                                "r2_sparse_null_p95", "r2_sparse_q", "noise_ceiling",
                                *[f"r_cv_{b}" for b in baselines]) if c in table]
            top = table.sort_values("r_cv", ascending=False).head(10)[cols]
            out[slug] = json.loads(top.to_json(orient="records"))
    if out:
        ctx.summary["regions"] = out
