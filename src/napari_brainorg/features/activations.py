"""Word activations of every AN: tokens aligned to words, windows, pooling.

The story's words are joined by single spaces into one text and tokenised once by the
model's fast tokenizer; each token belongs to the word that holds its last character
(character offsets), so punctuation, contractions (``it's`` -> ``it ' s``), accents and
``<unk>``-like strings stay with their word. Tokens made only of whitespace belong to no
word, and a word that yields no token (an empty string) has no activation: it is left
out of every chunk, which amounts to an activation of zero downstream. Special-token
strings in the transcript (``<|endoftext|>``) are split like ordinary text, never read as
control tokens.

Context policy (the ``context`` and ``min_context`` options)
------------------------------------------------------------
A story longer than one window goes through the model in overlapping windows of at most
``context`` tokens (the tokenizer's own special tokens included, e.g. BERT's ``[CLS]`` and
``[SEP]``). Every word is taken, all its tokens together, from exactly one window:

- causal models (a token sees only its past): windows are cut at word boundaries so that
  the first token of every emitted word has at least ``min_context`` tokens of past
  (fewer only near the story's start) and at most ``context - 1``. Default ``context``:
  the model's length capped at 1024 tokens (attention cost grows with the square of the
  window, and 1024 tokens is about 2.5 minutes of speech); default ``min_context``: half
  the window, so every word sees between half a window and a full window of past;
- bidirectional models: windows of ``context`` tokens, evenly spaced from the story's
  start to its end at most ``context - 2 * min_context`` tokens apart; a word is taken from
  the window in which it has the most context on its poorer side, i.e. the window whose
  centre is closest. Default ``context``: the model's length (512 for BERT); default
  ``min_context``: a quarter of the window, so a word has at least that much context
  on both sides except near the story's edges. A story that fits in one window is one
  window: every token has the full story as context.

Tokens are pooled to words by the mean over the word's sub-word tokens (special tokens
excluded). Pooling happens inside the forward hooks, layer by layer, so memory holds one
chunk of words x ANs (``batch_words``), never tokens x ANs.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._progress import ProgressCallback, check_cancel, report
from ..errors import ConfigError
from .sites import DEFAULT_SITE, site_hooks

__all__ = [
    "ContextPolicy",
    "WindowPlan",
    "WordActivations",
    "WordTokens",
    "context_policy",
    "iter_word_activations",
    "plan_windows",
    "prepare_story",
    "tokenize_words",
    "window_batches",
    "word_activations",
]

#: Default cap on a causal model's window (tokens).
CAUSAL_CONTEXT_CAP = 1024


@dataclass(frozen=True)
class WordTokens:
    """A story's tokens and which word each belongs to.

    Attributes
    ----------
    input_ids : ndarray of shape (n_tokens,), int64
        The story's tokens, without special tokens.
    token_word : ndarray of shape (n_tokens,), int64
        Index of the word that holds each token; -1 for whitespace-only tokens.
    word_start, word_stop : ndarray of shape (n_words,), int64
        ``input_ids[word_start[j]:word_stop[j]]`` are word ``j``'s tokens (empty when
        ``word_start == word_stop``).
    prefix_ids, suffix_ids : tuple of int
        Special tokens the tokenizer puts around every input (``[CLS]`` / ``[SEP]``).
    text : str
        The text that was tokenised (words joined by single spaces).
    """

    input_ids: np.ndarray
    token_word: np.ndarray
    word_start: np.ndarray
    word_stop: np.ndarray
    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    text: str

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_words(self) -> int:
        return int(self.word_start.shape[0])

    @property
    def n_special(self) -> int:
        return len(self.prefix_ids) + len(self.suffix_ids)


def _special_tokens(tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The tokens a tokenizer adds before and after every input."""
    bare = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    for k in range(len(full) - len(bare) + 1):
        if full[k : k + len(bare)] == bare:
            return tuple(full[:k]), tuple(full[k + len(bare) :])
    return (), ()  # pragma: no cover - a tokenizer that rewrites the text itself


