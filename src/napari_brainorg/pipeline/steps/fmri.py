"""Step ``fmri``: the user's fMRI (NIfTI images, region tables or a BIDS data set).

Reads
    ``fmri.images`` / ``fmri.regions`` / ``fmri.bids`` and the mask (every story's runs
    with several stories, stacked per subject).
Writes
    nothing: the data are read and checked (NaN, damaged files, lengths) before any model
    runs, and their contents key the steps that use them.
Key
    the fMRI options except paths, the subjects, the runs' lengths and TRs, and the
    contents of every image, table and mask.

Simulated subjects come from :mod:`.simulation` instead.
"""

from __future__ import annotations

from ..context import StepContext

#: fMRI options that are paths: their contents enter the key instead
_FMRI_PATHS = {"images", "regions", "bids", "mask"}


def step_fmri(ctx: StepContext):
    """The user's fMRI, read and checked; keys step ``fmri`` by the data's contents.

    Returns
    -------
    FMRIData
        Every subject's data (voxels in a mask, or region time series), with several
        stories each subject's runs stacked in story order (``data.runs``).
    """
    from ...io.fmri import find_bids_runs, load_fmri, load_region_timeseries

    cfg = ctx.config
    fc = cfg.fmri
    if cfg.multi_story:  # every story's runs, stacked per subject
        data = fmri_stories(ctx)
        ctx.summary["fmri"] = {"kind": data.kind, "subjects": data.subjects, "sources": data.sources,
                               "notes": data.notes, "simulated": False,
                               "runs": [{"story": n, "n_volumes": v, "tr": t} for n, v, t in data.runs]}
        return data

    if fc.regions:
        ctx.key("fmri", [fc.model_dump(mode="json", exclude=_FMRI_PATHS), cfg.story.n_volumes],
                inputs=list(fc.regions))
        data = load_region_timeseries(fc.regions, n_volumes=cfg.story.n_volumes, subjects=fc.subjects)
    else:
        images = list(fc.images)
        subjects = fc.subjects
        if fc.bids is not None:
            runs = find_bids_runs(fc.bids.root, fc.bids.task, **fc.bids.selection())
            images = [r["bold"] for r in runs]
            subjects = [r["subject"] for r in runs]
        mask_file = None if fc.mask == "mni" else fc.mask
        ctx.key("fmri", [fc.model_dump(mode="json", exclude=_FMRI_PATHS), fc.mask == "mni", subjects,
                         cfg.story.n_volumes, cfg.story.tr],
                inputs=[*images, mask_file])
        data = load_fmri(images, mask=fc.mask, n_volumes=cfg.story.n_volumes, subjects=subjects,
                         tr=cfg.story.tr, progress=ctx.progress, cancel=ctx.cancel)
    ctx.summary["fmri"] = {"kind": data.kind, "subjects": data.subjects, "sources": data.sources,
                           "notes": data.notes, "simulated": False}
    return data


def fmri_stories(ctx):
    """Every story's runs of the user's data (images, regions or BIDS), stacked per subject."""
    from ...io.fmri import concat_story_runs, find_bids_runs, load_fmri, load_region_timeseries
    from ..validate import story_runs

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
            found = find_bids_runs(fc.bids.root, task, **fc.bids.selection())
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
