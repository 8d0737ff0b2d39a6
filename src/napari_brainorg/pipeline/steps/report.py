"""Step ``report``: figures, ``summary.json``'s results and the folder's self-description.

Reads
    every model's atoms, tables and group arrays, ``atoms/<model>/layer_hist.tsv`` and
    ``dictionary.json``.
Writes
    ``figures/<model>_*.png`` (layer histograms, atom correlations, association heat
    maps, R2 glass brains); the summary's ``results``, ``baseline_results`` and
    ``headline``; ``provenance.json``; the BIDS-named maps (``maps/``), ``warnings.json``
    and ``dataset_description.json``. ``report.html`` is rendered from the finished
    folder by :func:`napari_brainorg.report.write_report`.
Key
    none: rebuilt on every run.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from ... import __version__
from ..._progress import check_cancel
from ...io.results import DATASET_DESCRIPTION, WARNINGS, find_map
from ..config import PipelineConfig
from ..context import StepContext, model_slug
from ..study import study_runs, subject_ci


def step_report(ctx: StepContext, per_model: dict) -> None:
    """Each model's figures and its entry of the summary's ``results`` (scores beside
    their chance levels and the noise ceiling, association counts, the dictionary's
    reproducibility); each baseline's numbers in ``baseline_results``."""
    import pandas as pd

    from ...analyses import figures as figs

    w = ctx.writer
    summary_models = {}
    for i, (slug, res) in enumerate(per_model.items()):
        ctx.stage("report: figures", i, len(per_model))
        group = res["group"]
        if res.get("baseline"):  # pseudo-models: numbers in the summary and tables, no figures
            r2 = group.get("r2_cv", group.get("r2_sparse"))
            ctx.summary.setdefault("baseline_results", {})[slug] = {
                "baseline": res["baseline"], "source": res["model"], "n_atoms": int(res["atoms"].shape[1]),
                "r2_median": float(np.median(r2)) if r2 is not None else None,
                "n_associations": {p: int(t["associated"].astype(bool).sum()) for p, t in res["tables"].items()},
                **chance_summary(group, ctx.config.seed)}
            continue
        hist_df = pd.read_csv(ctx.out / f"atoms/{slug}/layer_hist.tsv", sep="\t").set_index("atom")
        w.write_figure(f"figures/{slug}_layer_histograms.png", figs.layer_histogram_figure(hist_df))
        w.write_figure(f"figures/{slug}_atom_correlation.png", figs.atom_correlation_figure(res["atoms"]))
        for part, table in res["tables"].items():
            for atlas in table["atlas"].unique():
                sub = table[table["atlas"] == atlas]
                value = _tested_value(sub, ctx.config)
                check_cancel(ctx.cancel)
                w.write_figure(f"figures/{slug}_{atlas}_{part}_association.png",
                               figs.association_heatmap_figure(sub, value=value, signed=value == "statistic"))
        r2_name = "r2_cv" if "r2_cv" in group else "r2_sparse"
        r2_img = find_map(ctx.out, slug, r2_name)
        if r2_img is not None:  # voxel data (region time series have a table instead)
            w.write_figure(f"figures/{slug}_{r2_name}.png", figs.r2_glass_figure(str(r2_img)))
        r2 = group.get(r2_name)
        summary_models[slug] = {
            "n_ans": int(res["n_ans"]), "n_atoms": int(res["atoms"].shape[1]),
            "r2_kind": r2_name,
            "r2_median": float(np.median(r2)) if r2 is not None else None,
            "r2_p95": float(np.percentile(r2, 95)) if r2 is not None else None,
            "n_associations": {p: int(t["associated"].astype(bool).sum()) for p, t in res["tables"].items()},
        }
        summary_models[slug].update(chance_summary(group, ctx.config.seed))
        if "r2_loso_stories" in group:  # several stories: the ridge trained on the others, per held-out story
            summary_models[slug]["r2_loso"] = {
                "median": float(np.median(group["r2_loso"])), "p95": float(np.percentile(group["r2_loso"], 95)),
                "per_story_median": {r[0]: float(np.median(v)) for r, v in zip(study_runs(ctx.config),
                                                                                group["r2_loso_stories"])},
                "per_story_p95": {r[0]: float(np.percentile(v, 95)) for r, v in zip(study_runs(ctx.config),
                                                                                 group["r2_loso_stories"])},
                "r_median": float(np.median(group["r_loso"]))}
        dict_path = ctx.out / f"atoms/{slug}/dictionary.json"
        if dict_path.exists():
            info = json.loads(dict_path.read_text())
            rep = info.get("reproducibility") or {}
            summary_models[slug]["atoms"] = {
                "init": info.get("init"), "orient": info.get("orient"), "n_flipped": info.get("n_flipped"),
                "fraction_reproduced": rep.get("mean_fraction_reproduced"),
                "reproduced_at": rep.get("threshold"), "n_restarts": rep.get("n_restarts", 0),
                "size_control": info.get("size_control")}
    ctx.summary["results"] = summary_models
    ctx.stage("report: figures", len(per_model), len(per_model))