def tokenize_words(tokenizer, words: Sequence[str]) -> WordTokens:
    """Tokenise a story once and align its tokens to its words.

    Parameters
    ----------
    tokenizer : a fast Hugging Face tokenizer
    words : sequence of str, length n_words

    Returns
    -------
    WordTokens
    """
    words = [str(w).strip() for w in words]
    n_words = len(words)
    lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=n_words)
    text = " ".join(words)
    # Character -> word map: each word's characters, then one separator (-1).
    values = np.empty(2 * n_words, dtype=np.int64)
    values[0::2] = np.arange(n_words)
    values[1::2] = -1
    repeats = np.empty(2 * n_words, dtype=np.int64)
    repeats[0::2] = lengths
    repeats[1::2] = 1
    if n_words:
        repeats[-1] = 0
    char_word = np.repeat(values, repeats)

    enc = tokenizer(
        text,
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        verbose=False,
        split_special_tokens=True,
    )
    input_ids = np.asarray(enc["input_ids"], dtype=np.int64).reshape(-1)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    ends = offsets[:, 1]
    has_chars = (ends > offsets[:, 0]) & (ends <= len(text))
    token_word = np.full(input_ids.shape[0], -1, dtype=np.int64)
    token_word[has_chars] = char_word[ends[has_chars] - 1]

    assigned = np.flatnonzero(token_word >= 0)
    owner = token_word[assigned]
    if owner.size and np.any(np.diff(owner) < 0):  # pragma: no cover - offsets go back in text
        order = np.argsort(owner, kind="stable")
        assigned, owner = assigned[order], owner[order]
    n_tokens, n_assigned = input_ids.shape[0], assigned.shape[0]
    left = np.searchsorted(owner, np.arange(n_words), side="left")
    right = np.searchsorted(owner, np.arange(n_words), side="right")
    has = right > left
    # A word without tokens sits where it would be in the token stream (start == stop).
    nxt = (
        np.where(left < n_assigned, assigned[np.minimum(left, n_assigned - 1)], n_tokens)
        if n_assigned
        else np.full(n_words, n_tokens, dtype=np.int64)
    )
    word_start = nxt.astype(np.int64)
    word_stop = nxt.astype(np.int64)
    word_start[has] = assigned[left[has]]
    word_stop[has] = assigned[right[has] - 1] + 1
    prefix, suffix = _special_tokens(tokenizer)
    return WordTokens(
        input_ids=input_ids,
        token_word=token_word,
        word_start=word_start,
        word_stop=word_stop,
        prefix_ids=prefix,
        suffix_ids=suffix,
        text=text,
    )


@dataclass(frozen=True)
class ContextPolicy:
    """How a story is cut into windows (see the module's docstring).

    Attributes
    ----------
    causal : bool
    context : int
        Tokens per window, special tokens included.
    min_context : int
        Causal: least past of a word's first token. Bidirectional: least context on
        each side of a word (both except near the story's edges).
    capacity : int
        Story tokens per window (``context`` minus the special tokens).
    """

    causal: bool
    context: int
    min_context: int
    capacity: int

    def describe(self) -> str:
        if self.causal:
            return (
                f"causal: windows of up to {self.context} tokens cut at word boundaries; each "
                f"word's first token sees at least {self.min_context} tokens of past (fewer only "
                "at the story's start); tokens see only their past"
            )
        return (
            f"bidirectional: windows of {self.context} tokens at most "
            f"{self.capacity - 2 * self.min_context} tokens apart; each word taken from the window "
            f"where it is closest to the centre (at least {self.min_context} tokens of context "
            "on each side except near the story's edges)"
        )

    def as_dict(self) -> dict:
        return {"causal": self.causal, "context": self.context, "min_context": self.min_context,
                "capacity": self.capacity, "description": self.describe()}


def context_policy(
    causal: bool, max_length: int, n_special: int, context: int | None = None,
    min_context: int | None = None,
) -> ContextPolicy:
    """Validate ``context`` / ``min_context`` and fill in the defaults.

    Raises
    ------
    ConfigError
        A window longer than the model takes, or too short to hold a word with context.
    """
    max_length = int(max_length)
    if context is None:
        context = min(max_length, CAUSAL_CONTEXT_CAP) if causal else max_length
    if isinstance(context, bool) or not isinstance(context, (int, np.integer)):
        raise ConfigError(f"'context' must be a whole number of tokens; {context!r} was provided.")
    context = int(context)
    if not n_special + 2 <= context <= max_length:
        raise ConfigError(
            f"'context' must be between {n_special + 2} and the model's length {max_length} "
            f"tokens; {context} was provided."
        )
    capacity = context - n_special
    if min_context is None:
        min_context = capacity // 2 if causal else capacity // 4
    min_context = int(min_context)
    upper = capacity - 1 if causal else (capacity - 1) // 2
    if not 0 <= min_context <= upper:
        raise ConfigError(
            f"'min_context' must be between 0 and {upper} tokens for a "
            f"{'causal' if causal else 'bidirectional'} model with context {context}; "
            f"{min_context} was provided."
        )
    return ContextPolicy(causal=bool(causal), context=context, min_context=min_context, capacity=capacity)


