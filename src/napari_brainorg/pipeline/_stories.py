"""Several stories per subject: the pipeline steps that read each story on its own.

With ``stories:`` in the configuration, every story is read, aligned and run through
the models on its own (its words go to its own volumes, with its own TR: the HRF
never carries one story into the next), then the stories' volumes are stacked in
story order. Downstream, ``ctx.runs`` = [(story, n_volumes, tr), ...] says where each
story's rows are; drifts and confounds are handled per run
(:mod:`napari_brainorg.encoding.stories`).

Result folder (besides the single-story files, which then cover every story)::

    story/stories.tsv                 story, source, onset, tr, n_volumes, first_volume, n_words
    story/<story>/words.tsv           that story's words (volume within the story)
    story/<story>/nuisance.tsv        that story's confounds
    story/words.tsv                   every story's words: story column, volume on the stacked axis
    story/nuisance.tsv                every story's confounds, stacked (volume on the stacked axis)
    features/<model>/<story>/         that story's AN responses (the extraction's own cache)
    features/<model>/an_index.tsv     the ANs kept in every story (the stacked columns)
"""

from __future__ import annotations

import warnings

import numpy as np

from ._state import key_of


def step_stories(ctx):
    """Read every story: words -> ``story/<story>/``; stacked tables; ``ctx.runs``.

    Returns
    -------
    words : list of WordEvents
        One per story, in order (pause labels removed).
    """
    import pandas as pd

    from ..features.alignment import volume_of_words
    from ..features.nuisance import PauseLabelsWarning, nuisance_regressors, remove_pause_labels
    from ..io.stimuli import read_story, read_story_onset
    from .run import story_file

    config = ctx.config
    alignment = config.features.alignment
    all_words, runs, rows, frames, nuisances, key_parts, inputs = [], [], [], [], [], [], []
    for cfg in config.story_list:
        onset = read_story_onset(cfg.events) if cfg.events else cfg.onset
        words = read_story(cfg.path, onset=onset)
        words, n_pause = remove_pause_labels(words, cfg.pause_labels)
        all_words.append(words)
        runs.append((cfg.label, cfg.n_volumes, cfg.tr))
        rows.append({"story": cfg.label, "source": words.source, "onset": onset, "tr": cfg.tr,
                     "n_volumes": cfg.n_volumes, "n_words": len(words), "n_pause_labels_removed": n_pause,
                     "n_words_in_scan": int(((words.onsets >= 0) & (words.onsets < cfg.n_volumes * cfg.tr)).sum())})
        key_parts.append([cfg.model_dump(mode="json", exclude={"path", "events"}), onset])
        inputs += [story_file(cfg.path), cfg.events]
    starts = np.cumsum([0] + [n for _, n, _ in runs])
    for row, start in zip(rows, starts[:-1]):
        row["first_volume"] = int(start)
    names = [r[0] for r in runs]
    outputs = ["story/words.tsv", "story/nuisance.tsv", "story/stories.tsv",
               *[f"story/{n}/{f}" for n in names for f in ("words.tsv", "nuisance.tsv")]]
    if ctx.cached("story", [key_parts, alignment], outputs, inputs=inputs):
        for n in names:
            nuisances.append(pd.read_csv(ctx.out / f"story/{n}/nuisance.tsv", sep="\t", index_col="volume"))
    else:
        for (name, n_volumes, tr), words, cfg, start in zip(runs, all_words, config.story_list, starts):
            df = words.to_dataframe()
            df["volume"] = volume_of_words(words.onsets, n_volumes, tr)
            ctx.writer.write_table(f"story/{name}/words.tsv", df)
            stacked = df.copy()
            stacked.insert(0, "story", name)
            stacked["volume"] = np.where(df["volume"] >= 0, df["volume"] + start, -1)
            frames.append(stacked)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PauseLabelsWarning)  # removed and warned above
                nuisance = nuisance_regressors(words, tr, n_volumes, alignment=alignment, pause_labels=None,
                                               min_pause=cfg.min_pause)
            ctx.writer.write_table(f"story/{name}/nuisance.tsv", nuisance.reset_index())
            nuisances.append(nuisance)
        ctx.writer.write_table("story/words.tsv", pd.concat(frames, ignore_index=True))
        ctx.writer.write_table("story/stories.tsv", pd.DataFrame(rows))
        ctx.writer.write_table("story/nuisance.tsv", _stack_nuisance(nuisances, names).reset_index())
        ctx.done("story", {"nuisance": nuisances[0].attrs.get("provenance", {})})
    ctx.runs = runs
    ctx.confounds = _stack_nuisance(nuisances, names)
    ctx.summary["story"] = {
        "source": " + ".join(str(r["source"]) for r in rows), "onset": rows[0]["onset"],
        "n_words": int(sum(r["n_words"] for r in rows)), "n_words_in_scan": int(sum(r["n_words_in_scan"] for r in rows)),
        "n_pause_labels_removed": int(sum(r["n_pause_labels_removed"] for r in rows)),
        "nuisance_regressors": [c for c in ctx.confounds.columns if c != "story"]}
    ctx.summary["stories"] = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in rows]
    return all_words


