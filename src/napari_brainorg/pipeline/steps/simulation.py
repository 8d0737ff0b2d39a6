"""Step ``simulate``: clearly labelled simulated subjects with a known planted truth.

Reads
    the driving model's ANs and atoms (``fmri.simulate.model``, default the first model),
    from which the planted sources are made (the atoms themselves, signed means of
    member ANs, or the atoms of a dictionary learned again on other ANs).
Writes
    ``simulated/`` (each subject's BOLD image, ``mask.nii.gz``, ``true_r2.nii.gz``,
    ``planted_sources.npy``, ``truth.json``: which source drives which network, with
    which sign).
Key
    the simulation options, the driving model's atoms key, the atlases, the TR, the
    story runs and the simulator's revision.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..config import PipelineConfig
from ..context import StepContext, model_slug, read_stamp


def driving_model(config: PipelineConfig) -> str:
    """The model whose ANs drive the simulated subjects (``fmri.simulate.model``, default the first)."""
    sc = config.fmri.simulate
    slugs = [model_slug(m) for m in config.features.models]
    slug = model_slug(sc.model) if sc is not None and sc.model else slugs[0]
    if slug not in slugs:
        raise ValueError(f"fmri.simulate.model {sc.model!r} is not among features.models {config.features.models}.")
    return slug


def planting_of(ctx: StepContext, slug: str, ans, atoms, codes) -> dict:
    """What the simulation builds its sources from: the ANs the atoms were learned on."""
    columns = np.load(ctx.out / f"atoms/{slug}/columns.npy")
    return {"slug": slug, "atoms": np.asarray(atoms, np.float64), "codes": codes,
            "responses": np.asarray(ans.responses[:, columns])}


def _planted_sources(ctx: StepContext, planting: dict) -> tuple[np.ndarray, dict]:
    """Candidate source time courses from the driving model's ANs, and how they were made."""
    from ...simulate import an_mix_sources

    sc = ctx.config.fmri.simulate
    atoms, codes, responses = planting["atoms"], planting["codes"], planting["responses"]
    if sc.sources == "atoms":
        return atoms, {"kind": "atoms", "note": "the analysis' own atoms (an easy simulation)"}
    if sc.sources == "an_mix":
        sources, info = an_mix_sources(responses, codes, range(atoms.shape[1]), n_members=sc.n_members,
                                       seed=sc.seed)
        return sources, {"kind": "an_mix", "n_members": sc.n_members, "model": planting["slug"],
                         "note": "signed mean of n_members ANs drawn among the members of one atom each",
                         "members": {str(i): d for i, d in enumerate(info)}}
    if sc.sources == "random_an_mix":
        from ...simulate import random_an_mix_sources

        # as many candidates as atoms: distinct_sources picks the planted ones among them
        sources, info = random_an_mix_sources(responses, atoms.shape[1], n_members=sc.n_members, seed=sc.seed)
        return sources, {"kind": "random_an_mix", "n_members": sc.n_members, "model": planting["slug"],
                         "note": "sum of n_members random ANs with random signs and weights (no atom's members)",
                         "members": {str(i): d for i, d in enumerate(info)}}
    from ...sparse.dictionary import SparseDictionary

    ac = ctx.config.atoms
    rng = np.random.default_rng(sc.seed + 1)
    n_ans = responses.shape[1]
    cols = np.sort(rng.choice(n_ans, size=max(int(round(sc.relearn_fraction * n_ans)), ac.n_atoms), replace=False))
    est = SparseDictionary(n_atoms=ac.n_atoms, alpha=ac.alpha, max_iter=ac.max_iter, tol=ac.tol,
                           random_state=ac.seed + 1000 + sc.seed, backend=ac.backend, init="random")
    est.fit(np.ascontiguousarray(responses[:, cols].T), progress=ctx.progress, cancel=ctx.cancel)
    return np.asarray(est.atoms_, np.float64), {
        "kind": "relearned", "model": planting["slug"], "fraction": sc.relearn_fraction,
        "n_ans_used": int(cols.size), "seed": int(ac.seed + 1000 + sc.seed), "init": "random",
        "note": "atoms of a dictionary learned again from another start on a random subset of the ANs"}


# Default plant: sources that activate and deactivate networks of two atlases, chosen
# among those that cover few other networks in part (the Smith maps overlap one another;
# a network covered by 5-30 % is neither clearly driven nor clearly not). Each source
# drives one network; truth.json lists what that means in every scored atlas (Smith
# auditory also covers 39 % of Yeo somatomotor and 42 % of Yeo ventral attention).
_DEFAULT_PLANT = [("smith10:auditory", +1), ("yeo7:Limbic", -1), ("smith10:cerebellum", +1),
                  ("yeo7:Default", -1), ("yeo7:Frontoparietal", +1), ("yeo7:Dorsal attention", -1)]


