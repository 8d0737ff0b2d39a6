"""Step ``networks/<model>``: each atom's link with each functional brain network.

Reads
    the encoding step's group maps (and the atoms and fMRI for the stimulus test), the
    atlases (resampled to the data's grid), the story step's confounds.
Writes
    ``networks/<model>/association_activated.tsv``, ``association_deactivated.tsv`` (one
    row per atom × network: statistic, p, q, effect rules, display overlaps) and
    ``test.json`` (the test and its criterion); ``networks/atlas_<name>.nii.gz`` and
    ``.tsv`` (the atlas on the data's grid, with its colours, for display). After every
    model: the FDR across models (:func:`fdr_across_models`) rewrites the tables, and
    :func:`annotate_atoms_table` writes ``atoms/<model>/atoms.tsv``.
Key
    the networks options, the atlases (names and contents), the encoding step's key, the
    seed and the association test's revision.
"""

from __future__ import annotations

import json

import numpy as np

from ..context import StepContext, atlas_file, atlas_slug, baseline_slugs, clear_output
from ..study import map_rows, on_rows, study_confounds


def load_atlases(ctx: StepContext, data) -> dict:
    """Every atlas of ``networks.atlases`` on the data's grid (none for region data), by its
    name in the folder; each also written for display (``networks/atlas_<name>.*``)."""
    from ...io.atlases import load_fbn

    atlases = {}
    for name in ([] if data.kind == "regions" else ctx.config.networks.atlases):
        atlas = load_fbn(name, data.mask_img)
        atlases[atlas_slug(name)] = atlas  # tables, figures and display files name it so
        _write_atlas_display(ctx, atlas_slug(name), atlas, data.mask_img)
    return atlases


def tested_networks(data, atlases: dict) -> tuple[np.ndarray, list[str], list[str]]:
    """The networks the stimulus test reads: every atlas's networks made disjoint (each voxel
    to its highest network), or each region its own network.

    Returns
    -------
    networks : ndarray of shape (n_networks, n_voxels or n_regions), bool
    network_names, atlas_names : list of str
    """
    from ...networks.association import disjoint_networks

    if data.kind == "regions":
        names = list(data.region_names or [f"region_{i}" for i in range(data.data[0].shape[1])])
        return np.eye(len(names), dtype=bool), names, ["regions"] * len(names)
    names = [(a, n) for a, atlas in atlases.items() for n in atlas.network_names]
    networks = np.concatenate([disjoint_networks(atlas.maps, atlas.masks()) for atlas in atlases.values()])
    return networks, [n for _, n in names], [a for a, _ in names]


def step_networks(ctx: StepContext, data, group: dict, slug: str, atoms: np.ndarray | None = None,
                  atlases: dict | None = None):
    """The association tables of ``slug`` (``{"activated": df, "deactivated": df}``).

    The stimulus test (``networks.test: stimulus``, the default) on the atoms' time
    courses against each network's (or region's) mean time series; the spatial test on
    the group maps otherwise. Region data have no spatial test: ``{}`` and a note.
    ``atlases``: :func:`load_atlases`'s, loaded here when not given.
    """
    import pandas as pd

    nc = ctx.config.networks
    regions = data.kind == "regions"
    if regions and (nc.test != "stimulus" or atoms is None):
        ctx.summary.setdefault("skipped", {})[f"networks/{slug}"] = (
            "region time series have no voxel maps for the spatial test; the stimulus test "
            "(networks.test 'stimulus') tests every atom x region")
        return {}
    step = f"networks/{slug}"
    rel = f"networks/{slug}"
    outputs = [f"{rel}/association_activated.tsv", f"{rel}/association_deactivated.tsv"]
    if atlases is None:
        atlases = load_atlases(ctx, data)
    from ...networks.association import TEST_REVISION

    if ctx.cached(step, [nc.model_dump(mode="json", exclude={"atlases"}),
                         ["regions"] if regions else [atlas_slug(a) for a in nc.atlases],
                         ctx.keys[f"encoding/{slug}"], ctx.config.seed, ["test revision", TEST_REVISION],
                         # the floor cells drawn further depend on the family pooled across models
                         ["fdr models", _fdr_models(ctx, slug)]], outputs,
                  inputs=[] if regions else [atlas_file(name) for name in nc.atlases]):
        summary = ctx.out / f"{rel}/test.json"
        if summary.exists():
            ctx.summary.setdefault("networks", {})[slug] = json.loads(summary.read_text())
        return {p: pd.read_csv(ctx.out / o, sep="\t") for p, o in zip(("activated", "deactivated"), outputs)}
    clear_output(ctx, rel)
    if regions:
        tables, criterion = _region_tables(ctx, data, atoms, slug)
    elif nc.test == "stimulus" and atoms is not None:
        tables, criterion = _stimulus_tables(ctx, data, group, atoms, atlases, slug)
    else:
        tables, criterion = _spatial_tables(ctx, data, group, atlases, slug)
    for part, out_rel in zip(("activated", "deactivated"), outputs):
        ctx.writer.write_table(out_rel, tables[part])
    ctx.writer.write_json(f"{rel}/test.json", criterion)
    ctx.summary.setdefault("networks", {})[slug] = criterion
    ctx.done(step)
    return tables


