"""What drives an atom: its response to each word of the story, before the HRF.

An atom is a time course over volumes; the ANs it groups respond to words. The ANs'
volume responses are ``X = (H W - m) / s`` (``W``: word-level activations of shape
(n_words, n_ans), ``H``: the word -> volume HRF operator, ``s``: each AN's standard
deviation over volumes), and the dictionary fits ``X ≈ D C`` (``D``: atoms,
``C``: sparse codes of shape (k, n_ans)). The atom's **word-level response** is
the least-squares read-out of the same codes from the word-level activations on the
same scale::

    A_words = (W / s) C^T (C C^T + eps I)^-1        # (n_words, k)

so that ``H A_words ≈ D`` up to a constant per atom (the centring), and the words
with the highest (lowest) ``A_words[:, a]`` are those that most activate (suppress)
atom ``a``. :func:`top_words_table` lists them with the sentence around each word.

``W`` is what the extraction computed on its way to the AN responses: the features step
keeps it (``features/<model>/word_activations.npy``) and :func:`word_atom_responses`
reads it a block of ANs at a time; :func:`word_level_activations` runs the model again
for a folder without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._progress import ProgressCallback, check_cancel, report

if TYPE_CHECKING:  # pragma: no cover
    import pandas


def word_atom_responses(word_activations, hrf, codes, ridge: float = 1e-6, *, columns=None, center_rows=None,
                        block_bytes: int = 1 << 26, progress: ProgressCallback | None = None,
                        cancel=None) -> np.ndarray:
    """Each atom's response to each word (see the module docstring), read by blocks of ANs.

    Every step is column by column (an AN's centring, its scale ``s``, its share of the
    read-out), so the activations are read a block of ANs at a time: they may be a
    memory map or a file (:class:`~napari_brainorg.features.word_activations.StoredWordActivations`)
    larger than memory. ANs that no atom uses are not read.

    Parameters
    ----------
    word_activations : array of shape (n_words, n_cols), or a list of them
        ``W``: the ANs' activations per word; with several stories one array per story,
        their rows stacked in order (``n_words`` in all). Anything with ``shape`` and
        ``[:, columns]`` indexing.
    hrf : ndarray or scipy.sparse matrix of shape (n_volumes, n_words)
        ``H``: the word -> volume operator the AN responses were made with (block
        diagonal over the stories).
    codes : ndarray or scipy.sparse matrix of shape (k, n_ans)
    ridge : float
        ``eps`` relative to the mean diagonal of ``C C^T`` (atoms no AN uses stay finite).
    columns : ndarray of int of shape (n_ans,), or a list of them (one per array)
        The column of each AN of ``codes`` (in their order) in ``word_activations``;
        None: ``n_cols == n_ans``, the same order.
    center_rows : ndarray of bool of shape (n_words_story,), or a list of them, optional
        Centre each AN over these words of its story (``features.center_words``: the AN
        responses were made from centred activations; the words without tokens stay 0).
    block_bytes : int
        Memory of one block of ANs (float64 over every word).
    progress, cancel
        See :mod:`napari_brainorg._progress` (stage ``"top words"``, in ANs).

    Returns
    -------
    ndarray of shape (n_words, k), float64
    """
    import scipy.sparse as sp

    parts = list(word_activations) if isinstance(word_activations, (list, tuple)) else [word_activations]
    rows = [int(p.shape[0]) for p in parts]
    n_words = sum(rows)
    H = sp.csr_matrix(hrf, dtype=np.float64)  # the HRF reaches a few tens of seconds: mostly zeros
    if H.shape[1] != n_words:
        raise ValueError(f"'hrf' has shape {H.shape}; expected (n_volumes, {n_words}) for {n_words} words.")
    C = codes.toarray() if hasattr(codes, "toarray") else np.asarray(codes, dtype=np.float64)
    cols = _per_part(columns, len(parts), "columns")
    cols = [np.arange(p.shape[1]) if c is None else np.asarray(c, dtype=np.int64) for p, c in zip(parts, cols)]
    centre = _per_part(center_rows, len(parts), "center_rows")
    for p, c in zip(parts, cols):
        if len(c) != C.shape[1] or (len(c) and not 0 <= c.min() <= c.max() < p.shape[1]):
            raise ValueError(f"'codes' has shape {C.shape}; expected (k, {len(c)}) for {len(c)} ANs among "
                             f"the {p.shape[1]} columns of the word activations.")
    gram = C @ C.T
    eps = ridge * max(float(np.trace(gram)) / max(len(gram), 1), 1e-12)
    readout = np.linalg.solve(gram + eps * np.eye(len(gram)), C).T  # (n_ans, k)
    # an AN no atom uses adds exactly 0; the others in the first array's column order (reads go forward)
    used = np.flatnonzero(np.any(C != 0, axis=0))
    used = used[np.argsort(cols[0][used], kind="stable")]
    out = np.zeros((n_words, C.shape[0]))
    step = max(1, int(block_bytes) // (8 * max(n_words, 1)))
    for start in range(0, len(used), step):
        check_cancel(cancel)
        ans = used[start:start + step]
        W = np.concatenate([_centred(p[:, c[ans]], m) for p, c, m in zip(parts, cols, centre)])
        scale = (H @ W).std(axis=0)  # each AN's standard deviation over volumes (before the z-score)
        scale[scale == 0] = 1.0
        out += (W / scale) @ readout[ans]
        report(progress, "top words", start + len(ans), len(used))
    return out


def _per_part(value, n_parts: int, name: str) -> list:
    """``value`` as one entry per array of word activations."""
    if isinstance(value, (list, tuple)):
        if len(value) != n_parts:
            raise ValueError(f"{name!r} has {len(value)} entries; expected one per array of word "
                             f"activations ({n_parts}).")
        return list(value)
    if n_parts != 1 and value is not None:
        raise ValueError(f"{name!r} must be a list of {n_parts} entries, one per array of word activations.")
    return [value] * n_parts


def _centred(block, rows) -> np.ndarray:
    """``block`` (n_words, n_block) in float64, each column centred over ``rows`` (None: as it is)."""
    block = np.array(block, dtype=np.float64)
    if rows is not None:
        rows = np.asarray(rows, dtype=bool)
        if rows.shape != (block.shape[0],):
            raise ValueError(f"'center_rows' has shape {rows.shape}; expected ({block.shape[0]},).")
        if rows.all():  # the usual case, in place (the same numbers as through the mask, without its copies)
            block -= block.mean(axis=0)
        elif rows.any():
            block[rows] -= block[rows].mean(axis=0)
    return block


def top_words_table(responses: np.ndarray, words, onsets, volumes=None, n_top: int = 15,
                    context: tuple[int, int] = (6, 4)) -> pandas.DataFrame:
    """The words that most activate and most suppress each atom, with their context.

    Parameters
    ----------
    responses : ndarray of shape (n_words, k)
    words : sequence of str, length n_words
    onsets : ndarray of shape (n_words,)
        Seconds from the start of the scan.
    volumes : ndarray of shape (n_words,), optional
        The volume each word falls in.
    n_top : int
        Words per atom and direction.
    context : (int, int)
        Words shown before and after (the word itself in brackets).

    Returns
    -------
    DataFrame
        One row per atom x direction x rank: ``atom, direction ('activate' |
        'suppress'), rank (1 = strongest), word, word_index, onset, volume, response
        (z over the story's words), context``.
    """
    import pandas as pd

    responses = np.asarray(responses, dtype=np.float64)
    words = [str(w) for w in words]
    onsets = np.asarray(onsets, dtype=float)
    n_words, k = responses.shape
    if len(words) != n_words or len(onsets) != n_words:
        raise ValueError(f"'words' and 'onsets' must have {n_words} entries (the rows of 'responses'); "
                         f"got {len(words)} and {len(onsets)}.")
    sd = responses.std(axis=0)
    z = (responses - responses.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    before, after = context
    n = min(int(n_top), n_words)
    rows = []
    for atom in range(k):
        order = np.argsort(z[:, atom], kind="stable")
        for direction, picks in (("activate", order[::-1][:n]), ("suppress", order[:n])):
            for rank, i in enumerate(picks, start=1):
                left = " ".join(words[max(0, i - before):i])
                right = " ".join(words[i + 1:i + 1 + after])
                rows.append({
                    "atom": atom, "direction": direction, "rank": rank, "word": words[i],
                    "word_index": int(i), "onset": float(onsets[i]),
                    "volume": int(volumes[i]) if volumes is not None else -1,
                    "response": float(z[i, atom]),
                    "context": f"{left} [{words[i]}] {right}".strip(),
                })
    return pd.DataFrame(rows)


def word_level_activations(words, model, *, keep, site: str, context=None, min_context=None,
                           device: str = "cpu", dtype: str = "auto", device_map=None, max_memory=None,
                           offload_folder=None, progress=None, cancel=None) -> tuple[np.ndarray, np.ndarray]:
    """Every kept AN's activation for every word of the story (the model is run once more).

    The extraction keeps them when it may (``features.word_activations_max_gb``); this
    is the second pass for a result folder without them.

    Parameters
    ----------
    words : WordEvents
    model : str or LoadedModel
        A model name, folder, GGUF file or hub id (as the features step got it), or the
        model already loaded.
    keep : ndarray of shape (n_ans_all,), bool
        Which ANs (in the model's column order) to return.
    site, context, min_context, device, dtype, device_map, max_memory, offload_folder
        As the features step used them (device and the rest unused for a loaded model).

    Returns
    -------
    activations : ndarray of shape (n_words, n_kept), float32
        Words without tokens are zero (as in the AN responses).
    has_tokens : ndarray of shape (n_words,), bool
        The words the model saw.
    """
    from ..features.activations import iter_word_activations, prepare_story
    from ..features.models import LoadedModel, load_language_model, resolve_model

    loaded = model if isinstance(model, LoadedModel) else load_language_model(
        resolve_model(model), device=device, dtype=dtype, device_map=device_map, max_memory=max_memory,
        offload_folder=offload_folder)
    prepared = prepare_story(loaded, words.words, context, min_context)
    keep = np.asarray(keep, bool)
    out = np.zeros((len(words), int(keep.sum())), np.float32)
    has_tokens = np.zeros(len(words), dtype=bool)
    keep_t = None
    for chunk in iter_word_activations(loaded, words.words, site=site, context=context, min_context=min_context,
                                       progress=progress, cancel=cancel, stage="top words (model)",
                                       prepared=prepared):
        values = chunk.values
        if values.shape[1] != keep.size:
            raise ValueError(f"The model gave {values.shape[1]} ANs per word; the AN responses were made "
                             f"from {keep.size}.")
        if keep_t is None:
            import torch

            keep_t = torch.as_tensor(np.flatnonzero(keep), device=values.device)
        out[chunk.word_index] = values.index_select(1, keep_t).float().cpu().numpy()
        has_tokens[chunk.word_index] = True
    return out, has_tokens