def _default_links(sources: list[int], atlas: str) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Assign each chosen source one network and a sign (see ``_DEFAULT_PLANT``)."""
    from ...datasets import BUNDLED_ATLASES, atlas_labels

    if atlas == "smith10":
        plant = _DEFAULT_PLANT
    else:
        names = atlas_labels(atlas) if atlas in BUNDLED_ATLASES else []
        if not names:
            raise ValueError(f"fmri.simulate.links is needed for atlas {atlas!r} (no bundled network names).")
        plant = [(f"{atlas}:{n}", +1 if i % 2 == 0 else -1) for i, n in enumerate(names)]
    links: dict[int, list[str]] = {}
    negative: dict[int, list[str]] = {}
    for i, src in enumerate(sources):
        net, sign = plant[i % len(plant)]
        (links if sign > 0 else negative)[int(src)] = [net]
    return links, negative


def load_simulated_subjects(config: PipelineConfig, sim_dir: Path):
    """The simulated subjects written in ``sim_dir`` as the analysis reads them.

    With several stories, each subject's images (one per story) are stacked in the
    configuration's story order.

    Returns
    -------
    FMRIData
    """
    from ...io.fmri import concat_story_runs, load_fmri

    def load(pattern, n_volumes, tr):
        images = sorted(Path(sim_dir).glob(pattern))
        return load_fmri([str(p) for p in images], mask=str(Path(sim_dir) / "mask.nii.gz"), n_volumes=n_volumes,
                         tr=tr, subjects=[p.name.split("_")[0] for p in images])

    if not config.multi_story:
        return load("sub-*_bold.nii.gz", config.story.n_volumes, config.story.tr)
    per_story = {st.label: load(f"sub-*_task-{st.label}_sim_bold.nii.gz", st.n_volumes, st.tr)
                 for st in config.stories}
    return concat_story_runs(per_story, {st.label: st.tr for st in config.stories})


def step_simulation(ctx: StepContext, planting: dict):
    """Simulate the subjects (or reuse them) and read them as the analysis reads fMRI.

    Returns
    -------
    data : FMRIData
    truth : dict
        ``simulated/truth.json``: the planted sources, links and their signs.
    """
    from ...simulate import SIMULATOR_REVISION, SimulationPlan, distinct_sources, simulate_fmri, write_simulation

    cfg = ctx.config
    sc = cfg.fmri.simulate
    slug = planting["slug"]
    sim_dir = ctx.out / "simulated"
    key_parts = [sc.model_dump(mode="json"), ctx.keys[f"atoms/{slug}"], list(cfg.networks.atlases), cfg.story.tr,
                 ["simulator revision", SIMULATOR_REVISION]]
    runs = ctx.runs if cfg.multi_story else None
    if runs:
        key_parts.append([list(r) for r in runs])
    stamp = read_stamp(ctx, "simulate")
    if not ctx.cached("simulate", key_parts, sorted(stamp.get("outputs", {})) or ["simulated/truth.json"]):
        # nothing of an earlier simulation may be read as a subject of this one, and its
        # stamp's files (another number of subjects) are not this step's outputs
        shutil.rmtree(sim_dir, ignore_errors=True)
        ctx.forget_outputs("simulate")
        sources, info = _planted_sources(ctx, planting)
        if sc.links is None and sc.negative_links is None:
            chosen = distinct_sources(sources, sc.n_links) if sc.n_links else []
            links, negative = _default_links(chosen, sc.atlas)
        else:
            links, negative = dict(sc.links or {}), dict(sc.negative_links or {})
        plan = SimulationPlan(
            links=links, negative_links=negative, atlas=sc.atlas, truth_atlases=list(cfg.networks.atlases),
            n_subjects=sc.n_subjects, r2_range=(sc.r2_min, sc.r2_max), ar1_grey=sc.ar1_grey,
            ar1_other=sc.ar1_other, hrf_delay_s=sc.hrf_delay_s, hrf_dispersion_s=sc.hrf_dispersion_s,
            fluctuation_atlases=list(sc.fluctuation_atlases), fluctuation_share=sc.fluctuation_share,
            seed=sc.seed, resolution_mm=sc.resolution_mm)
        sim = simulate_fmri(sources, plan, tr=cfg.story.tr, source_info=info, runs=runs, progress=ctx.progress,
                            cancel=ctx.cancel)
        written = write_simulation(sim, sim_dir, cancel=ctx.cancel)
        ctx.done("simulate", outputs=[str(Path(p).relative_to(ctx.out)) for p in written])
    ctx.keys["fmri"] = ctx.keys["simulate"]
    data = load_simulated_subjects(cfg, sim_dir)
    truth = json.loads((sim_dir / "truth.json").read_text())
    ctx.summary["fmri"] = {"kind": "voxels", "subjects": data.subjects, "simulated": True,
                           "driving_model": slug, "sources": truth["sources"].get("kind"),
                           "planted_links": truth.get("planted_links"), "notes": data.notes}
    return data, truth
