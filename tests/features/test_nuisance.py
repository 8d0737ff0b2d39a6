"""Nuisance regressors and pause labels (no model runs here)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_brainorg.features.alignment import hrf_operator
from napari_brainorg.features.nuisance import (
    DEFAULT_PAUSE_LABELS,
    NuisanceWarning,
    PauseLabelsWarning,
    nuisance_regressors,
    pause_intervals,
    remove_pause_labels,
    word_frequencies,
    word_lengths,
)
from napari_brainorg.io.stimuli import WordEvents

TR, N_VOL = 1.5, 80


def _events(words, onsets, duration=0.3):
    onsets = np.asarray(onsets, float)
    return WordEvents(words=tuple(words), onsets=onsets, offsets=onsets + duration,
                      measured=np.ones(len(words), bool), source="test")


def _z(x):
    return (x - x.mean()) / x.std()


@pytest.fixture
def story(rng):
    # bursts of speech with silences between them, common and rare words mixed
    vocab = ["the", "a", "of", "and", "serendipitous", "antidisestablishmentarianism", "cat", "quixotic"]
    onsets, t = [], 2.0
    while t < N_VOL * TR - 10:
        for _ in range(int(rng.integers(3, 12))):
            onsets.append(t)
            t += 0.35
        t += float(rng.uniform(1.0, 6.0))  # a pause
    words = [vocab[i] for i in rng.integers(0, len(vocab), len(onsets))]
    return _events(words, onsets)


def test_word_rate_is_the_operator_applied_to_ones(story):
    df = nuisance_regressors(story, TR, N_VOL)
    assert list(df.columns) == ["word_rate", "word_length", "word_frequency", "pause"]
    assert df.shape == (N_VOL, 4)
    H = hrf_operator(story.onsets, N_VOL, TR)
    np.testing.assert_allclose(df["word_rate"], _z(H.sum(1)), atol=1e-10)
    lengths = word_lengths(story.words)
    np.testing.assert_allclose(df["word_length"], _z(H @ (lengths - lengths.mean())), atol=1e-10)
    np.testing.assert_allclose(df.mean(), 0, atol=1e-10)
    np.testing.assert_allclose(df.std(ddof=0), 1, atol=1e-10)


def test_other_operator_is_used_when_asked(story):
    fir = nuisance_regressors(story, TR, N_VOL, alignment="fir")
    H = hrf_operator(story.onsets, N_VOL, TR, method="fir")
    np.testing.assert_allclose(fir["word_rate"], _z(H.sum(1)), atol=1e-10)
    assert not np.allclose(fir["word_rate"], nuisance_regressors(story, TR, N_VOL)["word_rate"])


def test_word_frequency_and_length_come_from_the_words():
    zipf = word_frequencies(["the", "serendipitous", "qzxvkj", "don't", ""])
    assert zipf[0] > 7 > zipf[1] > 0 and zipf[2] == 0 and zipf[3] > 5 and zipf[4] == 0
    np.testing.assert_array_equal(word_lengths(["the,", "don't", "I’m", "1984", "--"]), [3, 4, 2, 4, 0])


def test_word_frequency_regressor_follows_frequent_words():
    # the first half of the story is said with common words, the second with rare ones
    onsets = np.arange(2.0, N_VOL * TR - 10, 0.5)
    half = onsets < N_VOL * TR / 2
    words = ["the" if h else "quixotic" for h in half]
    df = nuisance_regressors(_events(words, onsets), TR, N_VOL, min_pause=10)
    first, second = df["word_frequency"][: N_VOL // 2 - 5], df["word_frequency"][N_VOL // 2 + 10: -10]
    assert first.mean() > 0.5 > -0.5 > second.mean()
    # same rate everywhere: length and frequency carry what rate does not
    assert "pause" not in df.columns  # no gap reaches 10 s: no variance, dropped


def test_no_pause_means_no_pause_column_and_a_warning():
    onsets = np.arange(2.0, N_VOL * TR - 10, 0.4)
    with pytest.warns(NuisanceWarning, match="pause"):
        df = nuisance_regressors(_events(["the"] * len(onsets), onsets), TR, N_VOL)
    assert "pause" not in df.columns


def test_pause_regressor_follows_silences(story):
    on, dur = pause_intervals(story, min_pause=0.5)
    gaps = np.diff(story.onsets) - 0.3
    assert on.size == int((gaps >= 0.5).sum()) and np.all(dur >= 0.5)
    df = nuisance_regressors(story, TR, N_VOL, min_pause=0.5)
    P = hrf_operator(on, N_VOL, TR, durations=dur)
    np.testing.assert_allclose(df["pause"], _z(P.sum(1)), atol=1e-10)
    assert np.corrcoef(df["pause"], df["word_rate"])[0, 1] < -0.3  # silence is where words are not


def test_pause_labels_are_silence_not_words(story):
    # an aligner's output: the same words with pause labels in the gaps
    words, onsets = list(story.words), list(story.onsets)
    labelled_w, labelled_on = [], []
    for i, (w, t) in enumerate(zip(words, onsets)):
        labelled_w.append(w)
        labelled_on.append(t)
        if i + 1 < len(words) and onsets[i + 1] - t > 1.0:
            labelled_w.append(["sp", "SIL", "<sil>", "{SL}"][i % 4])
            labelled_on.append(t + 0.4)
    labelled = _events(labelled_w, labelled_on)
    n_labels = len(labelled) - len(story)
    assert n_labels > 3
    with pytest.warns(PauseLabelsWarning, match=f"{n_labels} of {len(labelled)}"):
        clean, n = remove_pause_labels(labelled)
    assert n == n_labels and clean.words == story.words
    np.testing.assert_array_equal(clean.onsets, story.onsets)
    with pytest.warns(PauseLabelsWarning):
        df = nuisance_regressors(labelled, TR, N_VOL)
    np.testing.assert_allclose(df, nuisance_regressors(story, TR, N_VOL), atol=1e-12)
    # an empty list keeps the labels as words: the word rate changes
    kept, n0 = remove_pause_labels(labelled, [])
    assert n0 == 0 and len(kept) == len(labelled)
    assert not np.allclose(nuisance_regressors(labelled, TR, N_VOL, pause_labels=[])["word_rate"],
                           df["word_rate"])


def test_unknown_words_are_kept_and_labels_are_case_blind():
    ev = _events(["hello", "<unk>", "SP", "spn", "Sil"], [1, 2, 3, 4, 5])
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        clean, n = remove_pause_labels(ev)
    assert clean.words == ("hello", "<unk>", "spn") and n == 2
    assert "sp" in DEFAULT_PAUSE_LABELS and "<unk>" not in DEFAULT_PAUSE_LABELS


def test_pause_labels_must_be_a_list():
    from napari_brainorg.errors import ConfigError

    with pytest.raises(ConfigError, match="pause_labels"):
        remove_pause_labels(_events(["a"], [1.0]), "sp")
