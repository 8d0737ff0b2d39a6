"""Step ``top_words/<model>``: the words that most activate and suppress each atom.

Reads
    the story step's words, the atoms step's codes and index, and the features step's
    ``features/<model>/provenance.json`` and ``features/<model>/word_activations.npy``
    (with several stories ``features/<model>/<story>/``): every AN's activation per word,
    kept by the extraction, read memory-mapped a block of ANs at a time. Where a story's
    file is missing (a folder of an earlier version, or activations over
    ``features.word_activations_max_gb``), a warning says so and the model runs over
    that story a second time.
Writes
    ``atoms/<model>/word_responses.npy`` (float32, n_words × k: each atom's response to
    each word of ``story/words.tsv``, same row order, before the HRF) and
    ``atoms/<model>/top_words.tsv`` (per atom and direction the ``TOP_WORDS`` strongest
    words with their onset, volume, response (z over words) and sentence context; with
    several stories, a ``story`` column).
Key
    the atoms step's key, the features step's key, the story step's key and the contents
    of the word activations read (a file rewritten or removed recomputes the step).
"""

from __future__ import annotations

import json
import warnings

import numpy as np

from ...errors import BrainorgWarning
from ..context import resolve_device

#: words listed per atom and direction
TOP_WORDS = 15


def step_top_words(ctx, words, model: str, slug: str, codes, index) -> None:
    """Write ``atoms/<slug>/top_words.tsv`` and ``word_responses.npy`` (see the module docstring).

    Parameters
    ----------
    ctx : StepContext
    words : WordEvents or list of WordEvents
        The story's words as the features step read them (one per story, in the order of
        ``ctx.runs``, with several stories).
    model : str
    slug : str
    codes : scipy.sparse matrix of shape (k, n_ans)
    index : DataFrame
        ``layer, unit`` of the ANs of ``codes`` (their column order).
    """
    import scipy.sparse as sp

    from ...analyses.top_words import top_words_table, word_atom_responses
    from ...features.alignment import hrf_operator, volume_of_words

    cfg = ctx.config
    rel = f"atoms/{slug}"
    step = f"top_words/{slug}"
    outputs = [f"{rel}/top_words.tsv", f"{rel}/word_responses.npy"]
    several = isinstance(words, list)
    words_list = words if several else [words]
    runs = list(ctx.runs) if several else [("", cfg.story.n_volumes, cfg.story.tr)]
    folders = [ctx.out / "features" / slug / name if several else ctx.out / "features" / slug
               for name, _, _ in runs]
    stored = [_stored(folder, w) for folder, w in zip(folders, words_list)]
    if ctx.cached(step, [ctx.keys[f"atoms/{slug}"], ctx.keys[f"features/{slug}"], ctx.keys["story"], TOP_WORDS],
                  outputs, inputs=[s[0].path for s in stored if s[0] is not None]):
        return
    if len(index) != codes.shape[1]:
        raise ValueError(f"top words of {slug!r}: {len(index)} ANs in the index for {codes.shape[1]} code columns.")
    parts, columns, centre, Hs, volumes, stories = [], [], [], [], [], []
    loaded = None
    start = 0
    for words_s, (name, n_volumes, tr), folder, (found, reason, prov) in zip(words_list, runs, folders, stored):
        in_file = _columns_of(index, prov, slug)
        if found is not None:
            part, cols, has_tokens = found, in_file, found.has_tokens
        else:
            warnings.warn(f"top words of {slug!r}{f' (story {name!r})' if name else ''}: the features step's "
                          f"word activations cannot be read ({reason}); running the model over the story a "
                          "second time.", BrainorgWarning, stacklevel=2)
            loaded = loaded or _load(cfg, model)
            part, cols, has_tokens = _second_pass(ctx, words_s, loaded, prov, in_file)
        parts.append(part)
        columns.append(cols)
        # the AN responses were built from centred word activations (features.center_words):
        # read the atoms out of the same centred activations (words without tokens stay 0)
        centre.append(has_tokens if cfg.features.center_words else None)
        Hs.append(sp.csr_matrix(np.asarray(hrf_operator(words_s.onsets, n_volumes, tr,
                                                        method=cfg.features.alignment))))
        vol = volume_of_words(words_s.onsets, n_volumes, tr)
        volumes.append(np.where(vol >= 0, vol + start, -1))
        stories += [name] * len(words_s)
        start += n_volumes
    responses = word_atom_responses(parts, sp.block_diag(Hs, format="csr"), codes, columns=columns,
                                    center_rows=centre, progress=ctx.progress, cancel=ctx.cancel)
    table = top_words_table(responses, [w for ws in words_list for w in ws.words],
                            np.concatenate([ws.onsets for ws in words_list]), volumes=np.concatenate(volumes),
                            n_top=TOP_WORDS)
    if several and "volume" in table:
        bounds = np.cumsum([0] + [n for _, n, _ in runs])
        table.insert(0, "story", [runs[int(np.searchsorted(bounds, v, side="right")) - 1][0] if v >= 0 else ""
                                  for v in table["volume"]])
    ctx.writer.write_npy(outputs[1], responses.astype(np.float32))
    ctx.writer.write_table(outputs[0], table)
    ctx.done(step)


def _stored(folder, words):
    """(the word activations the extraction kept in ``folder`` or None, why not, its provenance)."""
    from ...features.extract import story_sha256
    from ...features.word_activations import open_word_activations

    prov = json.loads((folder / "provenance.json").read_text())
    found, reason = open_word_activations(folder, prov, len(words), story_sha256(words))
    return found, reason, prov


def _columns_of(index, prov: dict, slug: str) -> np.ndarray:
    """The position of each AN of ``index`` (the codes' columns) among all the model's ANs
    (the extraction's column order, :func:`~napari_brainorg.features.sites.an_index`)."""
    from ...features.sites import an_index

    full = an_index(int(prov["n_layers"]), list(prov["units_per_layer"]), prov["site"])
    pos = {k: i for i, k in enumerate(zip(full["layer"].astype(int), full["unit"].astype(int)))}
    keys = list(zip(index["layer"].astype(int), index["unit"].astype(int)))
    missing = [k for k in keys if k not in pos]
    if missing:
        raise ValueError(f"top words of {slug!r}: {len(missing)} ANs of the codes (first: layer, unit "
                         f"{missing[0]}) are not among the model's {len(full)} ANs at site {prov['site']!r}.")
    return np.array([pos[k] for k in keys], dtype=np.int64)


def _load(cfg, model: str):
    """The model, for the second pass, placed as the features step placed it."""
    from ...features.models import load_language_model, resolve_model

    return load_language_model(resolve_model(model), device=resolve_device(cfg.features.device),
                               dtype=cfg.features.dtype,
                               **cfg.features.model_dump(include={"device_map", "max_memory", "offload_folder"}))


def _second_pass(ctx, words, loaded, prov: dict, in_file: np.ndarray):
    """The codes' ANs' activations per word, the model run once more.

    Returns (activations of the ANs ``in_file`` in the model's order, the codes' columns
    among them, the words with tokens)."""
    from ...analyses.top_words import word_level_activations

    cfg = ctx.config
    keep = np.zeros(sum(int(n) for n in prov["units_per_layer"]), dtype=bool)
    keep[in_file] = True
    W, has_tokens = word_level_activations(words, loaded, keep=keep, site=cfg.features.site,
                                           context=cfg.features.context, progress=ctx.progress, cancel=ctx.cancel)
    return W, (np.cumsum(keep) - 1)[in_file], has_tokens