def _stimulus_tables(ctx: StepContext, data, group: dict, atoms: np.ndarray, atlases: dict, slug: str):
    """The stimulus test over every atlas's disjoint networks, with the display overlaps of
    the thresholded group maps beside each row."""
    import pandas as pd

    from ...networks.association import stimulus_association

    nc = ctx.config.networks
    networks, network_names, atlas_names = tested_networks(data, atlases)
    kwargs, confounds = _association_args(ctx, slug)
    atoms, fmri = _map_volumes(ctx, atoms, data, kwargs)
    table = stimulus_association(atoms, fmri, networks, network_names=network_names,
                                 atlas_names=atlas_names, **kwargs)
    maps = group["z"] if nc.map_stat == "z" else group["coef"]
    tables = {}
    for part in ("activated", "deactivated"):
        frames = []
        for name, atlas in atlases.items():
            sub = table[(table["direction"] == part) & (table["atlas"] == name)].reset_index(drop=True)
            sub.insert(3, "part", part)
            for col, values in _display_columns(maps, atlas, data.mask_img, part, nc).items():
                sub[col] = values
            frames.append(sub)
        tables[part] = pd.concat(frames, ignore_index=True)
    criterion = _criterion_record(ctx, table, nc, confounds, "atoms x networks x both directions, per atlas and model")
    criterion.update({"networks": "disjoint (each voxel to its highest network)",
                      "display_threshold": {"map": nc.map_stat, "threshold": nc.threshold}})
    return tables, criterion


def _region_tables(ctx: StepContext, data, atoms: np.ndarray, slug: str):
    """The stimulus test on region time series: every region is a network of its own.

    A region's series is its column, drifts and confounds removed and standardised, as
    a network's mean over standardised voxels is for voxel data; the null, the unique
    contribution, the group statistic and the FDR are the voxel test's.
    """
    from ...networks.association import stimulus_association

    nc = ctx.config.networks
    networks, names, atlas_names = tested_networks(data, {})
    kwargs, confounds = _association_args(ctx, slug)
    atoms, fmri = _map_volumes(ctx, atoms, data, kwargs)
    table = stimulus_association(atoms, fmri, networks, network_names=names, atlas_names=atlas_names, **kwargs)
    tables = {}
    for part in ("activated", "deactivated"):
        sub = table[table["direction"] == part].reset_index(drop=True)
        sub.insert(3, "part", part)
        tables[part] = sub
    criterion = _criterion_record(ctx, table, nc, confounds, "atoms x regions x both directions, per model")
    criterion["networks"] = "the regions of the region table (each its own network)"
    return tables, criterion


