"""The study as the steps read it: its story runs, the volumes the maps use, the
high-pass applied to data and regressors, the nuisance regressors, and the subjects'
confidence interval. Shared by the encoding, networks and report steps."""

from __future__ import annotations

import numpy as np

from .config import PipelineConfig
from .context import StepContext, baseline_slugs


def study_runs(config: PipelineConfig) -> list[tuple[str, int, float]]:
    """The story runs of ``config``, [(story, n_volumes, tr), ...] in the order their
    volumes are stacked (one for a single story)."""
    return [(s.label, s.n_volumes, s.tr) for s in config.story_list]


def highpass_study(ctx: StepContext, Y: np.ndarray) -> np.ndarray:
    """``encoding.highpass_cutoff`` applied to ``Y`` (n_volumes, n_columns): over the story,
    or within each story's run when there are several (its own TR, drifts and mean)."""
    from ..encoding.preprocessing import highpass

    ec = ctx.config.encoding
    runs = study_runs(ctx.config)
    if len(runs) > 1:
        from ..encoding.stories import highpass_runs

        return highpass_runs(np.array(Y, np.float64), runs, ec.highpass_cutoff, copy=False)
    return highpass(Y, ctx.config.story.tr, cutoff=ec.highpass_cutoff) if ec.highpass_cutoff \
        else np.asarray(Y, np.float64)


def map_rows(ctx: StepContext) -> tuple[np.ndarray, list]:
    """The volumes (rows) and runs the atom maps and association tests use:
    ``encoding.map_stories``, by default every story."""
    names = ctx.config.encoding.map_stories
    runs = study_runs(ctx.config)
    n = sum(r[1] for r in runs)
    if names is None or len(runs) < 2:
        return np.arange(n), runs
    from ..encoding.stories import run_rows

    return run_rows(runs, names), [r for r in runs if r[0] in names]


def on_rows(a, rows: np.ndarray):
    """``a[rows]`` (the map volumes of :func:`map_rows`), or ``a`` itself when ``rows`` is every
    volume (the default): no copy of a subject's fMRI per model and step."""
    return a if len(rows) == len(a) else a[rows]


def study_confounds(ctx: StepContext, slug: str | None = None):
    """The story's nuisance regressors (word rate, word length / frequency, pauses,
    HRF-convolved like the ANs; ``story/nuisance.tsv``) when ``encoding.confounds`` is on;
    None otherwise (then only the drifts are nuisance), and None for the nuisance
    baseline, whose atoms they are. Constant columns are dropped."""
    if not ctx.config.encoding.confounds or (slug is not None and slug == baseline_slugs(ctx.config).get("nuisance")):
        return None
    table = getattr(ctx, "confounds", None)
    if table is None:
        return None
    table = table.select_dtypes("number")
    if len(table) != sum(r[1] for r in ctx.runs or [(None, ctx.config.story.n_volumes)]) or table.shape[1] == 0:
        return None
    table = table.loc[:, table.std() > 0]
    return table if table.shape[1] else None


def encoding_confounds(ctx: StepContext, slug: str):
    """The confound values (n_volumes, n_confounds) of ``slug``'s encoding, or None."""
    confounds = study_confounds(ctx, slug)
    return None if confounds is None else confounds.to_numpy(np.float64)


def subject_ci(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over subjects (axis 0) and its t confidence interval (NaN with one subject)."""
    from scipy import stats as sps

    values = np.asarray(values, np.float64)
    n = values.shape[0]
    mean = values.mean(0)
    if n < 2:
        return mean, np.full_like(mean, np.nan), np.full_like(mean, np.nan)
    half = sps.t.ppf(0.5 + level / 2, n - 1) * values.std(0, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def set_map_space(ctx: StepContext, data):
    """Where this run's maps lie (:class:`~napari_brainorg.io.results.MapSpace`): kept on the
    writer (names and header codes of every map it writes) and in ``summary["space"]``.

    The ``task-`` label is the BIDS task, else the story (several: joined); the space is
    the inputs' own ``space-`` entity, else ``MNI152NLin6Asym`` on the bundled template's
    grid (the ``mni`` mask, and every simulation); the header code is 4 (MNI) there, else
    the input images' own.
    """
    from ..io._naming import bids_label, map_space

    cfg = ctx.config
    bids = cfg.fmri.bids
    if bids is not None and isinstance(bids.task, str):
        task = bids.task
    else:
        labels = [bids_label(s.label) for s in cfg.story_list]
        task = labels[0] + "".join(label[:1].upper() + label[1:] for label in labels[1:])
    if data.kind != "voxels" or data.mask_img is None:
        space = None
    else:
        # "story: path + story: path" with several stories: every path
        sources = [part.split(": ", 1)[-1] for src in data.sources for part in str(src).split(" + ")]
        space = map_space(task, data.mask_img, template_grid=cfg.fmri.simulate is not None or cfg.fmri.mask == "mni",
                          sources=sources[:1])
        ctx.summary["space"] = space.as_dict()
    ctx.writer.space = space
    return space