def _tested_value(table, config) -> str:
    """The column the association test scored (``statistic``), else the display score."""
    if "statistic" in table.columns and table["statistic"].notna().any():
        return "statistic"
    return config.networks.score


def chance_summary(group: dict, seed: int = 0) -> dict:
    """Scores beside their chance levels and the noise ceiling, for summary.json."""
    out: dict[str, Any] = {}
    if "r2_sparse" in group:
        r2 = group["r2_sparse"]
        entry = {"median": float(np.median(r2)), "p95": float(np.percentile(r2, 95)),
                 "kind": "in-sample R2 of the paper's sparse fit (group mean)"}
        if "r2_sparse_null_map_median" in group:
            med, p95 = group["r2_sparse_null_map_median"], group["r2_sparse_null_map_p95"]
            entry.update({
                "null": "circular shifts of the atoms, the same for every subject, sparse model refit",
                "n_shifts": int(med.size),
                "null_median": float(np.median(med)), "null_median_95th": float(np.percentile(med, 95)),
                "null_p95": float(np.median(p95)),
                "p_map_median": float((1 + (med >= entry["median"]).sum()) / (1 + med.size)),
                "fraction_voxels_p05": float(np.mean(group["r2_sparse_p"] <= 0.05)),
            })
        out["r2_sparse"] = entry
    if "noise_ceiling" in group:
        out["noise_ceiling"] = {
            "estimator": "split-half ISC with Spearman-Brown, ceiling of one subject's r (sqrt of the "
                         "single-subject reliability), mean over random splits",
            "median": float(np.median(group["noise_ceiling"])),
            "p95": float(np.percentile(group["noise_ceiling"], 95)),
            "isc_loo_median": float(np.median(group["isc_loo"])) if "isc_loo" in group else None,
        }
    if "r_cv" in group:
        out["r_cv_median"] = float(np.median(group["r_cv"]))
    if "subject_r_cv" in group:
        per_subject = np.median(group["subject_r_cv"], axis=1)  # each subject's median over voxels
        mean, lo, hi = subject_ci(per_subject[:, None])
        out["r_cv_subjects"] = {"per_subject_median": [float(v) for v in per_subject], "mean": float(mean[0]),
                                "ci95": [float(lo[0]), float(hi[0])], "n_subjects": int(per_subject.size),
                                "ci": "t interval over subjects of each subject's median r over voxels/regions"}
    out.update(_comparisons_summary(group, seed))
    return out