def _spatial_tables(ctx: StepContext, data, group: dict, atlases: dict, slug: str):
    """The spatial test: thresholded group maps against each network, spatial-shift null."""
    import pandas as pd

    from ...networks.overlap import associate_atoms

    nc = ctx.config.networks
    maps = group["z"] if nc.map_stat == "z" else group["coef"]
    n_perm = 500 if nc.n_permutations is None else nc.n_permutations
    tables = {}
    criterion = {}
    for part in ("activated", "deactivated"):
        frames = []
        for name, atlas in atlases.items():
            ctx.stage(f"networks {slug}", len(frames), len(atlases))
            df = associate_atoms(
                maps, atlas, data.mask_img, part=part, threshold_method="z" if nc.map_stat == "z" else "robust_z",
                threshold=nc.threshold, score=nc.score, n_permutations=n_perm, alpha=nc.alpha,
                min_score=nc.min_score, random_state=ctx.config.seed, progress=ctx.progress, cancel=ctx.cancel,
            )
            criterion = {"test": "spatial-shift", "criterion": df.attrs["criterion"], "n_permutations": n_perm}
            df.insert(0, "atlas", name)
            df["direction"] = part
            df["statistic"] = df[nc.score]
            df["test"] = "spatial-shift"
            frames.append(df)
        tables[part] = pd.concat(frames, ignore_index=True)
    return tables, criterion


def _association_args(ctx: StepContext, slug: str) -> dict:
    """The stimulus test's options, shared by voxel and region data."""
    nc = ctx.config.networks
    ec = ctx.config.encoding
    confounds = study_confounds(ctx, slug)
    return dict(tr=ctx.config.story.tr, confounds=None if confounds is None else confounds.to_numpy(np.float64),
                highpass_cutoff=ec.highpass_cutoff, null=nc.null,
                n_permutations=10_000 if nc.n_permutations is None else nc.n_permutations,
                n_refine=nc.n_refine, sequential_h=nc.sequential_h, fdr_models=_fdr_models(ctx, slug),
                contribution=nc.contribution, network_score=nc.network_score, moved=nc.moved,
                min_effect=nc.min_effect, min_relative_effect=nc.min_relative_effect,
                min_network_relative_effect=nc.min_network_relative_effect,
                min_network_relative_marginal=nc.min_network_relative_marginal, group_effects=ec.group_effects, min_subjects_random=ec.min_subjects_random, alpha=nc.alpha,
                random_state=ctx.config.seed, progress=ctx.progress, cancel=ctx.cancel), confounds


def _fdr_models(ctx: StepContext, slug: str) -> int:
    """How many models' tests the correction across models pools with ``slug``'s (1 for a baseline,
    corrected alone, or without ``networks.fdr_across_models``)."""
    models = ctx.config.features.models
    if not ctx.config.networks.fdr_across_models or slug in baseline_slugs(ctx.config).values():
        return 1
    return max(1, len(models))


def _map_volumes(ctx: StepContext, atoms: np.ndarray, data, kwargs: dict):
    """The atoms and fMRI the association test reads: with several stories, the volumes of
    encoding.map_stories, each run's drifts added to the confounds (``kwargs`` updated)."""
    if not ctx.config.multi_story:
        return atoms, data.data
    from ...encoding.stories import run_drift_basis

    rows, map_runs = map_rows(ctx)
    drifts = run_drift_basis(map_runs, ctx.config.encoding.highpass_cutoff)
    conf = kwargs["confounds"]
    kwargs["confounds"] = drifts if conf is None else np.column_stack([conf[rows], drifts])
    kwargs["highpass_cutoff"] = None  # the drifts are in the confounds
    kwargs["runs"] = [int(r[1]) for r in map_runs]  # each story's phases drawn on their own
    return on_rows(atoms, rows), [on_rows(Y, rows) for Y in data.data]


