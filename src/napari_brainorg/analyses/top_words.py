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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas


def word_atom_responses(word_activations: np.ndarray, hrf: np.ndarray, codes, ridge: float = 1e-6) -> np.ndarray:
    """Each atom's response to each word (see the module docstring).

    Parameters
    ----------
    word_activations : ndarray of shape (n_words, n_ans)
        ``W``: the ANs' activations per word (the ANs and column order of ``codes``).
    hrf : ndarray of shape (n_volumes, n_words)
        ``H``: the word -> volume operator the AN responses were made with.
    codes : ndarray or scipy.sparse matrix of shape (k, n_ans)
    ridge : float
        ``eps`` relative to the mean diagonal of ``C C^T`` (atoms no AN uses stay finite).

    Returns
    -------
    ndarray of shape (n_words, k), float64
    """
    W = np.asarray(word_activations, dtype=np.float64)
    H = np.asarray(hrf, dtype=np.float64)
    if H.shape[1] != W.shape[0]:
        raise ValueError(f"'hrf' has shape {H.shape}; expected (n_volumes, {W.shape[0]}) for "
                         f"{W.shape[0]} words.")
    C = codes.toarray() if hasattr(codes, "toarray") else np.asarray(codes, dtype=np.float64)
    if C.shape[1] != W.shape[1]:
        raise ValueError(f"'codes' has shape {C.shape}; expected (k, {W.shape[1]}) for {W.shape[1]} ANs.")
    R = H @ W
    scale = R.std(axis=0)
    scale[scale == 0] = 1.0
    gram = C @ C.T
    eps = ridge * max(float(np.trace(gram)) / max(len(gram), 1), 1e-12)
    readout = np.linalg.solve(gram + eps * np.eye(len(gram)), C).T  # (n_ans, k)
    return (W / scale) @ readout


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
                           offload_folder=None, progress=None, cancel=None) -> np.ndarray:
    """Every kept AN's activation for every word of the story (the model is run once more).

    Parameters
    ----------
    words : WordEvents
    model : str
        A model name, folder, GGUF file or hub id (as the features step got it).
    keep : ndarray of shape (n_ans_all,), bool
        Which ANs (in the model's column order) the AN responses kept.
    site, context, min_context, device, dtype, device_map, max_memory, offload_folder
        As the features step used them.

    Returns
    -------
    ndarray of shape (n_words, n_kept), float32
        Words without tokens are zero (as in the AN responses).
    """
    from ..features.activations import iter_word_activations, prepare_story
    from ..features.models import load_language_model, resolve_model

    loaded = load_language_model(resolve_model(model), device=device, dtype=dtype, device_map=device_map,
                                 max_memory=max_memory, offload_folder=offload_folder)
    prepared = prepare_story(loaded, words.words, context, min_context)
    keep = np.asarray(keep, bool)
    out = np.zeros((len(words), int(keep.sum())), np.float32)
    keep_t = None
    for chunk in iter_word_activations(loaded, words.words, site=site, context=context, min_context=min_context,
                                       progress=progress, cancel=cancel, stage="top words", prepared=prepared):
        values = chunk.values
        if values.shape[1] != keep.size:
            raise ValueError(f"The model gave {values.shape[1]} ANs per word; the AN responses were made "
                             f"from {keep.size}.")
        if keep_t is None:
            import torch

            keep_t = torch.as_tensor(np.flatnonzero(keep), device=values.device)
        out[chunk.word_index] = values.index_select(1, keep_t).float().cpu().numpy()
    return out
