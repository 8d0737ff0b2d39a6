"""Recovery of planted atom <-> network links by the demo pipeline, by condition, over seeds.

SIMULATED data only. Each condition changes one thing that makes real data hard,
on top of the realistic noise that every condition keeps (AR(1) 0.6 in grey matter
and 0.2 elsewhere, independent Smith/Yeo network fluctuations in every subject):

- ``relearned``: the planted sources are atoms of a dictionary learned again from
  another start on 80 % of the ANs (canonical HRF, true R2 0.05-0.2);
- ``an_mix``: each source is the signed mean of 30 member ANs of an atom;
- ``hrf``: the analysis' own atoms planted, HRF delay within +-1.5 s and extra
  dispersion up to 1.5 s, varying over voxels and subjects;
- ``low_snr``: the analysis' own atoms planted at true R2 0.02-0.08;
- ``combined``: all of it, the simulator's defaults (AN mix, varying HRF, true R2 0.02-0.2);
- ``null``: nothing planted (every declaration is false).

Every declaration counts (activated and deactivated, every atlas, with signs; see
``napari_brainorg.analyses.recovery``). Two readings are printed: the one-to-one
matching of atoms to sources (the headline, ``recovery.json``'s top level) and the
constituent reading (``recovery.json`` → ``constituents``: a declaration by an atom
whose partial coefficient in the planted source is ≥ 0.2 with the matching sign is
correct). The runs share one result folder so the model's ANs and atoms are computed
once; only the simulation and what follows are redone. The association test reads only
the fMRI, the atoms and the story's confounds, so the encoding's chance levels
(``sparse_null_shifts``), saved time courses and the in-sample sparse fit are turned off
here (``--full-encoding`` keeps the demo's encoding): the declarations are the demo's.
Prints one JSON line per run and a table of precision and recall per condition (mean
and range over seeds; pooled counts).

    nice -n 10 python benchmarks/bench_recovery.py [--seeds 0 1 2 3 4] [--conditions ...] [--quick] [--lean]
        [--stories pieman lucy ...] [--surrogates]

The full design's subjects hear the full demo's four stories, the quick design's pieman
(``--stories`` names others). ``--lean`` runs only what the declarations depend on: the
pipeline's simulation step (``run_simulation``) and the networks step's association test
with the configuration's options and seed; it also scores the same tables without the
resemblance rule and without either rule. ``--surrogates`` (with ``--lean``) tests
phase-randomised copies of the atoms on the same data: every declaration is false.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from napari_brainorg.pipeline import demo_config, make_config, run_pipeline
from napari_brainorg.pipeline.config import DEMO_STORIES, demo_stories

NOISE = {"ar1_grey": 0.6, "ar1_other": 0.2, "fluctuation_atlases": ["smith10", "yeo7"], "fluctuation_share": 0.3}
EASY = {**NOISE, "sources": "atoms", "hrf_delay_s": 0.0, "hrf_dispersion_s": 0.0, "r2_min": 0.05, "r2_max": 0.2}
CONDITIONS = {
    "relearned": {**EASY, "sources": "relearned"},
    "an_mix": {**EASY, "sources": "an_mix"},
    "hrf": {**EASY, "hrf_delay_s": 1.5, "hrf_dispersion_s": 1.5},
    "low_snr": {**EASY, "r2_min": 0.02, "r2_max": 0.08},
    "combined": {**NOISE, "sources": "an_mix", "hrf_delay_s": 1.5, "hrf_dispersion_s": 1.5, "r2_min": 0.02,
                 "r2_max": 0.2},
    "null": {**NOISE, "links": {}, "negative_links": {}},
    # sources that owe nothing to the dictionary: sums of 4 random ANs with random signs, which the
    # atoms approximate as combinations with negative parts (the direction reading below)
    "random_mix": {**NOISE, "sources": "random_an_mix", "n_members": 4, "hrf_delay_s": 1.5, "hrf_dispersion_s": 1.5,
                   "r2_min": 0.05, "r2_max": 0.2},
}


def _config(out: Path, seed: int, condition: str, args) -> dict:
    data = demo_config(out, models=["minilm"], quick=args.quick).model_dump()
    if args.stories:  # the subjects hear these bundled stories (volumes: the Narratives scans')
        data.pop("story")
        data["stories"] = demo_stories(args.stories)
    data["fmri"]["simulate"].update(CONDITIONS[condition], seed=seed)
    if args.n_subjects:
        data["fmri"]["simulate"]["n_subjects"] = args.n_subjects
    if args.n_atoms:
        data["atoms"]["n_atoms"] = args.n_atoms
    if args.resolution_mm:
        data["fmri"]["simulate"]["resolution_mm"] = args.resolution_mm
    if args.n_permutations:
        data["networks"]["n_permutations"] = args.n_permutations
    if not args.full_encoding:  # not read by the association test (module docstring)
        data["encoding"] = {**data.get("encoding", {}), "models": ["ridge"], "sparse_null_shifts": 0,
                            "save_timecourses": False}
    return data


def run(out: Path, seed: int, condition: str, args) -> dict:
    data = _config(out, seed, condition, args)
    t = time.perf_counter()
    result = run_pipeline(make_config(data))
    rec = json.loads((result.path / "recovery.json").read_text())
    row = {"condition": condition, "seed": seed, "wall_s": round(time.perf_counter() - t, 1)}
    row.update({k: rec[k] for k in ("precision", "recall", "tp", "fp", "fn", "fp_partial", "n_tests", "n_declared",
                                    "n_expected")})
    cons = rec.get("constituents") or {}
    row.update({f"c_{k}": cons.get(k) for k in ("precision", "recall", "tp", "fp", "fn")})
    row["matched_r"] = [None if m["correlation"] is None else round(m["correlation"], 2) for m in rec["matching"]]
    row["by_atlas"] = {a: {k: v[k] for k in ("tp", "fp", "fn")} for a, v in rec["by_atlas"].items()}
    row["by_direction"] = {d: {k: v[k] for k in ("tp", "fp", "fn")} for d, v in rec["by_direction"].items()}
    row["directions"] = rec.get("directions")
    return row


def run_lean(out: Path, seed: int, condition: str, args) -> dict:
    """The pipeline's own simulation step, then the networks step's association test with the
    configuration's options (the same function, arguments and seed as ``_stimulus_tables``);
    the encoding, figures and report, which the test does not read, are not run."""
    import warnings

    import numpy as np
    import pandas as pd

    from napari_brainorg.analyses.recovery import MIN_CORRELATION, match_atoms, recovery_scores, source_constituents
    from napari_brainorg.encoding.preprocessing import drift_basis
    from napari_brainorg.io.atlases import load_fbn
    from napari_brainorg.networks.association import (disjoint_networks, follows_network, main_drivers,
                                                      stimulus_association)
    from napari_brainorg.pipeline import run_simulation
    from napari_brainorg.pipeline.steps.simulation import load_simulated_subjects

    t = time.perf_counter()
    cfg = make_config(_config(out, seed, condition, args))
    sim = run_simulation(cfg)
    atoms = np.load(out / "atoms/minilm/atoms.npy")
    # the story's confounds as the pipeline reads them (its volume index is not one)
    confounds = pd.read_csv(out / "story/nuisance.tsv", sep="\t").select_dtypes("number").drop(columns="volume",
                                                                                               errors="ignore")
    confounds = confounds.loc[:, confounds.std() > 0]
    nc, ec = cfg.networks, cfg.encoding
    highpass, runs = ec.highpass_cutoff, None
    fmri = load_simulated_subjects(cfg, sim)
    if cfg.multi_story:  # each story's drifts in the confounds, as the networks step has them
        from napari_brainorg.encoding.stories import run_drift_basis

        story_runs = [(s.label, s.n_volumes, s.tr) for s in cfg.stories]
        drifts = run_drift_basis(story_runs, highpass)
        confounds = pd.concat([confounds.reset_index(drop=True),
                               pd.DataFrame(drifts, columns=[f"drift_{i}" for i in range(drifts.shape[1])])], axis=1)
        highpass, runs = None, [n for _, n, _ in story_runs]
    names, networks = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # atlases resampled to the simulation's grid
        for atlas in nc.atlases:
            fbn = load_fbn(atlas, fmri.mask_img)
            names += [(atlas, n) for n in fbn.network_names]
            networks.append(disjoint_networks(fbn.maps, fbn.masks()))
    def test(regressors):
        return stimulus_association(
            regressors, fmri.data, np.concatenate(networks), tr=cfg.story.tr, network_names=[n for _, n in names],
            atlas_names=[a for a, _ in names], confounds=confounds.to_numpy(np.float64),
            highpass_cutoff=highpass, runs=runs, null=nc.null,
            n_permutations=10_000 if nc.n_permutations is None else nc.n_permutations,
            contribution=nc.contribution, network_score=nc.network_score, moved=nc.moved, min_effect=nc.min_effect,
            min_relative_effect=nc.min_relative_effect, min_network_relative_effect=0.0,
            group_effects=ec.group_effects, min_subjects_random=ec.min_subjects_random, alpha=nc.alpha,
            random_state=cfg.seed)

    table = test(atoms)
    surrogate = None
    if args.surrogates:  # the same data and test, the atoms' lock to the story broken (every declaration false)
        from napari_brainorg.encoding.inference import phase_randomise

        st = test(phase_randomise(atoms, random_state=[seed, 7], runs=runs))
        p = st["p"].to_numpy(float)
        st["associated"] &= follows_network(st, nc.min_network_relative_marginal)
        surrogate = {"declared": int(main_drivers(st, nc.min_network_relative_effect).sum()),
                     "p_le_0.01": round(float(np.mean(p <= 0.01)), 4), "p_le_0.002": round(float(np.mean(p <= 0.002)), 4),
                     "min_p": float(p.min())}
    truth = json.loads((sim / "truth.json").read_text())
    sources = np.load(sim / truth["files"]["planted_sources"])
    planted = sorted(int(x) for x in truth["sources"]["planted"])
    if planted:
        _, match = match_atoms(sources[:, planted], atoms, min_correlation=MIN_CORRELATION)
        match["planted"] = [planted[i] for i in match["planted"]]
        nuisance = confounds.to_numpy(np.float64)
        if runs is None:
            nuisance = np.column_stack([drift_basis(sources.shape[0], cfg.story.tr, ec.highpass_cutoff), nuisance])
        cons = source_constituents(sources[:, planted], atoms, nuisance=nuisance)
        cons["planted"] = [planted[i] for i in cons["planted"]]
    else:
        match = pd.DataFrame(columns=["planted", "learned", "correlation", "sign", "matched", "best_other"])
        cons = None
    row = {"condition": condition, "seed": seed}
    follows = follows_network(table, nc.min_network_relative_marginal)
    for label, rho, marginal_rule in (("", nc.min_network_relative_effect, True),
                                      ("nomarg_", nc.min_network_relative_effect, False), ("norule_", 0.0, False)):
        t2 = table.assign(associated=table["associated"] & follows) if marginal_rule else table
        t2 = t2.assign(associated=main_drivers(t2, rho))
        tabs = {d: t2[t2["direction"] == d].reset_index(drop=True) for d in ("activated", "deactivated")}
        rec = recovery_scores(truth["expected_links"], tabs, match, partial_links=truth.get("network_shares"))
        row.update({f"{label}{k}": rec[k] for k in ("precision", "recall", "tp", "fp", "fn", "fp_partial")})
        if label == "":
            row.update({k: rec[k] for k in ("n_tests", "n_declared", "n_expected")})
        con = (recovery_scores(truth["expected_links"], tabs, match, constituents=cons) if cons is not None
               else {k: None for k in ("precision", "recall", "tp", "fp", "fn")})
        row.update({f"{label}c_{k}": con[k] for k in ("precision", "recall", "tp", "fp", "fn")})
    if surrogate is not None:
        row["surrogates"] = surrogate
    row["wall_s"] = round(time.perf_counter() - t, 1)
    return row


def _fmt(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "   -              "
    mean = sum(values) / len(values)
    return f"{mean:5.2f} [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--quick", action="store_true", help="the quick demo's design instead of the full one")
    parser.add_argument("--n-subjects", type=int, default=None, help="override the design's number of subjects")
    parser.add_argument("--n-atoms", type=int, default=None, help="override the design's number of atoms")
    parser.add_argument("--resolution-mm", type=float, default=None, help="override the simulated voxel size")
    parser.add_argument("--n-permutations", type=int, default=None, help="override the association test's draws")
    parser.add_argument("--stories", nargs="+", default=None, metavar="STORY",
                        help="the subjects hear these bundled stories (default: the design's own: the full demo's "
                             f"{', '.join(DEMO_STORIES)}, the quick demo's pieman)")
    parser.add_argument("--lean", action="store_true",
                        help="only the simulation step and the networks step's association test (same options and "
                             "seed as the pipeline's; with and without the main-driver rule)")
    parser.add_argument("--surrogates", action="store_true",
                        help="with --lean: also test phase-randomised copies of the atoms on the same data (each "
                             "story's phases on their own); every declaration of theirs is false")
    parser.add_argument("--full-encoding", action="store_true",
                        help="keep the demo's whole encoding step (slower; the declarations do not change)")
    parser.add_argument("--out", default=None, help="result folder shared by the runs (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="brainorg-recovery-")) / "result"
    rows = []
    for condition in args.conditions:
        for seed in args.seeds:
            row = (run_lean if args.lean else run)(out, seed, condition, args)
            rows.append(row)
            print(json.dumps(row), flush=True)
    design = _config(out, 0, "combined", args)
    sim = design["fmri"]["simulate"]
    stories = [s["path"] for s in design["stories"]] if design.get("stories") else [design["story"]["path"]]
    print(f"\nSIMULATED recovery, {'quick' if args.quick else 'full'} demo design: {sim['n_subjects']} subjects, "
          f"stories {', '.join(stories)}, {sim['resolution_mm']:g} mm, {design['atoms']['n_atoms']} atoms, "
          f"{design['networks']['n_permutations'] or 10_000} draws; seeds {args.seeds}")
    prefixes = [("", "")] + ([("nomarg_", " without the resemblance rule (min_network_relative_marginal 0)"),
                              ("norule_", " without either rule (min_network_relative_marginal 0, "
                                          "min_network_relative_effect 0)")]
                             if rows and "norule_tp" in rows[0] else [])
    for prefix, title in prefixes:
        _table(rows, args.conditions, prefix, title)
    _directions_table(rows, args.conditions)


def _directions_table(rows, conditions) -> None:
    """The direction reading (analyses.recovery.direction_reading): on the planted networks,
    declared links shown in the other direction than their network's main link, as the link
    tests label them and as they are presented with the network readouts (a negatively
    weighted part of an activating source must not read as a deactivation), and the
    networks presented in their planted direction (in the source's terms)."""
    sub = [r for r in rows if r.get("directions")]
    if not sub:
        return
    keys = ("networks_planted", "networks_declared", "networks_right_direction", "opposite_parts_tested",
            "opposite_parts_presented")
    print("\ndirection reading on the planted networks:")
    print(f"{'condition':<10} {'planted':>8} {'declared':>9} {'right':>6} {'opposite parts: tested':>23} "
          f"{'presented':>10}")
    for condition in conditions:
        cond = [r["directions"] for r in sub if r["condition"] == condition]
        if cond:
            total = {k: sum(d[k] or 0 for d in cond) for k in keys}
            print(f"{condition:<10} {total['networks_planted']:>8} {total['networks_declared']:>9} "
                  f"{total['networks_right_direction']:>6} {total['opposite_parts_tested']:>23} "
                  f"{total['opposite_parts_presented']:>10}")


def _table(rows, conditions, prefix: str, title: str) -> None:
    print(f"\none-to-one matching (headline){title}:")
    print(f"{'condition':<10} {'precision':<18} {'recall':<18} {'tp':>4} {'fp':>4} {'(part)':>6} {'fn':>4} "
          f"{'tests':>6} {'pooled P':>8} {'pooled R':>8}")
    for condition in conditions:
        sub = [r for r in rows if r["condition"] == condition]
        tp, fp, fn, part = (sum(r[prefix + k] for r in sub) for k in ("tp", "fp", "fn", "fp_partial"))
        tests = sum(r["n_tests"] for r in sub)
        pooled_p = f"{tp / (tp + fp):.2f}" if tp + fp else "-"
        pooled_r = f"{tp / (tp + fn):.2f}" if tp + fn else "-"
        print(f"{condition:<10} {_fmt([r[prefix + 'precision'] for r in sub]):<18} "
              f"{_fmt([r[prefix + 'recall'] for r in sub]):<18} "
              f"{tp:>4} {fp:>4} {part:>6} {fn:>4} {tests:>6} {pooled_p:>8} {pooled_r:>8}")
    print("(part): false positives in networks the source covers only in part (< 30 % of their voxels); "
          "counted in fp")
    print(f"constituent reading{title} (a declaration by an atom whose coefficient in the planted source is "
          ">= 0.2, with the matching sign, is correct):")
    print(f"{'condition':<10} {'precision':<18} {'recall':<18} {'tp':>4} {'fp':>4} {'fn':>4}")
    for condition in conditions:
        sub = [r for r in rows if r["condition"] == condition and r.get(prefix + "c_tp") is not None]
        if not sub:
            continue
        tp, fp, fn = (sum(r[prefix + k] for r in sub) for k in ("c_tp", "c_fp", "c_fn"))
        print(f"{condition:<10} {_fmt([r[prefix + 'c_precision'] for r in sub]):<18} "
              f"{_fmt([r[prefix + 'c_recall'] for r in sub]):<18} {tp:>4} {fp:>4} {fn:>4}")


if __name__ == "__main__":
    main()
