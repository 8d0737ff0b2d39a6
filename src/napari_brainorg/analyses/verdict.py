"""The run's answer in plain sentences: is each model ahead of its baselines, what do its
atoms add beyond the nuisance regressors, do single layers beat its atoms, and how do its
network links compare with a story-free baseline's, and what the design could have found
(the detectable driver R², beside every null result; METHOD §4b, "Say it").

:func:`verdict` reads only the numbers a run wrote into ``summary.json`` (so a finished
folder can be read again) and returns one finding per question and model. A finding whose
``severity`` is ``"warning"`` is something a reader of the tables could misread: the run
raises it as a :class:`~napari_brainorg.errors.VerdictWarning`, so it reaches the console,
``warnings.json``, the report's first screen and the viewer.
"""

from __future__ import annotations

from typing import Any

__all__ = ["verdict", "SIGNIFICANCE"]

#: one-sided p below which a difference over subjects is called a lead
SIGNIFICANCE = 0.05

_KINDS = {"nuisance": "the nuisance regressors (word rate, word length, word frequency, pauses)",
          "phase_randomised": "its phase-randomised atoms (the same spectra, no lock to the story)",
          "untrained": "its untrained twin (the same architecture with random weights)"}


def _ci(entry: dict, digits: int = 3) -> str:
    lo, hi = entry.get("ci95", [float("nan")] * 2)
    if lo != lo:  # NaN: one subject
        return ""
    return f" [95% CI {lo:+.{digits}f}, {hi:+.{digits}f}]"


def _finding(model: str, topic: str, severity: str, text: str, **numbers) -> dict[str, Any]:
    return {"model": model, "topic": topic, "severity": severity, "text": text, **numbers}


def _baseline_findings(summary: dict) -> list[dict]:
    """Each model against each baseline, on the chance-corrected held-out r when it was
    measured (else on the held-out r itself)."""
    rows = summary.get("baseline_comparison", [])
    out = []
    pairs = list(dict.fromkeys((r["model"], r["baseline"]) for r in rows))
    for model, baseline in pairs:
        mine = [r for r in rows if r["model"] == model and r["baseline"] == baseline]
        row = next((r for r in mine if r.get("chance_corrected")), None) \
            or next((r for r in mine if r["metric"] == "median r_cv"), None)
        if row is None:
            continue
        what = _KINDS.get(row.get("baseline_kind"), f"the baseline {baseline}")
        measure = ("held-out r above each one's chance level" if row.get("chance_corrected")
                   else "held-out r (chance levels not measured)")
        numbers = (f"{row['difference']:+.3f}{_ci({'ci95': [row.get('ci_low', float('nan')), row.get('ci_high', float('nan'))]})}"
                   f" (p = {row['p']:.2g}, {row['n_subjects']} subjects)")
        if row["p"] < SIGNIFICANCE and row["difference"] > 0:
            out.append(_finding(model, f"vs {baseline}", "info",
                                f"{model} is ahead of {what} in {measure}: {numbers}.",
                                difference=row["difference"], p=row["p"]))
        else:
            tail = (" What its atoms predict, word timing predicts as well."
                    if row.get("baseline_kind") == "nuisance" else "")
            out.append(_finding(model, f"vs {baseline}", "warning",
                                f"{model} is not ahead of {what} in {measure}: {numbers}.{tail}",
                                difference=row["difference"], p=row["p"]))
    return out


def _nuisance_finding(model: str, info: dict) -> dict | None:
    entry = info.get("vs_nuisance_in_model")
    if not entry:
        return None
    test = entry.get("delta_r_above_chance") or entry["delta_r"]
    corrected = "delta_r_above_chance" in entry
    dr, dr2 = entry["delta_r"], entry["delta_r2"]
    numbers = (f"median gain in held-out r {dr['mean']:+.3f}{_ci(dr)}, in R2 {dr2['mean']:+.4f}{_ci(dr2, 4)}"
               + (f"; above the gain of shifted atoms {test['mean']:+.3f}{_ci(test)}" if corrected else "")
               + f" (p = {test['p']:.2g}, {test['n_subjects']} subjects)")
    if test["p"] < SIGNIFICANCE and test["mean"] > 0:
        return _finding(model, "beyond nuisance", "info",
                        f"Fitted together with the nuisance regressors (same folds), {model}'s atoms add to "
                        f"them: {numbers}.", difference=test["mean"], p=test["p"])
    return _finding(model, "beyond nuisance", "warning",
                    f"Fitted together with the nuisance regressors (same folds), {model}'s atoms add nothing "
                    f"detectable to them: {numbers}.", difference=test["mean"], p=test["p"])


def _layers_finding(model: str, info: dict) -> dict | None:
    entry = info.get("layers_vs_atoms")
    if not entry:
        return None
    ahead = [r for r in entry["layers"] if r["q"] < SIGNIFICANCE and r["difference"] > 0]
    if not ahead:
        return _finding(model, "layers vs atoms", "info",
                        f"No single layer of {model} predicts the fMRI better than its atoms "
                        f"({entry['n_ahead_of_atoms']} of {entry['n_layers']} layers ahead on the mean, none "
                        f"significantly).", n_ahead=0)
    best = max(ahead, key=lambda r: r["difference"])
    return _finding(model, "layers vs atoms", "warning",
                    f"{len(ahead)} of {entry['n_layers']} single layers of {model} predict the fMRI better than "
                    f"its atoms (q < {SIGNIFICANCE}; layer {best['layer']} by {best['difference']:+.3f} r"
                    f"{_ci(best)}): the atoms lose information the layers hold.", n_ahead=len(ahead))