def _stack_nuisance(tables, names):
    """The stories' confounds one after another, on the stacked volume axis; a column
    that a story lacks is 0 there."""
    import pandas as pd

    parts = []
    start = 0
    for table, name in zip(tables, names):
        t = table.reset_index(drop=True).select_dtypes("number")
        t.index = np.arange(start, start + len(t))
        start += len(t)
        parts.append(t)
    out = pd.concat(parts).fillna(0.0)
    out.index.name = "volume"
    return out


def extract_story(ctx, words, model, slug: str, story, untrained_seed=None):
    """One story's AN responses (the task "extraction per model x story").

    Cached by the extraction itself in ``features/<slug>/<story>/`` and stamped as step
    ``features/<slug>/<story>``; ``model`` may be a name or a model already loaded.

    Returns
    -------
    ans : ANResponses
        (story.n_volumes, n_ans), z-scored within the story.
    key : str
        The step's key (options, story, the extraction's own cache key).
    """
    from ..features.extract import AN_FILES, extract_an_responses
    from .run import _device

    cfg = ctx.config
    name = story.label
    step = f"features/{slug}/{name}"
    # where the model runs (device_map, max_memory, offload_folder) changes no number
    placement = {"device_map", "max_memory", "offload_folder"}
    if not ctx.cached(step, [cfg.features.model_dump(mode="json", exclude={"models", *placement}), slug,
                             ctx.keys["story"],
                             untrained_seed, name],
                      [f"{step}/{f}" for f in AN_FILES]):
        (ctx.out / step / AN_FILES[-1]).unlink(missing_ok=True)
    ans = extract_an_responses(
        words, model, tr=story.tr, n_volumes=story.n_volumes, site=cfg.features.site,
        alignment=cfg.features.alignment, context=cfg.features.context, device=_device(cfg.features.device),
        dtype=cfg.features.dtype, **cfg.features.model_dump(include=placement),
        center_words=cfg.features.center_words, pause_labels=story.pause_labels, cache_dir=ctx.out / step,
        progress=ctx.progress, cancel=ctx.cancel)
    ctx.done(step)
    return ans, key_of(ctx.keys[step], str(ans.provenance.get("cache_key", "")))


def stack_story_responses(per_story, names, site: str):
    """The stories' AN responses one after another (rows in story order).

    Only the ANs that vary in every story are kept (each story drops its own constant
    ANs); the others are listed in ``dropped`` with the reason.
    """
    import pandas as pd

    from ..features.extract import ANResponses

    ids = [list(zip(a.index["layer"].astype(int), a.index["unit"].astype(int))) for a in per_story]
    common = set(ids[0]).intersection(*map(set, ids[1:]))
    first_cols = np.array([i for i, k in enumerate(ids[0]) if k in common], dtype=int)
    order = [ids[0][i] for i in first_cols]
    blocks = []
    for ans, story_ids in zip(per_story, ids):
        where = {k: i for i, k in enumerate(story_ids)}
        blocks.append(ans.responses[:, [where[k] for k in order]])
    index = per_story[0].index.iloc[first_cols].reset_index(drop=True)
    dropped_parts = [a.dropped.assign(story=n) for a, n in zip(per_story, names) if len(a.dropped)]
    missing = sorted(k for k in set().union(*map(set, ids)) if k not in common)
    if missing:
        dropped_parts.append(pd.DataFrame({"layer": [k[0] for k in missing], "unit": [k[1] for k in missing],
                                           "site": site, "reason": "no variance in another story", "story": ""}))
    dropped = pd.concat(dropped_parts, ignore_index=True) if dropped_parts else per_story[0].dropped
    provenance = dict(per_story[0].provenance)
    provenance.update({"stories": list(names),
                       "per_story": {n: {"n_volumes": a.n_volumes, "cache_key": a.provenance.get("cache_key"),
                                         "n_dropped": int(len(a.dropped))} for n, a in zip(names, per_story)},
                       "stacking": "each story extracted and z-scored on its own; ANs varying in every story kept; "
                                   "rows stacked in story order"})
    return ANResponses(responses=np.ascontiguousarray(np.concatenate(blocks, axis=0), dtype=np.float32),
                       index=index, dropped=dropped, provenance=provenance)


def features_stories(ctx, words_list, model, slug: str, untrained_seed=None):
    """AN responses of every story (:func:`extract_story`), stacked (:func:`stack_story_responses`);
    writes ``features/<slug>/an_index.tsv`` and keys ``features/<slug>`` by every story's key."""
    from .run import _device

    cfg = ctx.config
    if untrained_seed is not None:
        from ..features.untrained import load_untrained_model

        model = load_untrained_model(model, seed=untrained_seed, device=_device(cfg.features.device),
                                     dtype=cfg.features.dtype)
    per_story, keys = [], []
    for words, story in zip(words_list, cfg.story_list):
        ans, key = extract_story(ctx, words, model, slug, story, untrained_seed)
        per_story.append(ans)
        keys.append(key)
    stacked = stack_story_responses(per_story, [s.label for s in cfg.story_list], cfg.features.site)
    ctx.writer.write_table(f"features/{slug}/an_index.tsv", stacked.index)
    ctx.keys[f"features/{slug}"] = key_of(f"features/{slug}", *keys)
    return stacked