def _criterion_record(ctx: StepContext, table, nc, confounds, fdr_family: str) -> dict:
    """``test.json``: the test, its criterion, its draws and the FDR family."""
    record = {"test": table.attrs["test"], "criterion": table.attrs["criterion"],
              "n_permutations": table.attrs["n_permutations"], "n_refine": table.attrs.get("n_refine", 0),
              "sequential_h": table.attrs.get("sequential_h", 0), "n_draws": table.attrs.get("n_draws", 0),
              "null": table.attrs["null"],
              "group_effects": table.attrs["group_effects"], "contribution": table.attrs["contribution"],
              "network_score": nc.network_score, "moved": table.attrs["moved"], "fdr_family": fdr_family,
              "confounds": [] if confounds is None else list(confounds.columns)}
    if ctx.config.multi_story:
        record["stories"] = [r[0] for r in map_rows(ctx)[1]]
        record["drifts"] = "per story run (constant, trend, cosines), with the confounds"
    return record


def network_readouts(ctx: StepContext, data, per_model: dict, atlases: dict) -> None:
    """One readout per network of every model tested by the stimulus test
    (:func:`napari_brainorg.networks.readout.network_readout`), after the FDR across models.

    Writes ``networks/<model>/readout.tsv`` (per network: direction, main atom, the atoms of
    its driver with their weights and shares, the driver's held-out r with its CI) and adds
    ``role`` (main driver / part / counterweight) and ``network_direction`` (the direction
    the link is presented with: its network's) to the association tables; the networks
    steps are stamped again with them. ``summary["network_readouts"]``.
    """

    import pandas as pd

    from ...networks.readout import link_roles, network_readout

    nc = ctx.config.networks
    ec = ctx.config.encoding
    for i, (slug, res) in enumerate(per_model.items()):
        ctx.stage("networks: readouts", i, len(per_model))
        tables = res.get("tables") or {}
        if not tables or not all("effect_ok" in t.columns for t in tables.values()):
            continue  # the spatial test (or none): no time-course drivers to read
        networks, names, atlas_names = tested_networks(data, atlases)
        index = {(a, n): j for j, (a, n) in enumerate(zip(atlas_names, names))}
        declared: dict[int, list[int]] = {}
        for t in tables.values():
            for atlas, network, atom in t.loc[t["associated"].astype(bool), ["atlas", "network", "atom"]].itertuples(
                    index=False):
                declared.setdefault(index[(str(atlas), str(network))], []).append(int(atom))
        kwargs, _ = _association_args(ctx, slug)
        atoms, fmri = _map_volumes(ctx, res["atoms"], data, kwargs)
        readout = network_readout(atoms, fmri, networks, declared, tr=ctx.config.story.tr, network_names=names,
                                  atlas_names=atlas_names, confounds=kwargs["confounds"],
                                  highpass_cutoff=kwargs["highpass_cutoff"], network_score=nc.network_score,
                                  n_folds=ec.n_folds, gap=ec.gap)
        recurrence = _recurrence(ctx, data, slug, tables, networks, names, atlas_names)
        rel = f"networks/{slug}"
        for part, t in tables.items():
            roles, shown = link_roles(t, readout)
            tables[part] = t.assign(role=roles, network_direction=shown, recurrence=recurrence[part])
            ctx.writer.write_table(f"{rel}/association_{part}.tsv", tables[part])
        main = pd.concat(tables.values())
        main = main[main["role"] == "main driver"].set_index(["atlas", "network"])["recurrence"]
        readout["recurrence"] = [main.get((a, n), np.nan) for a, n in zip(readout["atlas"], readout["network"])]
        declared_recurrence = _declared_links(tables)["recurrence"].to_numpy(np.float64)
        if declared_recurrence.size and np.isfinite(declared_recurrence).all():
            ctx.summary.setdefault("link_recurrence", {})[slug] = {
                "n_links": int(declared_recurrence.size), "n_recurring": int((declared_recurrence == 1).sum()),
                "mean": float(declared_recurrence.mean()),
                "n_restarts": int(ctx.config.atoms.n_restarts),
                "rule": "the link's matched atom in a dictionary learned from another start (Hungarian on |r|, "
                        "sign turned to correlate positively) has the link's sign and at least the weakest "
                        "declared |statistic| of the run"}
        ctx.writer.write_table(f"{rel}/readout.tsv", readout)
        ctx.done(rel, outputs=[f"{rel}/readout.tsv"])
        res["readout"] = readout
        ctx.summary.setdefault("network_readouts", {})[slug] = json.loads(readout.to_json(orient="records"))
    ctx.stage("networks: readouts", len(per_model), len(per_model))


