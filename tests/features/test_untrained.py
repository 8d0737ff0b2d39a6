"""The untrained twin of a bundled model: random weights from its configuration, offline."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_brainorg.features.extract import extract_an_responses
from napari_brainorg.features.models import load_language_model
from napari_brainorg.features.untrained import load_untrained_model
from napari_brainorg.io.stimuli import WordEvents, read_story

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def excerpt() -> WordEvents:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        story = read_story("pieman")
    n = 40
    return WordEvents(words=story.words[:n], onsets=story.onsets[:n], offsets=story.offsets[:n],
                      measured=story.measured[:n], source="pieman-excerpt")


def test_untrained_twin_is_seeded_and_not_the_trained_model(excerpt):
    state = torch.random.get_rng_state()
    a, b, c = (load_untrained_model("minilm", seed=s) for s in (0, 0, 1))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's torch seed is left alone
    trained = load_language_model("minilm")
    name = "encoder.layer.2.intermediate.dense.weight"
    wa, wb, wc, wt = (dict(m.model.named_parameters())[name] for m in (a, b, c, trained))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc) and not torch.equal(wa, wt)
    assert a.spec.name == "minilm-untrained-seed0" and a.extra["untrained"] and a.extra["init_seed"] == 0
    assert a.n_layers == trained.n_layers and a.ffn_size == trained.ffn_size
    # same architecture, same ANs, other responses; the cache key tells them apart
    ra = extract_an_responses(excerpt, a, tr=1.5, n_volumes=30)
    rt = extract_an_responses(excerpt, trained, tr=1.5, n_volumes=30)
    assert ra.provenance["n_ans"] == rt.provenance["n_ans"] == 6 * 1536
    assert ra.provenance["cache_key"] != rt.provenance["cache_key"]
    assert ra.provenance["model"]["untrained_init_seed"] == 0
    both = ra.index.reset_index().merge(rt.index.reset_index(), on=["layer", "unit", "site"])
    r = np.mean(ra.responses[:, both["index_x"]] * rt.responses[:, both["index_y"]], axis=0)
    assert len(both) > 9000 and np.median(np.abs(r)) < 0.9  # not the trained model's responses