def _recurrence_text(recurrence: dict | None) -> str:
    if not recurrence:
        return ""
    n, k, r = recurrence["n_links"], recurrence["n_recurring"], recurrence["n_restarts"]
    return (f" {k} of {n} links recur with the same sign in the dictionar{'y' if r == 1 else 'ies'} learned "
            f"again from {r} other start{'' if r == 1 else 's'}.")


def _sensitivity_text(sensitivity: dict | None, null: bool) -> str:
    """What the design could find (``summary["sensitivity"]``), said beside a null result."""
    if not sensitivity or not sensitivity.get("text"):
        return ""
    if null:
        return " " + sensitivity["text"]
    # links were declared: "nothing is declarable" cannot be true of this run's test, so it is
    # not said (the statement's draw budget and the test's disagree; summary.json keeps it)
    return (" Where no link was declared: " + sensitivity["text"][0].lower() + sensitivity["text"][1:]
            if sensitivity["text"].startswith("With") else "")


def _links_finding(model: str, info: dict, baselines: dict, recurrence: dict | None = None,
                   sensitivity: dict | None = None) -> dict | None:
    counts = info.get("n_associations")
    if counts is None:
        return None
    n = int(sum(counts.values()))
    story_free = {slug: int(sum(b.get("n_associations", {}).values())) for slug, b in baselines.items()
                  if b.get("baseline") == "phase_randomised"}
    others = ", ".join(f"{slug} {k}" for slug, k in story_free.items())
    if story_free and max(story_free.values()) >= n and n > 0:
        return _finding(model, "network links", "warning",
                        f"{model} declared {n} network links, and a story-free baseline as many or more "
                        f"({others}): the links do not show organisation driven by the story.", n_links=n)
    if n == 0:
        return _finding(model, "network links", "warning",
                        f"{model} declared no network link"
                        + (f" (story-free baseline: {others})" if others else "")
                        + ". A null result: it does not say that no network follows the atoms, only that this "
                          "design did not detect one." + _sensitivity_text(sensitivity, True), n_links=0,
                        **_detectable(sensitivity))
    return _finding(model, "network links", "info",
                    f"{model} declared {n} network links ({counts.get('activated', 0)} activated, "
                    f"{counts.get('deactivated', 0)} deactivated)"
                    + (f"; the story-free baseline declared {others}." if others else ".")
                    + _recurrence_text(recurrence) + _sensitivity_text(sensitivity, False), n_links=n,
                    **_detectable(sensitivity))


def _detectable(sensitivity: dict | None) -> dict:
    """The detectable R² as a number of the finding (median over atoms x networks), when measured."""
    return {} if not sensitivity else {"detectable_r2": sensitivity.get("median")}


def _readout_finding(model: str, readouts: list[dict]) -> dict | None:
    """The networks as drivers: how many, each one's direction, main atom and parts."""
    if not readouts:
        return None
    parts = []
    for r in sorted(readouts, key=lambda r: -r["r_heldout"])[:6]:
        others = r["n_atoms"] - 1
        parts.append(f"{r['atlas']}:{r['network']} {r['direction']} by atom {r['main_atom']}"
                     + (f" with {others} other atom{'s' if others > 1 else ''} as parts" if others else "")
                     + f" (held-out r {r['r_heldout']:.2f})")
    more = len(readouts) - len(parts)
    return _finding(model, "network drivers", "info",
                    f"{model}: {len(readouts)} network{'s' if len(readouts) > 1 else ''} with a driver, read "
                    f"as one driver each (its atoms together): " + "; ".join(parts)
                    + (f"; and {more} more" if more > 0 else "") + ".", n_networks=len(readouts))


def verdict(summary: dict) -> list[dict[str, Any]]:
    """The findings of a run, one per question and model.

    Parameters
    ----------
    summary : dict
        ``summary.json`` of a run (its ``results``, ``baseline_results`` and
        ``baseline_comparison``).

    Returns
    -------
    list of dict
        Each ``{"model", "topic", "severity": "info" | "warning", "text", ...numbers}``.
    """
    results = summary.get("results", {})
    baselines = summary.get("baseline_results", {})
    out: list[dict[str, Any]] = []
    by_model = {m: [f for f in _baseline_findings(summary) if f["model"] == m] for m in results}
    for model, info in results.items():
        out += by_model.get(model, [])
        readouts = summary.get("network_readouts", {}).get(model, [])
        for finding in (_nuisance_finding(model, info), _layers_finding(model, info),
                        _links_finding(model, info, baselines, summary.get("link_recurrence", {}).get(model),
                                       summary.get("sensitivity", {}).get(model)),
                        _readout_finding(model, readouts)):
            if finding is not None:
                out.append(finding)
    return out
