"""Step ``recovery`` (simulated data only): every declaration scored against the planted truth.

Reads
    ``simulated/truth.json`` and ``planted_sources.npy``, the driving model's atoms and
    tables, ``networks/<model>/test.json``.
Writes
    ``recovery.json`` (precision, recall, every link's verdict, the constituent reading)
    and the summary's ``recovery``.
Key
    none: rebuilt on every run.
"""

from __future__ import annotations

import json

import numpy as np

from ..context import StepContext
from ..study import study_confounds


def score_recovery(ctx: StepContext, per_model: dict, truth: dict) -> None:
    """recovery.json: every declaration of the driving model scored against the planted truth."""
    import pandas as pd

    from ...analyses.recovery import MIN_CORRELATION, match_atoms, recovery_scores, source_constituents

    slug = ctx.summary["fmri"]["driving_model"]
    tables = per_model[slug]["tables"]
    if not tables:
        return
    sources = np.load(ctx.out / "simulated" / truth["files"]["planted_sources"])
    planted = sorted(int(s) for s in truth["sources"]["planted"])
    if planted:
        _, match = match_atoms(sources[:, planted], per_model[slug]["atoms"], min_correlation=MIN_CORRELATION)
        match["planted"] = [planted[i] for i in match["planted"]]
    else:  # a null simulation: every declaration is false
        match = pd.DataFrame(columns=["planted", "learned", "correlation", "sign", "matched", "best_other"])
    rec = recovery_scores(truth["expected_links"], tables, match, min_correlation=MIN_CORRELATION,
                          partial_links=truth.get("network_shares"))
    if planted:
        # the constituent reading: sources as combinations of the learned atoms, with the
        # drifts and confounds the association test removes (analyses.recovery)
        from ...encoding.preprocessing import drift_basis

        nuisance = [drift_basis(sources.shape[0], ctx.config.story.tr, ctx.config.encoding.highpass_cutoff)]
        confounds = study_confounds(ctx, slug)
        if confounds is not None:
            nuisance.append(confounds.to_numpy())
        cons = source_constituents(sources[:, planted], per_model[slug]["atoms"], nuisance=np.column_stack(nuisance))
        cons["planted"] = [planted[i] for i in cons["planted"]]
        alt = recovery_scores(truth["expected_links"], tables, match, partial_links=truth.get("network_shares"),
                              constituents=cons)
        rec["constituents"] = {k: alt[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn", "fp_partial",
                                                   "by_atlas", "by_direction", "details", "criterion")}
        rec["constituents"]["betas"] = [{"source": int(r.planted), "atom": int(r.learned), "beta": round(float(r.beta), 4)}
                                        for r in cons[cons["constituent"]].itertuples(index=False)]
    from ...analyses.recovery import direction_reading

    rec["directions"] = direction_reading(truth["expected_links"], tables, cons if planted else None)
    rec.update({"simulated": True, "driving_model": slug, "sources": truth["sources"].get("kind"),
                "atlases": sorted(rec["by_atlas"]),
                "declaration_rule": _declaration_rule(ctx, slug),
                "expected_rule": truth.get("expected_rule")})
    ctx.writer.write_json("recovery.json", rec)
    ctx.summary["recovery"] = {k: rec[k] for k in ("precision", "recall", "tp", "fp", "fn", "fp_partial", "n_tests",
                                                   "directions")}
    if "constituents" in rec:
        ctx.summary["recovery"]["constituents"] = {k: rec["constituents"][k]
                                                   for k in ("precision", "recall", "tp", "fp", "fn")}


def _declaration_rule(ctx: StepContext, slug: str) -> str:
    """How a link was declared, as the networks step recorded it in ``test.json``."""
    path = ctx.out / f"networks/{slug}/test.json"
    if path.exists():
        recorded = json.loads(path.read_text())
        if recorded.get("criterion"):
            return f"{recorded.get('test', '')}: {recorded['criterion']}".strip(": ")
    return (f"q < {ctx.config.networks.alpha} (BH-FDR over atom x network tests) and "
            f"{ctx.config.networks.score} >= {ctx.config.networks.min_score}")
