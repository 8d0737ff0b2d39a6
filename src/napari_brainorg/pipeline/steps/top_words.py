"""Step ``top_words/<model>``: the words that most activate and suppress each atom.

Reads
    the story step's words, the atoms step's codes and the features step's AN index; runs
    the model over the story once more (word-level activations are not kept by the
    features step: for a large model they would be several GB).
Writes
    ``atoms/<model>/word_responses.npy`` (float32, n_words × k: each atom's response to
    each word of ``story/words.tsv``, same row order, before the HRF) and
    ``atoms/<model>/top_words.tsv`` (per atom and direction the ``TOP_WORDS`` strongest
    words with their onset, volume, response (z over words) and sentence context; with
    several stories, a ``story`` column).
Key
    the atoms step's key and the story step's.
"""

from __future__ import annotations

import numpy as np

from ..context import resolve_device

#: words listed per atom and direction
TOP_WORDS = 15


def step_top_words(ctx, words, model: str, slug: str, codes, index) -> None:
    """Write ``atoms/<slug>/top_words.tsv`` and ``word_responses.npy`` (see the module docstring).

    Parameters
    ----------
    ctx : StepContext
    words : WordEvents
        The story's words as the features step read them.
    model : str
    slug : str
    codes : scipy.sparse matrix of shape (k, n_ans)
    index : DataFrame
        ``layer, unit`` of the ANs of ``codes`` (their column order).
    """
    from ...analyses.top_words import top_words_table, word_atom_responses, word_level_activations
    from ...features.alignment import hrf_operator, volume_of_words
    from ...features.extract import load_an_responses
    from ...features.sites import an_index

    cfg = ctx.config
    rel = f"atoms/{slug}"
    step = f"top_words/{slug}"
    outputs = [f"{rel}/top_words.tsv", f"{rel}/word_responses.npy"]
    if ctx.cached(step, [ctx.keys[f"atoms/{slug}"], ctx.keys["story"], TOP_WORDS], outputs):
        return
    if isinstance(words, list):  # several stories

        return _top_words_stories(ctx, words, model, slug, codes, index, step, outputs)
    features = load_an_responses(ctx.out / "features" / slug)
    prov = features.provenance
    full = an_index(int(prov["n_layers"]), list(prov["units_per_layer"]), prov["site"])
    used = set(zip(index["layer"].astype(int), index["unit"].astype(int)))
    keep = np.array([(int(a), int(b)) in used for a, b in zip(full["layer"], full["unit"])])
    if int(keep.sum()) != codes.shape[1]:
        raise ValueError(f"top words of {slug!r}: {int(keep.sum())} ANs found for {codes.shape[1]} code columns.")
    W = word_level_activations(words, model, keep=keep, site=cfg.features.site, context=cfg.features.context,
                               device=resolve_device(cfg.features.device), dtype=cfg.features.dtype,
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


def _top_words_stories(ctx, words_list, model: str, slug: str, codes, index, step: str, outputs) -> None:
    """``top_words/<model>`` over every story: each story's words through its own HRF
    operator, stacked (volumes on the stacked axis, a ``story`` column). The caller has
    checked the step's cache (``step``, ``outputs``: ``top_words.tsv``, ``word_responses.npy``)."""
    import scipy.sparse as sp

    from ...analyses.top_words import top_words_table, word_atom_responses, word_level_activations
    from ...features.alignment import hrf_operator, volume_of_words
    from ...features.extract import load_an_responses
    from ...features.sites import an_index

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
                                   device=resolve_device(cfg.features.device), dtype=cfg.features.dtype,
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