def _subject_mean(values: np.ndarray, seed: int) -> dict[str, Any]:
    """Mean over subjects with its t interval and a one-sided sign-flip p (mean > 0)."""
    from ...encoding.stats import sign_flip_p

    values = np.asarray(values, np.float64)
    mean, lo, hi = subject_ci(values[:, None])
    p, test = sign_flip_p(values, random_state=seed)
    return {"mean": float(mean[0]), "ci95": [float(lo[0]), float(hi[0])], "p": p, "test": test,
            "n_subjects": int(values.size)}


def _comparisons_summary(group: dict, seed: int) -> dict[str, Any]:
    """The held-out r above its chance level, what the atoms add beyond the nuisance
    regressors in the encoding model itself, and single layers against the atoms."""
    out: dict[str, Any] = {}
    if "subject_chance_atoms" in group:
        obs, chance = np.asarray(group["subject_chance_atoms"], np.float64).T
        out["r_cv_chance"] = {
            "chance": float(chance.mean()), "observed": float(obs.mean()),
            "above_chance": _subject_mean(obs - chance, seed),
            "n_shifts": int(np.shape(group["subject_chance_atoms_draws"])[1]),
            "rule": "each subject's median held-out r over the summary voxels; chance = its mean over "
                    "circular shifts of the features with the nested CV (alpha included) run again"}
    if "subject_delta_r_beyond_nuisance" in group:
        entry = {
            "model": "ridge on the atoms and the nuisance regressors together vs the nuisance regressors "
                     "alone, same folds and alpha grid",
            "delta_r": _subject_mean(np.median(group["subject_delta_r_beyond_nuisance"], axis=1), seed),
            "delta_r2": _subject_mean(np.median(group["subject_delta_r2_beyond_nuisance"], axis=1), seed),
            "r_nuisance": float(np.median(group["r_cv_nuisance_only"])),
            "r_joint": float(np.median(group["r_cv_atoms_and_nuisance"]))}
        if "subject_chance_gain" in group:
            obs, chance = np.asarray(group["subject_chance_gain"], np.float64).T
            entry["delta_r_above_chance"] = {
                "chance": float(chance.mean()), **_subject_mean(obs - chance, seed),
                "rule": "each subject's median gain over the summary voxels minus the gain of circularly "
                        "shifted atoms with the same nuisance regressors"}
        out["vs_nuisance_in_model"] = entry
    if "subject_baseline_r_median" in group and "subject_r_cv" in group:
        out["layers_vs_atoms"] = _layers_vs_atoms(group, seed)
    return out


def _layers_vs_atoms(group: dict, seed: int) -> dict[str, Any]:
    """Each layer's median held-out r against the atoms', per subject: sign-flip p that the
    layer is ahead, Benjamini-Hochberg over layers."""
    from ...encoding.inference import fdr

    atoms = np.median(group["subject_r_cv"], axis=1).astype(np.float64)
    layers = np.asarray(group["subject_baseline_r_median"], np.float64)
    tests = [_subject_mean(layers[:, j] - atoms, seed) for j in range(layers.shape[1])]
    q = fdr(np.array([t["p"] for t in tests]))[1]
    labels = [int(v) for v in np.asarray(group.get("baseline_layers", np.arange(layers.shape[1])))]
    rows = [{"layer": lab, "difference": t["mean"], "ci95": t["ci95"], "p": t["p"], "q": float(qv)}
            for lab, t, qv in zip(labels, tests, q)]
    return {"n_layers": len(rows), "n_ahead_of_atoms": int(sum(r["difference"] > 0 for r in rows)),
            "n_significantly_ahead": int(sum(r["q"] < 0.05 and r["difference"] > 0 for r in rows)),
            "test": "per layer: each subject's median held-out r of the layer minus the atoms', sign-flip over "
                    "subjects (one-sided, layer ahead), BH over layers; the layers' own chance level is not "
                    "subtracted (a layer whose chance r is higher reads as ahead more easily: the warning errs towards being said)",
            "layers": rows}


