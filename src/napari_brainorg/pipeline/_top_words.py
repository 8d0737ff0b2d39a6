"""Pipeline step ``top_words/<model>``: the words that most activate and suppress each atom.

Runs the model over the story once more (word-level activations are not kept by the
features step: for a large model they would be several GB), reads each atom's
word-level response out of them with the atoms' codes
(:func:`napari_brainorg.analyses.top_words.word_atom_responses`) and writes

- ``atoms/<model>/word_responses.npy``: float32 (n_words, k), each atom's response to
  each word of ``story/words.tsv`` (same row order), before the HRF;
- ``atoms/<model>/top_words.tsv``: per atom and direction the ``TOP_WORDS`` strongest
  words with their onset, volume, response (z over words) and sentence context.

Keyed by the atoms step's key and the story's, like every step.
"""

from __future__ import annotations

import numpy as np

#: words listed per atom and direction
TOP_WORDS = 15


def step_top_words(ctx, words, model: str, slug: str, codes, index) -> None:
    """Write ``atoms/<slug>/top_words.tsv`` and ``word_responses.npy`` (see the module docstring).

    Parameters
    ----------
    ctx : _Context
    words : WordEvents
        The story's words as the features step read them.
    model : str
    slug : str
    codes : scipy.sparse matrix of shape (k, n_ans)
    index : DataFrame
        ``layer, unit`` of the ANs of ``codes`` (their column order).
    """
    from ..analyses.top_words import top_words_table, word_atom_responses, word_level_activations
    from ..features.alignment import hrf_operator, volume_of_words
    from ..features.extract import load_an_responses
    from ..features.sites import an_index
    from .run import _device

    cfg = ctx.config
    rel = f"atoms/{slug}"
    step = f"top_words/{slug}"
    outputs = [f"{rel}/top_words.tsv", f"{rel}/word_responses.npy"]
    if ctx.cached(step, [ctx.keys[f"atoms/{slug}"], ctx.keys["story"], TOP_WORDS], outputs):
        return
    if isinstance(words, list):  # several stories
        from ._stories import step_top_words_stories

        return step_top_words_stories(ctx, words, model, slug, codes, index, step, outputs)
    features = load_an_responses(ctx.out / "features" / slug)
    prov = features.provenance
    full = an_index(int(prov["n_layers"]), list(prov["units_per_layer"]), prov["site"])
    used = set(zip(index["layer"].astype(int), index["unit"].astype(int)))
    keep = np.array([(int(a), int(b)) in used for a, b in zip(full["layer"], full["unit"])])
    if int(keep.sum()) != codes.shape[1]:
        raise ValueError(f"top words of {slug!r}: {int(keep.sum())} ANs found for {codes.shape[1]} code columns.")
    W = word_level_activations(words, model, keep=keep, site=cfg.features.site, context=cfg.features.context,
                               device=_device(cfg.features.device), dtype=cfg.features.dtype,
                               **cfg.features.model_dump(include={"device_map", "max_memory", "offload_folder"}),
                               progress=ctx.progress, cancel=ctx.cancel)
    if cfg.features.center_words:
        # the AN responses were built from centred word activations (features.center_words):
        # read the atoms out of the same centred activations (words without tokens stay 0)
        W = np.array(W, dtype=np.float64)
        has_tokens = np.any(W != 0, axis=1)
        if has_tokens.any():
            W[has_tokens] -= W[has_tokens].mean(axis=0)
    n_volumes, tr = cfg.story.n_volumes, cfg.story.tr
    H = np.asarray(hrf_operator(words.onsets, n_volumes, tr, method=cfg.features.alignment))
    responses = word_atom_responses(W, H, codes)
    table = top_words_table(responses, words.words, words.onsets,
                            volumes=volume_of_words(words.onsets, n_volumes, tr), n_top=TOP_WORDS)
    ctx.writer.write_npy(outputs[1], responses.astype(np.float32))
    ctx.writer.write_table(outputs[0], table)
    ctx.done(step)
