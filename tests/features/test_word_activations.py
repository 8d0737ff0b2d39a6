"""The word activations the extraction keeps (``word_activations.npy``), on the bundled MiniLM."""

from __future__ import annotations

import json
import threading
import warnings

import numpy as np
import pytest

from napari_brainorg.errors import CancelledError
from napari_brainorg.features.activations import word_activations
from napari_brainorg.features.extract import extract_an_responses, story_sha256
from napari_brainorg.features.models import load_language_model
from napari_brainorg.features.word_activations import WORD_ACTIVATIONS_FILE, open_word_activations
from napari_brainorg.io.stimuli import WordEvents, read_story

torch = pytest.importorskip("torch")

TR = 1.5
N_VOLUMES = 40
EMPTY = 7  # a word without tokens: its row stays zero and is not centred


@pytest.fixture(scope="module")
def minilm():
    return load_language_model("minilm")


@pytest.fixture(scope="module")
def excerpt() -> WordEvents:
    """The first 80 words of pieman, one of them emptied."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        story = read_story("pieman")
    n = 80
    words = list(story.words[:n])
    words[EMPTY] = ""
    return WordEvents(words=words, onsets=story.onsets[:n], offsets=story.offsets[:n],
                      measured=story.measured[:n], source="pieman-excerpt")


def _extract(excerpt, minilm, folder, **kwargs):
    return extract_an_responses(excerpt, minilm, tr=TR, n_volumes=N_VOLUMES, cache_dir=folder, **kwargs)


def _leftovers(folder) -> list[str]:
    """Temporary pieces of the word activations file anywhere under ``folder``'s parent
    (a cancel may come before the folder itself is made)."""
    return sorted(p.name for p in folder.parent.rglob(f".{WORD_ACTIVATIONS_FILE}*"))


def test_the_extraction_keeps_exactly_the_word_activations_it_computed(minilm, excerpt, tmp_path):
    folder = tmp_path / "f"
    # small chunks: the file is written in several pieces, around the empty word
    ans = _extract(excerpt, minilm, folder, word_activations_max_gb=1.0, batch_words=16)
    kept = np.load(folder / WORD_ACTIVATIONS_FILE)
    expected = word_activations(minilm, excerpt.words, batch_words=16)
    assert kept.dtype == np.float32 and kept.shape == (len(excerpt), 6 * 1536)
    np.testing.assert_array_equal(kept, expected)
    assert not kept[EMPTY].any()
    record = ans.provenance["word_activations"]
    assert record["kept"] and record["shape"] == list(kept.shape) and record["words_without_tokens"] == [EMPTY]
    assert json.loads((folder / "provenance.json").read_text())["word_activations"] == record
    # read back by blocks of columns through the memory map, in any column order
    stored, reason = open_word_activations(folder, ans.provenance, len(excerpt), story_sha256(excerpt))
    assert reason == "" and stored.shape == kept.shape
    assert stored.has_tokens.sum() == len(excerpt) - 1 and not stored.has_tokens[EMPTY]
    cols = np.array([9000, 3, 4000])
    np.testing.assert_array_equal(stored[:, cols], expected[:, cols])
    assert _leftovers(folder) == []


def test_over_the_budget_nothing_is_kept_and_provenance_says_why(minilm, excerpt, tmp_path):
    folder = tmp_path / "f"
    ans = _extract(excerpt, minilm, folder, word_activations_max_gb=0.001)  # 80 x 9216 x 4 B = 2.8 MB
    record = ans.provenance["word_activations"]
    assert not record["kept"] and "0.001 GiB (features.word_activations_max_gb)" in record["reason"]
    assert not (folder / WORD_ACTIVATIONS_FILE).exists() and _leftovers(folder) == []
    stored, reason = open_word_activations(folder, ans.provenance, len(excerpt), story_sha256(excerpt))
    assert stored is None and "did not keep them" in reason and "0.001 GiB" in reason


def test_a_new_extraction_in_the_folder_removes_the_old_file_and_another_story_is_refused(minilm, excerpt,
                                                                                           tmp_path):
    folder = tmp_path / "f"
    first = _extract(excerpt, minilm, folder, word_activations_max_gb=1.0)
    other = WordEvents(words=list(excerpt.words[:-1]) + ["zebra"], onsets=excerpt.onsets,
                       offsets=excerpt.offsets, measured=excerpt.measured, source="pieman-changed")
    stored, reason = open_word_activations(folder, first.provenance, len(other), story_sha256(other))
    assert stored is None and "another story" in reason
    # cached: the same inputs find the file again, whatever the budget (it changes no number)
    again = _extract(excerpt, minilm, folder, word_activations_max_gb=0.0)
    assert again.from_cache and (folder / WORD_ACTIVATIONS_FILE).is_file()
    # other inputs over the budget: the old file (other words) is gone, not left to be misread
    changed = _extract(other, minilm, folder, word_activations_max_gb=0.0)
    assert not changed.from_cache and not (folder / WORD_ACTIVATIONS_FILE).exists()


def test_a_cancelled_extraction_leaves_no_partial_file(minilm, excerpt, tmp_path):
    folder = tmp_path / "f"
    cancel = threading.Event()

    def progress(stage, done, total):
        if done > 0 and stage.endswith("ANs"):
            cancel.set()  # after the first chunk of words is written

    with pytest.raises(CancelledError):
        _extract(excerpt, minilm, folder, word_activations_max_gb=1.0, batch_words=16, progress=progress,
                 cancel=cancel)
    assert not (folder / WORD_ACTIVATIONS_FILE).exists() and _leftovers(folder) == []