def say_verdict(ctx: StepContext) -> list[dict]:
    """The run's findings (:func:`napari_brainorg.analyses.verdict.verdict`) from the summary
    so far; each one a reader could misread is raised as a ``VerdictWarning`` (console,
    ``warnings.json``, the report's first screen, the viewer)."""
    import warnings

    from ...analyses.verdict import verdict
    from ...errors import VerdictWarning

    findings = verdict(ctx.summary)
    for finding in findings:
        if finding["severity"] == "warning":
            warnings.warn(finding["text"], VerdictWarning, stacklevel=2)
    return findings


def headlines(ctx: StepContext, kind: str) -> list[str]:
    """One line per model: held-out r with its CI over subjects, the paper's R2 beside its
    chance level, the noise ceiling, and the baselines."""
    unit = "regions" if kind == "regions" else "voxels"
    lines = []
    for slug, info in ctx.summary.get("results", {}).items():
        parts = [slug + ":"]
        rs = info.get("r_cv_subjects")
        if rs:
            ci = "" if np.isnan(rs["ci95"][0]) else f" [95% CI {rs['ci95'][0]:.3f}, {rs['ci95'][1]:.3f}]"
            parts.append(f"held-out r {rs['mean']:.3f}{ci} over {rs['n_subjects']} subjects (median over {unit})")
        r2 = info.get("r2_sparse")
        if r2 and "null_median" in r2:
            parts.append(f"paper's in-sample R2 {r2['median']:.3f} vs {r2['null_median']:.3f} by chance "
                         f"(shift null, 95th pct of the map median {r2['null_median_95th']:.3f})")
        nc = info.get("noise_ceiling")
        if nc:
            parts.append(f"noise ceiling r {nc['median']:.3f}")
        for row in ctx.summary.get("baseline_comparison", []):
            if row["model"] == slug and row["metric"] == "median r_cv":
                parts.append(f"vs {row['baseline']} {row['difference']:+.3f} (p = {row['p']:.2g})")
        lines.append("; ".join([parts[0] + " " + parts[1]] + parts[2:]) if len(parts) > 1 else parts[0])
    return lines


def encoding_scheme(ctx: StepContext) -> dict:
    """How encoding was scored (summary.json and provenance.json)."""
    cfg = ctx.config
    ec = cfg.encoding
    stories = [r[0] for r in ctx.runs]
    out = {"contiguous_folds": {"n_folds": ec.n_folds, "gap": ec.gap,
                                "over": "the stories' volumes one after another" if len(stories) > 1 else "the story"},
           "stories": stories,
           "dictionary_stories": list(cfg.atoms.stories) if cfg.atoms.stories else stories,
           "map_stories": list(ec.map_stories) if ec.map_stories else stories}
    if len(stories) > 1:
        out["drifts"] = "per story run: constant, trend and cosine high-pass with the run's TR; confounds per story"
        from ...encoding.stories import loso_scheme

        out["leave_one_story_out"] = (loso_scheme(ctx.runs, ec.delays, ec.highpass_cutoff, gap=ec.gap)
                                      if ec.leave_one_story_out and "ridge" in ec.models else None)
    return out


def package_versions() -> dict[str, str]:
    """The versions of Python and the packages a result depends on (provenance.json)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("numpy", "scipy", "scikit-learn", "nibabel", "nilearn", "torch", "transformers", "pandas"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


#: how provenance.json identifies an input file's contents
IDENTITY_DOC = (
    "sha256 of the whole file up to 256 MiB; larger files: size, modification time (ns) and "
    "sha256 of 16 evenly spaced 1 MiB blocks")


def describe_outputs(ctx: StepContext, caught: list[dict]) -> None:
    """Self-describing outputs: BIDS-named maps with sidecars, warnings, dataset description."""
    from ..derivatives import write_statmaps

    for model in ctx.config.features.models:
        write_statmaps(ctx.writer, ctx.config, model_slug(model), model)
    ctx.writer.write_json(WARNINGS, caught)
    ctx.writer.write_json(DATASET_DESCRIPTION, dataset_description(ctx.config))


#: the BIDS version the result folder follows (derivatives: dataset_description, sidecars, TSV)
BIDS_VERSION = "1.10.0"


def _code_url() -> str | None:
    """The package's home page from its installed metadata (``[project.urls]``), if it has one."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        meta = metadata("napari-brainorg")
    except PackageNotFoundError:
        return None
    urls = [u.split(",", 1)[-1].strip() for u in meta.get_all("Project-URL") or []]
    return next((u for u in urls if u), meta.get("Home-page") or None)