def _recurrence(ctx: StepContext, data, slug: str, tables: dict, networks, names, atlas_names) -> dict:
    """Each declared link's recurrence over the dictionaries learned from other starts
    (``atoms/<model>/restart_atoms.npy``): the same test's observed statistics for each
    start's matched atoms (no null draws), a link recurring where its matched atom has
    the link's sign and at least the weakest declared |statistic|. NaN without restarts."""
    from ...networks.association import stimulus_association
    from ...networks.readout import link_recurrence

    path = ctx.out / f"atoms/{slug}/restart_atoms.npy"
    links = _declared_links(tables)
    if not path.exists() or not len(links):
        return {part: np.full(len(t), np.nan) for part, t in tables.items()}
    threshold = float(np.abs(links["statistic"]).min())
    restarts = np.load(path)
    restart_tables = []
    for i, restart in enumerate(restarts):
        ctx.stage(f"networks {slug}: links in re-learned dictionaries", i, len(restarts))
        kwargs, _ = _association_args(ctx, slug)
        kwargs.update(n_permutations=0, n_refine=0, progress=None)
        atoms, fmri = _map_volumes(ctx, restart, data, kwargs)
        restart_tables.append(stimulus_association(atoms, fmri, networks, network_names=names,
                                                   atlas_names=atlas_names, **kwargs))
    return {part: link_recurrence(t, restart_tables, threshold) for part, t in tables.items()}


def _declared_links(tables: dict):
    """Every declared link of the tables, both directions."""
    import pandas as pd

    links = pd.concat(list(tables.values()), ignore_index=True)
    return links[links["associated"].astype(bool)]


def _display_columns(maps, atlas, mask_img, part: str, nc) -> dict:
    """Descriptive overlap of the thresholded group map (display only, not tested)."""
    from ...networks.overlap import overlap_scores, threshold_atom_maps

    act, deact = threshold_atom_maps(maps, method="z" if nc.map_stat == "z" else "robust_z", value=nc.threshold)
    parts = act if part == "activated" else deact
    sign = 1.0 if part == "activated" else -1.0
    networks = atlas.masks()
    scores = overlap_scores(parts, networks, maps=sign * np.asarray(maps, np.float64),
                            network_maps=atlas.network_maps())
    return {"overlap_rate": scores["overlap_rate"].ravel(), "dice": scores["dice"].ravel(),
            "correlation": scores["correlation"].ravel(),
            "n_part_voxels": np.repeat(parts.sum(1), networks.shape[0]),
            "n_network_voxels": np.tile(networks.sum(1), parts.shape[0])}


def _write_atlas_display(ctx: StepContext, name: str, atlas, mask_img) -> None:
    """The atlas on the data's grid as a label image with its colours (the viewer's overlay)."""
    import pandas as pd

    ctx.writer.write_nifti(f"networks/atlas_{name}.nii.gz", atlas.label_image(mask_img))
    colors = np.asarray(atlas.colors, dtype=float)
    ctx.writer.write_table(f"networks/atlas_{name}.tsv", pd.DataFrame({
        "index": np.arange(1, len(atlas.network_names) + 1), "network": atlas.network_names,
        "r": colors[:, 0], "g": colors[:, 1], "b": colors[:, 2], "a": colors[:, 3],
    }))


