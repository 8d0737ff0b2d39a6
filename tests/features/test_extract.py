"""Word activations, windows and AN responses on the real bundled models (offline)."""

from __future__ import annotations

import json
import threading
import warnings

import numpy as np
import pytest

from napari_brainorg.errors import CancelledError, ConfigError, DroppedANsWarning
from napari_brainorg.features.activations import (
    WordTokens,
    context_policy,
    plan_windows,
    prepare_story,
    tokenize_words,
    word_activations,
)
from napari_brainorg.features.extract import (
    AN_FILES,
    _zscore_columns,
    extract_an_responses,
    load_an_responses,
)
from napari_brainorg.features.models import load_language_model
from napari_brainorg.features.sites import capture_site
from napari_brainorg.io.stimuli import WordEvents, read_story

torch = pytest.importorskip("torch")

TR = 1.5
N_VOLUMES = 40
ODD_WORDS = ["I", "began", "it's", "", "don't,", "<unk>", "[UNK]", "<|endoftext|>", "naïve", "—", "...",
             "New York", "  spaced  ", "Fordham"]


@pytest.fixture(scope="module")
def minilm():
    return load_language_model("minilm")


@pytest.fixture(scope="module")
def smollm2():
    return load_language_model("smollm2")


@pytest.fixture(scope="module")
def excerpt() -> WordEvents:
    """The first 60 words of pieman (about 15 s to 40 s of the scan)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        story = read_story("pieman")
    n = 60
    return WordEvents(words=story.words[:n], onsets=story.onsets[:n], offsets=story.offsets[:n],
                      measured=story.measured[:n], source="pieman-excerpt")


def _token_activations(lm, ids: list[int]) -> np.ndarray:
    """(n_tokens, n_ans) ffn_hidden activations of one input, layers side by side."""
    store = {}
    with torch.inference_mode(), capture_site(lm.model, lm.spec.architecture, "ffn_hidden",
                                              lambda layer, a: store.__setitem__(layer, a[0].clone())):
        lm.model(input_ids=torch.tensor([ids]))
    return torch.cat([store[k] for k in sorted(store)], dim=1).numpy()


def _pool(acts: np.ndarray, lengths: list[int], offset: int) -> np.ndarray:
    bounds = offset + np.concatenate([[0], np.cumsum(lengths)])
    return np.stack([acts[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])


# ----------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("fixture", ["minilm", "smollm2"])
def test_tokens_follow_their_words_through_punctuation_contractions_and_unk(request, fixture):
    lm = request.getfixturevalue(fixture)
    tok = lm.tokenizer
    tokens = tokenize_words(tok, ODD_WORDS)
    assert tokens.n_words == len(ODD_WORDS)
    n_tokens = tokens.word_stop - tokens.word_start
    assert n_tokens[ODD_WORDS.index("")] == 0
    assert (np.delete(n_tokens, ODD_WORDS.index("")) >= 1).all()
    assert (np.diff(tokens.word_start) >= 0).all()
    owned = tokens.token_word[tokens.token_word >= 0]
    assert (np.diff(owned) >= 0).all()
    for j, word in enumerate(ODD_WORDS):
        ids = tokens.input_ids[tokens.word_start[j]:tokens.word_stop[j]]
        assert (tokens.token_word[tokens.word_start[j]:tokens.word_stop[j]] == j).all()
        decoded = tok.decode(ids).replace(" ", "")
        if fixture == "minilm":  # lower-cased, accents stripped
            expected = tok.backend_tokenizer.normalizer.normalize_str(word).replace(" ", "")
        else:
            expected = word.replace(" ", "")
        assert decoded == expected, (word, decoded)
    # special-token strings in the transcript are text, never control tokens
    specials = {tok.unk_token_id, *tok.all_special_ids}
    assert not specials & set(tokens.input_ids.tolist())
    if fixture == "minilm":
        assert (tokens.prefix_ids, tokens.suffix_ids) == ((tok.cls_token_id,), (tok.sep_token_id,))


def test_odd_words_get_activations_and_an_empty_word_gets_none(minilm):
    acts = word_activations(minilm, ODD_WORDS)
    assert acts.shape == (len(ODD_WORDS), 6 * 1536) and acts.dtype == np.float32
    empty = ODD_WORDS.index("")
    assert not acts[empty].any()
    assert np.abs(np.delete(acts, empty, axis=0)).min(axis=1).max() > 0
    assert np.all(np.abs(np.delete(acts, empty, axis=0)).sum(axis=1) > 0)


# ----------------------------------------------------------------------------- values


def test_bert_word_activations_are_token_means_of_the_full_story(minilm, excerpt):
    """One window holds the excerpt: each word's value is the mean over its tokens of
    the model run on [CLS] + the whole text + [SEP] (full context)."""
    tok = minilm.tokenizer
    per_word = [tok(w, add_special_tokens=False)["input_ids"] for w in excerpt.words]
    ids = [tok.cls_token_id] + [i for w in per_word for i in w] + [tok.sep_token_id]
    assert ids == tok(" ".join(excerpt.words))["input_ids"]
    assert any(len(w) > 1 for w in per_word)  # sub-word pooling is exercised
    expected = _pool(_token_activations(minilm, ids), [len(w) for w in per_word], offset=1)
    got = word_activations(minilm, excerpt.words)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-5)


def test_llama_word_activations_are_token_means_of_the_full_story(smollm2, excerpt):
    tok = smollm2.tokenizer
    per_word = [tok(("" if j == 0 else " ") + w, add_special_tokens=False)["input_ids"]
                for j, w in enumerate(excerpt.words)]
    ids = [i for w in per_word for i in w]
    assert ids == tok(" ".join(excerpt.words), add_special_tokens=False)["input_ids"]
    expected = _pool(_token_activations(smollm2, ids), [len(w) for w in per_word], offset=0)
    got = word_activations(smollm2, excerpt.words)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("fixture", "context", "min_context"), [("minilm", 34, 8), ("smollm2", 24, 12)])
def test_each_window_equals_the_model_run_on_that_window_alone(request, excerpt, fixture, context, min_context):
    lm = request.getfixturevalue(fixture)
    tokens, policy, plan = prepare_story(lm, excerpt.words, context, min_context)
    assert plan.n_windows >= 3
    got = word_activations(lm, excerpt.words, context=context, min_context=min_context)
    prefix, suffix = list(tokens.prefix_ids), list(tokens.suffix_ids)
    for k in range(plan.n_windows):
        a, b = int(plan.start[k]), int(plan.stop[k])
        members = np.flatnonzero(plan.word_window == k)
        if not len(members):
            continue
        acts = _token_activations(lm, prefix + tokens.input_ids[a:b].tolist() + suffix)
        for j in members:
            s, e = tokens.word_start[j] - a + len(prefix), tokens.word_stop[j] - a + len(prefix)
            np.testing.assert_allclose(got[j], acts[s:e].mean(axis=0), rtol=1e-4, atol=1e-4)


def test_a_causal_response_does_not_change_when_later_words_change(smollm2, minilm, excerpt):
    first = list(excerpt.words[:40])
    a = first + list(excerpt.words[40:60])
    b = first + ["purple", "elephants", "sang", "loudly", "across", "Mars", "tonight"] * 3
    for kwargs in ({}, {"context": 24, "min_context": 12}):
        acts_a = word_activations(smollm2, a, **kwargs)[:40]
        acts_b = word_activations(smollm2, b, **kwargs)[:40]
        np.testing.assert_allclose(acts_a, acts_b, rtol=1e-5, atol=1e-5)
    # the same change does reach earlier words in a bidirectional model
    bert_a = word_activations(minilm, a)[:40]
    bert_b = word_activations(minilm, b)[:40]
    assert np.abs(bert_a - bert_b).max() > 1e-2


# ----------------------------------------------------------------------------- windows


def _synthetic_tokens(rng, n_words: int, max_len: int = 4) -> WordTokens:
    lengths = rng.integers(0, max_len + 1, n_words)
    gaps = (rng.random(n_words) < 0.1).astype(int)  # whitespace-only tokens between words
    owner = np.concatenate([np.r_[np.full(g, -1), np.full(n, j)] for j, (n, g) in enumerate(zip(lengths, gaps))])
    starts = np.zeros(n_words, int)
    stops = np.zeros(n_words, int)
    pos = 0
    for j, (n, g) in enumerate(zip(lengths, gaps)):
        pos += g
        starts[j], stops[j] = pos, pos + n
        pos += n
    return WordTokens(input_ids=np.zeros(len(owner), np.int64), token_word=owner, word_start=starts,
                      word_stop=stops, prefix_ids=(), suffix_ids=(), text="")


def test_causal_windows_give_every_word_its_past(rng):
    tokens = _synthetic_tokens(rng, 400)
    policy = context_policy(True, 64, 0, context=64, min_context=32)
    plan = plan_windows(tokens, policy)
    has = tokens.word_stop > tokens.word_start
    assert (plan.word_window[~has] == -1).all() and (plan.word_window[has] >= 0).all()
    assert (plan.stop - plan.start <= 64).all()
    w = plan.word_window[has]
    a, b = plan.start[w], plan.stop[w]
    p, q = tokens.word_start[has], tokens.word_stop[has]
    assert ((a <= p) & (q <= b)).all()
    assert ((p - a >= 32) | (a == 0)).all()
    assert (np.diff(w) >= 0).all()
    # overhead: about capacity / (capacity - min_context) tokens per story token
    assert (plan.stop - plan.start).sum() < 2.3 * tokens.n_tokens


def test_bidirectional_windows_take_each_word_where_it_is_most_central(rng):
    tokens = _synthetic_tokens(rng, 400)
    policy = context_policy(False, 66, 2, context=66, min_context=16)
    plan = plan_windows(tokens, policy)
    assert policy.capacity == 64
    assert plan.start[0] == 0 and plan.stop[-1] == tokens.n_tokens
    assert (plan.stop - plan.start == 64).all()
    assert (np.diff(plan.start) <= 64 - 2 * 16).all()
    has = tokens.word_stop > tokens.word_start
    p, q = tokens.word_start[has], tokens.word_stop[has]
    a, b = plan.start[None, :], plan.stop[None, :]
    inside = (a <= p[:, None]) & (q[:, None] <= b)
    side = np.where(inside, np.minimum(p[:, None] - a, b - q[:, None]), -1)
    chosen = plan.word_window[has]
    assert inside[np.arange(len(p)), chosen].all()
    np.testing.assert_array_equal(side[np.arange(len(p)), chosen], side.max(axis=1))
    interior = (p >= 16) & (q <= tokens.n_tokens - 16)
    assert (side[np.arange(len(p)), chosen][interior] >= 16 - 4).all()


def test_a_story_within_one_window_is_one_window(rng):
    tokens = _synthetic_tokens(rng, 20)
    plan = plan_windows(tokens, context_policy(False, 512, 2))
    assert plan.n_windows == 1 and (plan.word_window[tokens.word_stop > tokens.word_start] == 0).all()


def test_words_longer_than_a_window_still_get_one_window():
    lengths = np.array([3, 100, 2, 5])
    stops = np.cumsum(lengths)
    tokens = WordTokens(np.zeros(stops[-1], np.int64), np.repeat(np.arange(4), lengths),
                        stops - lengths, stops, (), (), "")
    for causal in (True, False):
        plan = plan_windows(tokens, context_policy(causal, 32, 0, context=32, min_context=8))
        assert (plan.word_window >= 0).all()
        assert (plan.stop - plan.start <= 32).all()


def test_context_policy_defaults_and_limits():
    causal = context_policy(True, 8192, 0)
    assert (causal.context, causal.min_context) == (1024, 512)
    bert = context_policy(False, 512, 2)
    assert (bert.context, bert.capacity, bert.min_context) == (512, 510, 127)
    with pytest.raises(ConfigError, match="'context'.*512.*4096"):
        context_policy(False, 512, 2, context=4096)
    with pytest.raises(ConfigError, match="'min_context'"):
        context_policy(True, 512, 0, context=64, min_context=64)


# ----------------------------------------------------------------------------- responses


def test_streaming_equals_all_at_once(minilm, excerpt):
    from napari_brainorg.features.alignment import hrf_operator

    streamed = extract_an_responses(excerpt, minilm, tr=TR, n_volumes=N_VOLUMES, context=34,
                                    min_context=8, batch_words=8)
    assert streamed.provenance["n_windows"] >= 3
    W = word_activations(minilm, excerpt.words, context=34, min_context=8).astype(np.float64)
    H = hrf_operator(excerpt.onsets, N_VOLUMES, TR)
    R = H @ (W - W.mean(0))  # centred over words by default
    X = (R - R.mean(0)) / R.std(0)
    assert streamed.responses.shape == (N_VOLUMES, 6 * 1536)
    np.testing.assert_allclose(streamed.responses, X, rtol=1e-4, atol=2e-4)
    raw = extract_an_responses(excerpt, minilm, tr=TR, n_volumes=N_VOLUMES, context=34,
                               min_context=8, batch_words=8, center_words=False)
    R = H @ W  # the paper's form
    np.testing.assert_allclose(raw.responses, (R - R.mean(0)) / R.std(0), rtol=1e-4, atol=2e-4)
    assert raw.provenance["cache_key"] != streamed.provenance["cache_key"]
    bigger = extract_an_responses(excerpt, minilm, tr=TR, n_volumes=N_VOLUMES, context=34,
                                  min_context=8, batch_words=512)
    np.testing.assert_allclose(streamed.responses, bigger.responses, rtol=1e-4, atol=2e-4)


def test_centring_takes_the_word_rate_out_of_the_ans(minilm, excerpt):
    from napari_brainorg.features.alignment import hrf_operator

    rate = hrf_operator(excerpt.onsets, N_VOLUMES, TR).sum(1)
    rate = (rate - rate.mean()) / rate.std()

    def median_abs_r(res):
        return float(np.median(np.abs(rate @ res.responses / N_VOLUMES)))

    raw = extract_an_responses(excerpt, minilm, tr=TR, n_volumes=N_VOLUMES, center_words=False)
    centred = extract_an_responses(excerpt, minilm, tr=TR, n_volumes=N_VOLUMES)
    assert median_abs_r(raw) > 0.6  # the paper's raw form: the word rate is in nearly every AN
    assert median_abs_r(centred) < 0.5 * median_abs_r(raw)


def test_pause_labels_do_not_reach_the_model(minilm, excerpt):
    from napari_brainorg.features.nuisance import PauseLabelsWarning

    k = 10
    with_sp = WordEvents(
        words=excerpt.words[:k] + ("sp",) + excerpt.words[k:],
        onsets=np.insert(excerpt.onsets, k, excerpt.offsets[k - 1]),
        offsets=np.insert(excerpt.offsets, k, excerpt.onsets[k]),
        measured=np.insert(excerpt.measured, k, True),
    )
    with pytest.warns(PauseLabelsWarning, match="1 of 61"):
        a = extract_an_responses(with_sp, minilm, tr=TR, n_volumes=N_VOLUMES)
    b = extract_an_responses(excerpt, minilm, tr=TR, n_volumes=N_VOLUMES)
    np.testing.assert_allclose(a.responses, b.responses, rtol=1e-5, atol=1e-5)
    kept = extract_an_responses(with_sp, minilm, tr=TR, n_volumes=N_VOLUMES, pause_labels=None)
    assert np.abs(kept.responses - b.responses).max() > 0.05


def test_columns_are_zscored_and_indexed(smollm2, excerpt):
    res = extract_an_responses(excerpt, smollm2, tr=TR, n_volumes=N_VOLUMES)
    assert res.responses.dtype == np.float32 and res.responses.shape == (N_VOLUMES, 30 * 1536)
    np.testing.assert_allclose(res.responses.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(res.responses.std(axis=0), 1, atol=1e-4)
    assert list(res.index.columns) == ["layer", "unit", "site"]
    assert res.index["layer"].tolist() == np.repeat(np.arange(30), 1536).tolist()
    assert res.provenance["model"]["causal"] is True and len(res.dropped) == 0


def test_zscore_drops_columns_without_variance():
    rng = np.random.default_rng(0)
    R = rng.normal(size=(30, 6)) * np.array([1, 1, 1, 1e-3, 1, 1])
    R[:, 1] = 0.0
    R[:, 2] = 3.7
    R[4, 5] = np.nan
    responses, keep, reason = _zscore_columns(torch.tensor(R), block=4)
    assert keep.tolist() == [True, False, False, True, True, False]
    assert reason.tolist() == ["", "no variance", "no variance", "", "", "non-finite"]
    expected = R[:, keep]
    np.testing.assert_allclose(responses, (expected - expected.mean(0)) / expected.std(0), rtol=1e-5, atol=1e-5)


def test_words_outside_the_scan_leave_no_variance_and_are_reported(minilm, excerpt):
    with pytest.warns(DroppedANsWarning, match="9216 of 9216"):
        res = extract_an_responses(excerpt, minilm, tr=TR, n_volumes=N_VOLUMES, onset=10_000.0)
    assert res.responses.shape == (N_VOLUMES, 0)
    assert len(res.dropped) == 9216 and set(res.dropped["reason"]) == {"no variance"}
    assert res.provenance["onset"] == 10_000.0


def test_an_empty_word_contributes_nothing(minilm, excerpt):
    k = 10
    with_empty = WordEvents(
        words=excerpt.words[:k] + ("",) + excerpt.words[k:],
        onsets=np.insert(excerpt.onsets, k, excerpt.onsets[k]),
        offsets=np.insert(excerpt.offsets, k, excerpt.offsets[k]),
        measured=np.insert(excerpt.measured, k, True),
    )
    a = extract_an_responses(excerpt, minilm, tr=TR, n_volumes=N_VOLUMES)
    b = extract_an_responses(with_empty, minilm, tr=TR, n_volumes=N_VOLUMES)
    assert b.provenance["n_words_without_tokens"] == 1
    np.testing.assert_allclose(a.responses, b.responses, rtol=1e-5, atol=1e-5)


def test_onset_shifts_the_story(minilm, excerpt):
    a = extract_an_responses(excerpt, minilm, tr=TR, n_volumes=N_VOLUMES, onset=6.0)
    b = extract_an_responses(excerpt.shifted(6.0), minilm, tr=TR, n_volumes=N_VOLUMES)
    c = extract_an_responses(excerpt, minilm, tr=TR, n_volumes=N_VOLUMES)
    np.testing.assert_array_equal(a.responses, b.responses)
    assert np.abs(a.responses - c.responses).max() > 0.1


# ----------------------------------------------------------------------------- cache


def test_cache_hit_and_recompute_on_a_changed_option(minilm, excerpt, tmp_path):
    import hashlib

    out = tmp_path / "features" / "minilm"
    first = extract_an_responses(excerpt, minilm, tr=TR, n_volumes=N_VOLUMES, cache_dir=out)
    assert not first.from_cache
    # the tables' column descriptions (BIDS sidecars) beside them
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        [*AN_FILES, "an_index.json", "dropped.json"])
    on_disk = np.load(out / "an_responses.npy")
    assert on_disk.dtype == np.float32
    np.testing.assert_array_equal(on_disk, first.responses)

    prov = json.loads((out / "provenance.json").read_text())
    weights = minilm.spec.path / "model.safetensors"
    assert prov["model"]["weights_sha256"]["model.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    for key in ("site", "context_policy", "alignment", "tr", "n_volumes", "onset", "story", "versions",
                "tokenizer", "device", "dtype", "cache_key"):
        assert key in prov, key
    assert prov["context_policy"]["context"] == 512 and "bidirectional" in prov["context_policy"]["description"]

    again = extract_an_responses(excerpt, "minilm", tr=TR, n_volumes=N_VOLUMES, cache_dir=out)
    assert again.from_cache and again.provenance["cache_key"] == first.provenance["cache_key"]
    np.testing.assert_array_equal(again.responses, first.responses)
    assert again.index.equals(first.index)

    changed = extract_an_responses(excerpt, minilm, tr=2.0, n_volumes=N_VOLUMES, cache_dir=out)
    assert not changed.from_cache and changed.provenance["cache_key"] != first.provenance["cache_key"]
    assert json.loads((out / "provenance.json").read_text())["tr"] == 2.0
    site = extract_an_responses(excerpt, minilm, tr=2.0, n_volumes=N_VOLUMES, site="residual", cache_dir=out)
    assert not site.from_cache and site.responses.shape == (N_VOLUMES, 6 * 384)
    assert load_an_responses(out).index["site"].eq("residual").all()

    (out / "provenance.json").unlink()  # an incomplete folder is never trusted
    redo = extract_an_responses(excerpt, minilm, tr=2.0, n_volumes=N_VOLUMES, site="residual", cache_dir=out)
    assert not redo.from_cache


def test_a_folder_of_someone_elses_files_is_never_written(minilm, excerpt, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="did not write"):
        extract_an_responses(excerpt, minilm, tr=TR, n_volumes=N_VOLUMES, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_load_an_responses_names_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="an_responses.npy"):
        load_an_responses(tmp_path)


# ----------------------------------------------------------------------------- options


def test_bad_options_are_named(minilm, excerpt):
    kwargs = dict(tr=TR, n_volumes=N_VOLUMES)
    with pytest.raises(ConfigError, match=r"'site'.*Did you mean 'ffn_out'"):
        extract_an_responses(excerpt, minilm, site="ffn_outt", **kwargs)
    with pytest.raises(ConfigError, match="'alignment'"):
        extract_an_responses(excerpt, minilm, alignment="gamma", **kwargs)
    with pytest.raises(ConfigError, match="'tr'"):
        extract_an_responses(excerpt, minilm, tr=0, n_volumes=N_VOLUMES)
    with pytest.raises(ConfigError, match="'n_volumes'"):
        extract_an_responses(excerpt, minilm, tr=TR, n_volumes=1)
    with pytest.raises(ConfigError, match="'context'"):
        extract_an_responses(excerpt, minilm, context=4096, **kwargs)
    with pytest.raises(ConfigError, match="'batch_words'"):
        extract_an_responses(excerpt, minilm, batch_words=0, **kwargs)


def test_progress_is_reported_and_cancel_stops(minilm, excerpt):
    seen = []
    extract_an_responses(excerpt, minilm, tr=TR, n_volumes=N_VOLUMES, context=34, min_context=8,
                         batch_words=8, progress=lambda *a: seen.append(a))
    stages = [s for s in seen if s[0] == "minilm ANs"]
    assert len(stages) >= 4 and stages[-1][1] == stages[-1][2] == 60
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        extract_an_responses(excerpt, minilm, tr=TR, n_volumes=N_VOLUMES, cancel=cancel)


def test_cancel_during_a_forward_pass_stops_before_the_next_layer(minilm, excerpt):
    """A cancel pressed while a chunk goes through the model stops it inside that chunk: the
    layers after the one running do not run, nor does any later chunk (one chunk of a large
    model takes seconds; the user waits at most one layer)."""
    from napari_brainorg.features.sites import site_hooks

    layers = [h.module for h in site_hooks(minilm.model, minilm.spec.architecture, "ffn_hidden")]
    assert len(layers) >= 4
    cancel = threading.Event()
    calls = []

    def count(module, *_):
        calls.append(layers.index(module))
        if len(calls) == 2:  # the user presses Cancel while layer 1 of the first chunk runs
            cancel.set()

    handles = [m.register_forward_hook(count) for m in layers]
    try:
        with pytest.raises(CancelledError):
            extract_an_responses(excerpt, minilm, tr=TR, n_volumes=N_VOLUMES, context=34, min_context=8,
                                 batch_words=60, cancel=cancel)
    finally:
        for h in handles:
            h.remove()
    # the chunk stopped at the latest at the next layer's hook: the model's other layers never ran
    assert calls[:2] == [0, 1] and len(calls) <= 3, calls