def fmri_stories(ctx):
    """Every story's runs of the user's data (images, regions or BIDS), stacked per subject."""
    from ..io.fmri import concat_story_runs, find_bids_runs, load_fmri, load_region_timeseries
    from .run import _FMRI_PATHS
    from .validate import story_runs

    cfg = ctx.config
    fc = cfg.fmri
    per_story = {}
    inputs = []
    subjects = fc.subjects
    for story in cfg.story_list:
        name = story.label
        if fc.regions:
            tables = story_runs(cfg, "regions")[name]
            inputs += tables
            per_story[name] = load_region_timeseries(tables, n_volumes=story.n_volumes, subjects=fc.subjects)
            continue
        if fc.bids is not None:
            task = fc.bids.task.get(name, name) if isinstance(fc.bids.task, dict) else fc.bids.task
            found = find_bids_runs(fc.bids.root, task, subjects=fc.bids.subjects, derivative=fc.bids.derivative,
                                   space=fc.bids.space)
            images = [r["bold"] for r in found]
            subjects = [r["subject"] for r in found]
        else:
            images = story_runs(cfg, "images")[name]
        inputs += images
        per_story[name] = load_fmri(images, mask=fc.mask, n_volumes=story.n_volumes, subjects=subjects,
                                    tr=story.tr, progress=ctx.progress, cancel=ctx.cancel)
    mask_file = None if fc.mask == "mni" else fc.mask
    ctx.key("fmri", [fc.model_dump(mode="json", exclude=_FMRI_PATHS), fc.mask == "mni", subjects,
                     [(s.label, s.n_volumes, s.tr) for s in cfg.story_list]], inputs=[*inputs, mask_file])
    return concat_story_runs(per_story, {s.label: s.tr for s in cfg.story_list})


def step_top_words_stories(ctx, words_list, model: str, slug: str, codes, index, step: str, outputs) -> None:
    """``top_words/<model>`` over every story: each story's words through its own HRF
    operator, stacked (volumes on the stacked axis, a ``story`` column). The caller has
    checked the step's cache (``step``, ``outputs``: ``top_words.tsv``, ``word_responses.npy``)."""
    import scipy.sparse as sp

    from ..analyses.top_words import top_words_table, word_atom_responses, word_level_activations
    from ..features.alignment import hrf_operator, volume_of_words
    from ..features.extract import load_an_responses
    from ..features.sites import an_index
    from ._top_words import TOP_WORDS
    from .run import _device

    cfg = ctx.config
    used = set(zip(index["layer"].astype(int), index["unit"].astype(int)))
    Ws, Hs, onsets, tokens, volumes, stories = [], [], [], [], [], []
    start = 0
    for words, (name, n_volumes, tr) in zip(words_list, ctx.runs):
        prov = load_an_responses(ctx.out / "features" / slug / name).provenance
        full = an_index(int(prov["n_layers"]), list(prov["units_per_layer"]), prov["site"])
        keys = list(zip(full["layer"].astype(int), full["unit"].astype(int)))
        keep = np.array([k in used for k in keys])
        # the columns of the codes follow ``index``; word_level_activations follows ``full``
        pos = {k: i for i, k in enumerate(k for k, kk in zip(keys, keep) if kk)}
        reorder = np.array([pos[(int(a), int(b))] for a, b in zip(index["layer"], index["unit"])])
        W = word_level_activations(words, model, keep=keep, site=cfg.features.site, context=cfg.features.context,
                                   device=_device(cfg.features.device), dtype=cfg.features.dtype,
                                   progress=ctx.progress, cancel=ctx.cancel)
        W = np.array(W, dtype=np.float64)[:, reorder]
        if cfg.features.center_words:
            has_tokens = np.any(W != 0, axis=1)
            if has_tokens.any():
                W[has_tokens] -= W[has_tokens].mean(axis=0)
        Ws.append(W)
        Hs.append(sp.csr_matrix(np.asarray(hrf_operator(words.onsets, n_volumes, tr, method=cfg.features.alignment))))
        onsets.append(words.onsets)
        tokens += list(words.words)
        vol = volume_of_words(words.onsets, n_volumes, tr)
        volumes.append(np.where(vol >= 0, vol + start, -1))
        stories += [name] * len(words)
        start += n_volumes
    H = sp.block_diag(Hs, format="csr").toarray()
    responses = word_atom_responses(np.concatenate(Ws), H, codes)
    table = top_words_table(responses, tokens, np.concatenate(onsets), volumes=np.concatenate(volumes),
                            n_top=TOP_WORDS)
    if "volume" in table:
        bounds = np.cumsum([0] + [n for _, n, _ in ctx.runs])
        table.insert(0, "story", [ctx.runs[int(np.searchsorted(bounds, v, side="right")) - 1][0] if v >= 0 else ""
                                  for v in table["volume"]])
    ctx.writer.write_npy(outputs[1], responses.astype(np.float32))
    ctx.writer.write_table(outputs[0], table)
    ctx.done(step)