def fdr_across_models(ctx: StepContext, per_model: dict, baseline: bool = False) -> None:
    """q over atoms x networks x directions x every model of the run, per atlas.

    The networks step corrects each model alone (kept as ``q_model``); with
    ``networks.fdr_across_models`` (default) the models' p-values are corrected together,
    so the run's claims about all its models hold at the FDR level. Baselines keep
    their own family: they are corrected less strictly than the models, which can only
    make "model beats baseline" harder. The tables are rewritten and the networks steps
    stamped again with them (the correction is redone from the p-values on every run).
    """
    from ...networks.association import family_fdr

    nc = ctx.config.networks
    tested = {slug: res for slug, res in per_model.items()
              if res.get("tables") and all("effect_ok" in t.columns for t in res["tables"].values())}
    if not tested:
        return
    regions = all(set(t["atlas"].astype(str)) == {"regions"} for res in tested.values()
                  for t in res["tables"].values())
    units, per = ("regions", "") if regions else ("networks", ", per atlas")
    if nc.fdr_across_models and len(tested) > 1:
        family = f"atoms x {units} x both directions x models ({', '.join(tested)}){per}"
        corrected = family_fdr({slug: [res["tables"]["activated"], res["tables"]["deactivated"]]
                                for slug, res in tested.items()}, alpha=nc.alpha,
                               min_network_relative_effect=nc.min_network_relative_effect)
    else:
        family = (f"atoms x {units} x both directions{per}, "
                  + ("this baseline alone" if baseline else "each model alone" if len(tested) > 1 else "one model"))
        corrected = {slug: [t if "q_model" in t.columns else t.assign(q_model=t["q"])
                            for t in (res["tables"]["activated"], res["tables"]["deactivated"])]
                     for slug, res in tested.items()}
    for slug, (act, deact) in corrected.items():
        rel = f"networks/{slug}"
        tables = {"activated": act.assign(fdr_family=family), "deactivated": deact.assign(fdr_family=family)}
        for part, table in tables.items():
            ctx.writer.write_table(f"{rel}/association_{part}.tsv", table)
        record = dict(ctx.summary.get("networks", {}).get(slug) or {})
        if record:
            record["fdr_family"] = family
            if nc.fdr_across_models and len(tested) > 1 and "of one atlas;" in record.get("criterion", ""):
                record["criterion"] = record["criterion"].replace(
                    "of one atlas;", f"of one atlas and every model of the run ({', '.join(tested)});", 1)
            ctx.writer.write_json(f"{rel}/test.json", record)
            ctx.summary["networks"][slug] = record
        ctx.done(rel)
        per_model[slug]["tables"] = tables


def annotate_atoms_table(ctx: StepContext, slug: str, tables: dict, codes, index, atoms) -> None:
    """Write atoms.tsv: each atom's ANs and layers, and its associated networks (explorer).

    Rebuilt from the codes on every run, so it always matches this run's atoms and tables.
    """
    import pandas as pd

    from ...sparse.atoms import atoms_table

    table = atoms_table(codes, index)
    if ctx.confounds is not None and "word_rate" in ctx.confounds:
        table["r_word_rate"] = _correlations(atoms, ctx.confounds["word_rate"].to_numpy())
    info_path = ctx.out / f"atoms/{slug}/dictionary.json"
    per_atom = (json.loads(info_path.read_text()).get("reproducibility") or {}).get("per_atom") \
        if info_path.exists() else None
    if per_atom is not None and len(per_atom) == len(table):
        table["reproducibility"] = per_atom
    if not tables:
        ctx.writer.write_table(f"atoms/{slug}/atoms.tsv", table)
        return
    score = ctx.config.networks.score
    links = _declared_links(tables)
    # with a network readout a link is listed under its network's direction (a counterweight
    # of an activating driver is not a deactivation), and its role is named
    by = links["network_direction"] if "network_direction" in links.columns else links["direction"]
    shown = "statistic" if "statistic" in links.columns else score

    def describe(g):
        roles = g["role"] if "role" in g.columns else [""] * len(g)
        return "; ".join(f"{a}:{n} ({s:.2f}{'' if r in ('', 'main driver') else ', ' + r})"
                         for a, n, s, r in zip(g["atlas"], g["network"], g[shown], roles))

    for part in tables:
        assoc = links[by == part]
        names = assoc.groupby("atom").apply(describe, include_groups=False).to_dict() if len(assoc) else {}
        table[f"networks_{part}"] = [names.get(a, "") for a in table["atom"]]
    best = pd.concat([d.assign(part=p) for p, d in tables.items()])
    if score in best.columns:  # region tables have no thresholded-map overlap
        table["best_score"] = table["atom"].map(best.groupby("atom")[score].max()).fillna(0.0)
    ctx.writer.write_table(f"atoms/{slug}/atoms.tsv", table)