@dataclass(frozen=True)
class WindowPlan:
    """Windows over the story's tokens and the window each word is taken from.

    Attributes
    ----------
    start, stop : ndarray of shape (n_windows,), int64
        Token range ``[start, stop)`` of each window (special tokens not counted).
    word_window : ndarray of shape (n_words,), int64
        The window each word is taken from; -1 for words without tokens.
    """

    start: np.ndarray
    stop: np.ndarray
    word_window: np.ndarray

    @property
    def n_windows(self) -> int:
        return int(self.start.shape[0])


def _plan_causal(word_start, word_stop, n_tokens, capacity, min_context):
    has = word_stop > word_start
    idx = np.flatnonzero(has)
    starts, stops = word_start[idx], word_stop[idx]
    win_start, win_stop = [], []
    word_window = np.full(word_start.shape[0], -1, dtype=np.int64)
    j = 0
    n = len(idx)
    # One step per window (not per token): the windows' count is n_tokens / stride.
    while j < n:
        s = int(starts[j])
        a = max(0, s - min_context)
        # the words that end within the window, beginning at word j
        k = int(np.searchsorted(stops, a + capacity, side="right"))
        if k <= j:
            # word j does not fit with min_context of past: give it less past, and when it
            # is longer than a whole window, only its first `capacity` tokens.
            a = max(0, int(stops[j]) - capacity)
            a = min(a, s)
            k = j + 1
        b = min(int(stops[k - 1]), a + capacity)
        word_window[idx[j:k]] = len(win_start)
        win_start.append(a)
        win_stop.append(b)
        j = k
    return np.asarray(win_start, np.int64), np.asarray(win_stop, np.int64), word_window