def source_datasets(config: PipelineConfig) -> list[dict]:
    """``SourceDatasets`` of the result folder: a BIDS input's DOI (from its own
    ``dataset_description.json``) with its location as a URI; the folders of plain images
    as ``file://`` URIs; ``bids::simulated/`` (a BIDS URI into this folder) for simulated data."""
    fmri = config.fmri
    if fmri.simulate is not None:
        return [{"URL": "bids::simulated/"}]
    if fmri.bids is not None:
        root = Path(fmri.bids.root).resolve()
        entry: dict[str, Any] = {"URL": root.as_uri()}
        try:
            theirs = json.loads((root / "dataset_description.json").read_text())
        except (OSError, ValueError):
            theirs = {}
        doi = str(theirs.get("DatasetDOI") or "").strip()
        if doi:
            entry = {"DOI": doi if doi.startswith("doi:") else f"doi:{doi.removeprefix('https://doi.org/')}",
                     **entry}
        if theirs.get("Version") or theirs.get("DatasetVersion"):
            entry["Version"] = str(theirs.get("Version") or theirs.get("DatasetVersion"))
        return [entry]
    files = fmri.images if isinstance(fmri.images, list) else [p for v in (fmri.images or {}).values() for p in v]
    files = [*files, *(fmri.regions if isinstance(fmri.regions, list) else
                       [p for v in (fmri.regions or {}).values() for p in v])]
    folders = sorted({Path(f).resolve().parent for f in files})
    return [{"URL": folder.as_uri()} for folder in folders]


def dataset_description(config: PipelineConfig) -> dict:
    """The BIDS-derivatives ``dataset_description.json`` of a run's result folder."""
    fmri = config.fmri
    generated = {
        "Name": "napari-brainorg",
        "Version": __version__,
        "Description": "Sparse dictionary atoms of language-model artificial neurons, voxel-wise "
                       "encoding of fMRI and atom-network associations (Sun et al. 2024, arXiv:2410.19542).",
    }
    url = _code_url()
    if url:
        generated["CodeURL"] = url
    desc = {
        "Name": f"napari-brainorg: atoms of {', '.join(config.features.models)} and their brain maps"
                f" ({'SIMULATED fMRI' if fmri.simulate is not None else 'fMRI'}, story {Path(config.story.path).name})",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "HowToAcknowledge": "Cite Sun et al. (2024) arXiv:2410.19542 and the atlases used "
                            "(see report.html, Methods).",
    }
    sources = source_datasets(config)
    if sources:
        desc["SourceDatasets"] = sources
    return desc


def write_provenance(ctx: StepContext, executor, merge: bool) -> None:
    """``provenance.json``: the configuration, package versions, every input's content
    identity, every step's key, the stories, the encoding scheme and where tasks ran."""
    config = ctx.config
    ctx.writer.write_json("provenance.json", {
        "config": config.model_dump(mode="json"), "versions": package_versions(),
        "inputs": ctx.inputs, "cache_keys": ctx.keys, "seed": config.seed,
        "stories": [{"story": n, "n_volumes": v, "tr": t} for n, v, t in ctx.runs],
        "encoding_scheme": encoding_scheme(ctx),
        "execution": {**(executor.describe() if executor is not None else {"executor": "sequential"}),
                      "merge": merge},
        "input_identity": IDENTITY_DOC})