def _correlations(columns: np.ndarray, series: np.ndarray) -> np.ndarray:
    """Pearson r of each column of ``columns`` (n_volumes, k) with ``series`` (n_volumes,)."""
    a = columns - columns.mean(0)
    b = series - series.mean()
    den = np.sqrt((a * a).sum(0) * (b @ b))
    return np.where(den > 0, (b @ a) / np.where(den > 0, den, 1), 0.0)


def draw_budget(record: dict, nc) -> int:
    """The most draws a cell of this test can get, which sets the smallest p it can reach:
    the first draws, and with the phase null the further draws configured for the cells at
    the floor (``networks.n_refine``). Not the further draws this run made: a run whose
    floor cells the FDR declared already makes none, and its design could still declare."""
    first = int(record["n_permutations"])
    if record.get("null", nc.null) != "phase":
        return first
    return first + max(int(nc.n_refine or 0), int(record.get("n_refine") or 0))


def network_sensitivity(ctx: StepContext, data, per_model: dict, atlases: dict) -> None:
    """What each model's network test could find (:func:`napari_brainorg.networks.sensitivity.detectable_r2`):
    per atom × network the smallest driver R² declared with 80 % power, from the run's own
    subjects, volumes, atoms and mean network series, in the FDR family the test used.
    ``summary["sensitivity"][model]`` (numbers and a sentence the verdict says beside a null result)."""
    from ...networks.sensitivity import detectable_r2, sensitivity_summary
    from ..context import baseline_slugs

    nc = ctx.config.networks
    baselines = set(baseline_slugs(ctx.config).values())
    tested = {slug: res for slug, res in per_model.items()
              if res.get("tables") and all("effect_ok" in t.columns for t in res["tables"].values())}
    real = [slug for slug in tested if slug not in baselines]
    across = nc.fdr_across_models and len(real) > 1
    for i, slug in enumerate(real):
        ctx.stage("networks: sensitivity", i, len(real))
        record = ctx.summary.get("networks", {}).get(slug) or {}
        if not record.get("n_permutations"):
            continue  # no test was made (networks.n_permutations 0): no null result to qualify
        networks, names, atlas_names = tested_networks(data, atlases)
        kwargs, _ = _association_args(ctx, slug)
        atoms, fmri = _map_volumes(ctx, tested[slug]["atoms"], data, kwargs)
        # the family: atoms x the atlas's networks x both directions (x every model, corrected together)
        per_atlas = {a: atlas_names.count(a) for a in set(atlas_names)}
        n_tests = [2 * atoms.shape[1] * per_atlas[a] * (len(real) if across else 1) for a in atlas_names]
        n_draws = draw_budget(record, nc)
        r2 = detectable_r2(atoms, fmri, networks, tr=kwargs["tr"], confounds=kwargs["confounds"],
                           highpass_cutoff=kwargs["highpass_cutoff"], runs=kwargs.get("runs"),
                           network_score=nc.network_score, moved=record.get("moved", "conditional"),
                           n_tests=n_tests, alpha=nc.alpha, n_draws=n_draws, min_effect=nc.min_effect,
                           cancel=ctx.cancel)
        ctx.summary.setdefault("sensitivity", {})[slug] = sensitivity_summary(
            r2, n_subjects=len(fmri), n_volumes=atoms.shape[0], n_tests=max(n_tests), alpha=nc.alpha,
            network_names=names, atlas_names=None if data.kind == "regions" else atlas_names,
            unit="region" if data.kind == "regions" else "network voxel")
    ctx.stage("networks: sensitivity", len(real), len(real))