def _plan_bidirectional(word_start, word_stop, n_tokens, capacity, min_context):
    if n_tokens <= capacity:
        starts = np.zeros(1 if n_tokens else 0, np.int64)
    else:
        # As few windows as the largest stride allows, spread evenly from the story's
        # start to its end, so no window is wasted on a sliver at the end.
        stride = max(1, capacity - 2 * min_context)
        n_win = -(-(n_tokens - capacity) // stride) + 1
        starts = np.round(np.linspace(0, n_tokens - capacity, n_win)).astype(np.int64)
    stops = np.minimum(starts + capacity, n_tokens)
    word_window = np.full(word_start.shape[0], -1, dtype=np.int64)
    has = word_stop > word_start
    if not starts.size or not has.any():
        return starts, stops, word_window
    p, q = word_start[has], word_stop[has]
    n_win = len(starts)
    # Windows holding the whole word start in [q - capacity, p] (index range lo..hi).
    # Within it the context on the word's poorer side, min(p - a, a + capacity - q), is
    # a tent in the window start a that peaks at a* = (p + q - capacity) / 2, so the best
    # window is one of the two starts around a*.
    lo = np.searchsorted(starts, q - capacity, side="left")
    hi = np.searchsorted(starts, p, side="right") - 1
    k = np.searchsorted(starts, (p + q - capacity) / 2.0)
    cand = np.clip(np.stack([k - 1, k], axis=1), 0, n_win - 1)
    contained = lo <= hi
    cand[contained] = np.clip(cand[contained], lo[contained, None], hi[contained, None])
    a = starts[cand]
    ends = np.minimum(a + capacity, n_tokens)
    # A word longer than a window (no window holds it) goes where most of it is.
    overlap = np.minimum(q[:, None], ends) - np.maximum(p[:, None], a)
    side = np.minimum(p[:, None] - a, ends - q[:, None])
    score = overlap * (2 * capacity + 2) + side
    best = cand[np.arange(len(p)), np.argmax(score, axis=1)]
    word_window[has] = best
    return starts, stops, word_window


def plan_windows(tokens: WordTokens, policy: ContextPolicy) -> WindowPlan:
    """Cut the story into windows and choose each word's window (see the module docstring)."""
    planner = _plan_causal if policy.causal else _plan_bidirectional
    start, stop, word_window = planner(
        tokens.word_start, tokens.word_stop, tokens.n_tokens, policy.capacity, policy.min_context
    )
    return WindowPlan(start=start, stop=stop, word_window=word_window)


def prepare_story(
    loaded, words: Sequence[str], context: int | None = None, min_context: int | None = None
) -> tuple[WordTokens, ContextPolicy, WindowPlan]:
    """Tokenise a story for a model, validate the context policy and plan the windows."""
    tokens = tokenize_words(loaded.tokenizer, words)
    policy = context_policy(loaded.spec.causal, loaded.max_length, tokens.n_special, context, min_context)
    return tokens, policy, plan_windows(tokens, policy)


@dataclass
class WordActivations:
    """Activations of every AN for a chunk of words.

    Attributes
    ----------
    word_index : ndarray of shape (n_chunk_words,), int64
        Which words of the story (sorted).
    values : torch.Tensor of shape (n_chunk_words, n_ans), float32
        On the model's device. Column order: layer by layer, unit by unit.
    """

    word_index: np.ndarray
    values: Any


def _groups(plan: WindowPlan, batch_words: int) -> list[np.ndarray]:
    """Consecutive windows that go through the model together."""
    used = np.unique(plan.word_window[plan.word_window >= 0])
    counts = np.bincount(plan.word_window[plan.word_window >= 0], minlength=plan.n_windows)
    groups, current, held = [], [], 0
    for w in used:  # one step per window
        n = int(counts[w])
        if current and held + n > batch_words:
            groups.append(np.asarray(current))
            current, held = [], 0
        current.append(int(w))
        held += n
    if current:
        groups.append(np.asarray(current))
    return groups


def _pad_id(tokenizer) -> int:
    for name in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


def iter_word_activations(
    loaded,
    words: Sequence[str],
    *,
    site: str = DEFAULT_SITE,
    context: int | None = None,
    min_context: int | None = None,
    batch_words: int = 512,
    progress: ProgressCallback | None = None,
    cancel=None,
    stage: str = "word activations",
    prepared: tuple[WordTokens, ContextPolicy, WindowPlan] | None = None,
) -> Iterator[WordActivations]:
    """Run the model over a story and yield word activations chunk by chunk.

    Parameters
    ----------
    loaded : LoadedModel
    words : sequence of str, length n_words
    site : {"ffn_hidden", "ffn_out", "residual"}
    context, min_context : int or None
        The context policy (module docstring); None: the defaults.
    batch_words : int
        Words held per chunk (whole windows; at least one window). Windows of a chunk
        go through the model as one batch. Memory: batch_words x n_ans x 4 bytes.
    progress, cancel
        See :mod:`napari_brainorg._progress`; reported in words.
    stage : str
        Name of the progress stage.
    prepared : (WordTokens, ContextPolicy, WindowPlan) or None
        What :func:`prepare_story` returned for the same model, words and policy, to
        avoid tokenising twice.

    Yields
    ------
    WordActivations
        Chunks in story order; words without tokens are in no chunk.
    """
    import torch

    if int(batch_words) < 1:
        raise ConfigError(f"'batch_words' must be a positive number of words; {batch_words!r} was provided.")
    tokenizer, model = loaded.tokenizer, loaded.model
    tokens, policy, plan = prepared or prepare_story(loaded, words, context, min_context)
    hooks = site_hooks(model, loaded.spec.architecture, site)
    widths = np.array([h.n_units for h in hooks], dtype=np.int64)
    col0 = np.concatenate([[0], np.cumsum(widths)])
    n_ans = int(col0[-1])
    device = torch.device(loaded.device)
    pad = _pad_id(tokenizer)
    # A causal model would otherwise keep every layer's keys and values for generation.
    forward_options = {"use_cache": False} if loaded.spec.causal else {}
    n_with_tokens = int((plan.word_window >= 0).sum())
    done = 0
    report(progress, stage, 0, n_with_tokens)

    # Assigned tokens, sorted by word: for a word, its tokens inside its window.
    tok_pos = np.flatnonzero(tokens.token_word >= 0)
    tok_owner = tokens.token_word[tok_pos]
    tok_win = plan.word_window[tok_owner]
    inside = (tok_pos >= plan.start[tok_win]) & (tok_pos < plan.stop[tok_win])
    tok_pos, tok_owner, tok_win = tok_pos[inside], tok_owner[inside], tok_win[inside]

    state: dict[str, Any] = {}

    def sink(layer: int, act) -> None:
        # a chunk's forward pass takes seconds in a large model: a cancel is honoured between
        # two of its layers (the hooks come off as the error leaves capture_site)
        check_cancel(cancel)
        # Named for torch.profiler: the benchmark reports the time spent here.
        with torch.profiler.record_function("brainorg.pool_words"):
            flat = act.reshape(-1, act.shape[-1])
            if flat.device != state["buffer"].device:  # a layer that accelerate placed elsewhere
                flat = flat.to(state["buffer"].device)
            if flat.dtype != torch.float32:
                flat = flat.float()
            # (words x batch tokens) sparse mean operator times (batch tokens x units):
            # one pass over the words' tokens, several times faster than a gather
            # followed by a scatter-add.
            state["buffer"][:, int(col0[layer]) : int(col0[layer + 1])] = state["pool"] @ flat

    from .sites import capture_site

    for group, ids, mask in window_batches(tokens, plan, int(batch_words), pad):
        check_cancel(cancel)
        width = ids.shape[1]
        sel = np.isin(tok_win, group)
        pos, owner, win = tok_pos[sel], tok_owner[sel], tok_win[sel]
        row_of = np.searchsorted(group, win)
        flat = row_of * width + len(tokens.prefix_ids) + (pos - plan.start[win])
        chunk_words, slot = np.unique(owner, return_inverse=True)
        counts = np.bincount(slot, minlength=len(chunk_words)).astype(np.float32)
        # Hooks and inference mode only around the forward pass: between chunks the
        # model is left as it was, whatever the consumer does with it.
        with torch.inference_mode(), capture_site(model, loaded.spec.architecture, site, sink):
            state["pool"] = _mean_operator(slot.reshape(-1), flat, counts, len(ids) * width, device)
            with torch.profiler.record_function("brainorg.pool_words"):
                state["buffer"] = torch.zeros((len(chunk_words), n_ans), dtype=torch.float32, device=device)
            model(
                input_ids=torch.as_tensor(ids, device=device),
                attention_mask=torch.as_tensor(mask, device=device),
                **forward_options,
            )
        done += len(chunk_words)
        report(progress, stage, done, n_with_tokens)
        # Nothing here keeps the chunk once it is handed over, so its memory is free
        # again before the next forward pass if the consumer lets it go.
        chunk = WordActivations(word_index=chunk_words, values=state.pop("buffer"))
        state.clear()
        yield chunk
        del chunk


def _mean_operator(slot: np.ndarray, columns: np.ndarray, counts: np.ndarray, n_columns: int, device):
    """Sparse CSR matrix (n_words x n_columns): row ``w`` averages word ``w``'s tokens.

    ``slot`` (the word of each token, nondecreasing) and ``columns`` (each token's flat
    position in the batch) list the tokens word by word.
    """
    import torch

    crow = np.concatenate([[0], np.cumsum(counts.astype(np.int64))])
    values = (1.0 / counts)[slot].astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.as_tensor(crow, device=device),
            torch.as_tensor(columns, dtype=torch.int64, device=device),
            torch.as_tensor(values, device=device),
            size=(len(counts), n_columns),
        )


