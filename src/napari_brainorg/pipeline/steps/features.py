"""Step ``features/<model>``: every artificial neuron's response per volume.

Reads
    the story step's words; the model (weights), or its untrained twin.
Writes
    ``features/<model>/`` (the extraction's own cache: responses, index, provenance)
    and ``features/<model>/word_activations.npy`` (float32, n_words x n_ans_all: every
    AN's activation per word of ``story/words.tsv`` before the HRF, all ANs in the
    model's order; read by the top-words step) when it fits in
    ``features.word_activations_max_gb`` (all stories of a model together; provenance.json's
    ``word_activations`` says whether it was kept, and why not). With several stories,
    ``features/<model>/<story>/`` per story (each z-scored on its own, each with its own
    ``word_activations.npy``), stacked in story order keeping the ANs that vary in every
    story, and ``features/<model>/an_index.tsv``. The untrained baseline keeps no word
    activations (no top words are listed for it).
Key
    the feature options (not where the model runs, nor the word activations' budget,
    which change no number), the model, the story step's key and the extraction's own
    cache key (which covers the model's weights).
"""

from __future__ import annotations

import numpy as np

from .._state import key_of
from ..context import StepContext, model_slug, resolve_device


def step_features(ctx: StepContext, words, model: str, untrained_seed: int | None = None):
    """``untrained_seed``: the baseline of the same architecture with random weights."""
    from ...features.extract import AN_FILES, extract_an_responses

    cfg = ctx.config
    slug = model_slug(model) + ("-untrained" if untrained_seed is not None else "")
    if isinstance(words, list):  # several stories: one extraction per story, stacked

        return features_stories(ctx, words, model, slug, untrained_seed)
    step = f"features/{slug}"
    # the extraction keys its own cache (story, model weights, options); this stamp adds
    # the checksums of its files, so a corrupted cache is recomputed, not trusted
    placement = {"device_map", "max_memory", "offload_folder"}
    if not ctx.cached(step, [_numeric_options(cfg), slug, ctx.keys["story"], untrained_seed],
                      [f"{step}/{name}" for name in AN_FILES]):
        (ctx.out / step / AN_FILES[-1]).unlink(missing_ok=True)
    if untrained_seed is not None:
        from ...features.untrained import load_untrained_model

        model = load_untrained_model(model, seed=untrained_seed, device=resolve_device(cfg.features.device),
                                     dtype=cfg.features.dtype)
    ans = extract_an_responses(
        words, model, tr=cfg.story.tr, n_volumes=cfg.story.n_volumes,
        site=cfg.features.site, alignment=cfg.features.alignment, context=cfg.features.context,
        device=resolve_device(cfg.features.device), dtype=cfg.features.dtype,
        **cfg.features.model_dump(include=placement),
        center_words=cfg.features.center_words, pause_labels=cfg.story.pause_labels,
        cache_dir=ctx.out / "features" / slug, progress=ctx.progress, cancel=ctx.cancel,
        word_activations_max_gb=cfg.features.word_activations_max_gb if untrained_seed is None else 0.0,
    )
    ctx.done(step)
    ctx.keys[step] = key_of(ctx.keys[step], str(ans.provenance.get("cache_key", "")))
    return ans


def _numeric_options(cfg) -> dict:
    """The feature options in the features step's key: not where the model runs
    (device_map, max_memory, offload_folder) nor the word activations' budget, which
    change no number."""
    return cfg.features.model_dump(mode="json", exclude={"models", "device_map", "max_memory", "offload_folder",
                                                         "word_activations_max_gb"})


def extract_story(ctx, words, model, slug: str, story, untrained_seed=None, word_activations_max_gb: float = 0.0):
    """One story's AN responses (the task "extraction per model x story").

    Cached by the extraction itself in ``features/<slug>/<story>/`` and stamped as step
    ``features/<slug>/<story>``; ``model`` may be a name or a model already loaded. The
    story's word activations are kept there when they take at most
    ``word_activations_max_gb`` GiB.

    Returns
    -------
    ans : ANResponses
        (story.n_volumes, n_ans), z-scored within the story.
    key : str
        The step's key (options, story, the extraction's own cache key).
    """
    from ...features.extract import AN_FILES, extract_an_responses

    cfg = ctx.config
    name = story.label
    step = f"features/{slug}/{name}"
    placement = {"device_map", "max_memory", "offload_folder"}
    if not ctx.cached(step, [_numeric_options(cfg), slug, ctx.keys["story"], untrained_seed, name],
                      [f"{step}/{f}" for f in AN_FILES]):
        (ctx.out / step / AN_FILES[-1]).unlink(missing_ok=True)
    ans = extract_an_responses(
        words, model, tr=story.tr, n_volumes=story.n_volumes, site=cfg.features.site,
        alignment=cfg.features.alignment, context=cfg.features.context, device=resolve_device(cfg.features.device),
        dtype=cfg.features.dtype, **cfg.features.model_dump(include=placement),
        center_words=cfg.features.center_words, pause_labels=story.pause_labels, cache_dir=ctx.out / step,
        word_activations_max_gb=word_activations_max_gb, progress=ctx.progress, cancel=ctx.cancel)
    ctx.done(step)
    return ans, key_of(ctx.keys[step], str(ans.provenance.get("cache_key", "")))


def stack_story_responses(per_story, names, site: str):
    """The stories' AN responses one after another (rows in story order).

    Only the ANs that vary in every story are kept (each story drops its own constant
    ANs); the others are listed in ``dropped`` with the reason.
    """
    import pandas as pd

    from ...features.extract import ANResponses

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

    cfg = ctx.config
    if untrained_seed is not None:
        from ...features.untrained import load_untrained_model

        model = load_untrained_model(model, seed=untrained_seed, device=resolve_device(cfg.features.device),
                                     dtype=cfg.features.dtype)
    from ...features.word_activations import WORD_ACTIVATIONS_FILE

    per_story, keys = [], []
    # the budget of the word activations holds for the model's stories together
    budget = cfg.features.word_activations_max_gb if untrained_seed is None else 0.0
    for words, story in zip(words_list, cfg.story_list):
        ans, key = extract_story(ctx, words, model, slug, story, untrained_seed, budget)
        per_story.append(ans)
        keys.append(key)
        kept = ctx.out / "features" / slug / story.label / WORD_ACTIVATIONS_FILE
        if kept.is_file():
            budget = max(0.0, budget - kept.stat().st_size / 1024 ** 3)
    stacked = stack_story_responses(per_story, [s.label for s in cfg.story_list], cfg.features.site)
    ctx.writer.write_table(f"features/{slug}/an_index.tsv", stacked.index)
    ctx.keys[f"features/{slug}"] = key_of(f"features/{slug}", *keys)
    return stacked