def window_batches(
    tokens: WordTokens, plan: WindowPlan, batch_words: int, pad_id: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The model inputs, batch by batch: consecutive windows with their special tokens.

    Yields
    ------
    group : ndarray of shape (n_windows_in_batch,), int64
        The windows (indices into ``plan``).
    input_ids, attention_mask : ndarray of shape (n_windows_in_batch, width), int64
        Windows padded on the right to the longest (causal models: padding comes after
        every real token, so it changes nothing they see).
    """
    prefix = np.asarray(tokens.prefix_ids, dtype=np.int64)
    suffix = np.asarray(tokens.suffix_ids, dtype=np.int64)
    for group in _groups(plan, batch_words):
        lengths = plan.stop[group] - plan.start[group]
        width = int(lengths.max()) + len(prefix) + len(suffix)
        ids = np.full((len(group), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(group), width), dtype=np.int64)
        for row, w in enumerate(group):  # one step per window
            seq = np.concatenate([prefix, tokens.input_ids[plan.start[w] : plan.stop[w]], suffix])
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        yield group, ids, mask


def word_activations(loaded, words: Sequence[str], **kwargs) -> np.ndarray:
    """All word activations at once, as one array (for short stories and tests).

    Parameters
    ----------
    loaded : LoadedModel
    words : sequence of str, length n_words
    **kwargs
        Passed to :func:`iter_word_activations`.

    Returns
    -------
    ndarray of shape (n_words, n_ans), float32
        Zero rows for words without tokens.
    """
    out = None
    for chunk in iter_word_activations(loaded, words, **kwargs):
        values = chunk.values.cpu().numpy()
        if out is None:
            out = np.zeros((len(words), values.shape[1]), dtype=np.float32)
        out[chunk.word_index] = values
    if out is None:
        hooks = site_hooks(loaded.model, loaded.spec.architecture, kwargs.get("site", DEFAULT_SITE))
        out = np.zeros((len(words), sum(h.n_units for h in hooks)), dtype=np.float32)
    return out
