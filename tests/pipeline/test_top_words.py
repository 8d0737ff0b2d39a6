"""Top words from the word activations the features step kept, and from a second pass of the
model where they are missing: the same ``top_words.tsv`` and ``word_responses.npy``.

Short excerpts of the bundled 'pieman' and 'lucy', the bundled MiniLM, a small dictionary.
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from napari_brainorg.errors import BrainorgWarning
from napari_brainorg.io.results import ResultWriter
from napari_brainorg.pipeline import make_config
from napari_brainorg.pipeline.context import StepContext
from napari_brainorg.pipeline.steps.atoms import step_atoms
from napari_brainorg.pipeline.steps.features import step_features
from napari_brainorg.pipeline.steps.story import step_story
from napari_brainorg.pipeline.steps.top_words import step_top_words

pytest.importorskip("torch")

TR = 1.5
OUTPUTS = ("atoms/minilm/word_responses.npy", "atoms/minilm/top_words.tsv")


def _story_file(folder, name: str, n_volumes: int) -> str:
    """The bundled story's first ``n_volumes`` x TR seconds as a word/onset/offset TSV."""
    from napari_brainorg.datasets import story_path

    table = pd.read_csv(story_path(name), header=None, names=["word", "aligned", "onset", "offset"])
    table = table.dropna(subset=["onset", "offset"])
    t0 = float(table["onset"].iloc[0]) - 1.0
    table = table.assign(onset=table["onset"] - t0, offset=table["offset"] - t0)
    table = table[table["offset"] < n_volumes * TR - 2.0]
    path = folder / f"{name}.tsv"
    table[["word", "onset", "offset"]].to_csv(path, sep="\t", index=False)
    return str(path)


def _run(folder, budget_gb: float, stories: tuple[str, ...] = ("pieman",)):
    """Story, features, atoms and top words.

    Returns (the context, the top-words step's inputs (words, codes, index), its warnings)."""
    data = {"features": {"models": ["minilm"], "device": "cpu", "center_words": True,
                         "word_activations_max_gb": budget_gb},
            "atoms": {"n_atoms": 6, "max_iter": 10, "n_restarts": 0}, "out": str(folder / "out")}
    if len(stories) == 1:
        data["story"] = {"path": _story_file(folder, stories[0], 80), "tr": TR, "n_volumes": 80}
    else:
        data["stories"] = [{"name": n, "path": _story_file(folder, n, 50), "tr": TR, "n_volumes": 50}
                           for n in stories]
    ctx = StepContext(make_config(data), ResultWriter(folder / "out"), None, None)
    words = step_story(ctx)
    ans = step_features(ctx, words, "minilm")
    _, codes, index = step_atoms(ctx, ans, "minilm")
    return ctx, (words, codes, index), _top_words(ctx, (words, codes, index))


def _top_words(ctx, inputs) -> list[str]:
    words, codes, index = inputs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step_top_words(ctx, words, "minilm", "minilm", codes, index)
    return [str(w.message) for w in caught if issubclass(w.category, BrainorgWarning) and "top words" in str(w.message)]


def _outputs(ctx):
    return (np.load(ctx.out / OUTPUTS[0]),
            pd.read_csv(ctx.out / OUTPUTS[1], sep="\t", keep_default_na=False))


def _assert_same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1], check_exact=True)


@pytest.fixture(scope="module")
def one_story(tmp_path_factory):
    """The same excerpt with the word activations kept (2 GiB) and not kept (budget 0)."""
    base = tmp_path_factory.mktemp("top_words")
    (base / "kept").mkdir()
    (base / "second").mkdir()
    return _run(base / "kept", 2.0), _run(base / "second", 0.0)


def test_top_words_read_from_the_kept_activations_equal_a_second_pass_of_the_model(one_story):
    (kept, _, kept_warned), (second, _, second_warned) = one_story
    assert (kept.out / "features/minilm/word_activations.npy").is_file() and kept_warned == []
    assert not (second.out / "features/minilm/word_activations.npy").exists()
    assert len(second_warned) == 1 and "running the model over the story a second time" in second_warned[0]
    assert "features.word_activations_max_gb" in second_warned[0]
    _assert_same(_outputs(kept), _outputs(second))


def test_word_responses_are_the_least_squares_readout_of_the_centred_activations(one_story):
    """The file route against the module's formula, written out densely from the model's own
    word activations (a second, independent computation)."""
    from napari_brainorg.features.activations import word_activations
    from napari_brainorg.features.alignment import hrf_operator
    from napari_brainorg.features.models import load_language_model

    (ctx, (words, codes, index), _), _ = one_story
    A = word_activations(load_language_model("minilm"), words.words).astype(np.float64)
    cols = (index["layer"].to_numpy() * 1536 + index["unit"].to_numpy()).astype(int)  # MiniLM: 1536 per layer
    W = A[:, cols]
    seen = np.any(A != 0, axis=1)
    W[seen] -= W[seen].mean(axis=0)
    H = hrf_operator(words.onsets, ctx.config.story.n_volumes, TR)
    scale = (H @ W).std(axis=0)
    C = codes.toarray()
    gram = C @ C.T
    eps = 1e-6 * np.trace(gram) / len(gram)
    expected = (W / scale) @ np.linalg.solve(gram + eps * np.eye(len(gram)), C).T
    responses, table = _outputs(ctx)
    np.testing.assert_allclose(responses, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert set(table["word_index"]) <= set(range(len(words)))


def test_a_folder_of_an_earlier_version_falls_back_to_the_second_pass(one_story, tmp_path):
    """Features extracted before the file existed (no record in provenance.json, no file):
    the top-words step runs the model again, says so, and writes the same outputs."""
    (kept, inputs, _), _ = one_story
    before = _outputs(kept)
    old = tmp_path / "old"
    shutil.copytree(kept.out, old)
    ctx = StepContext(kept.config, ResultWriter(old), None, None, keys=dict(kept.keys))
    (old / "features/minilm/word_activations.npy").unlink()
    prov_path = old / "features/minilm/provenance.json"
    prov = json.loads(prov_path.read_text())
    del prov["word_activations"]
    prov_path.write_text(json.dumps(prov))
    warned = _top_words(ctx, inputs)  # the key changed with the file gone: the step runs again
    assert len(warned) == 1 and "earlier version" in warned[0] and "second time" in warned[0]
    _assert_same(_outputs(ctx), before)


def test_several_stories_within_and_beyond_the_budget_give_the_same_top_words(tmp_path):
    """Both stories kept; only the first (the budget holds for a model's stories together);
    none: the same outputs, with a ``story`` column and the codes' columns found per story."""
    results = {}
    first_gb = None
    for name in ("both", "first", "none"):
        (tmp_path / name).mkdir()
        if name == "both":
            budget = 2.0
        elif name == "first":  # exactly the first story's file
            budget = first_gb
        else:
            budget = 0.0
        ctx, (words, _, _), warned = _run(tmp_path / name, budget, stories=("pieman", "lucy"))
        files = {s: ctx.out / f"features/minilm/{s}/word_activations.npy" for s in ("pieman", "lucy")}
        if name == "both":
            first_gb = files["pieman"].stat().st_size / 1024 ** 3
            assert all(f.is_file() for f in files.values()) and warned == []
        elif name == "first":
            assert files["pieman"].is_file() and not files["lucy"].exists()
            assert len(warned) == 1 and "(story 'lucy')" in warned[0]
        else:
            assert len(warned) == 2
        results[name] = _outputs(ctx)
    _assert_same(results["both"], results["first"])
    _assert_same(results["both"], results["none"])
    table = results["both"][1]
    in_scan = table["volume"] >= 0
    story_of_word = np.where(table["word_index"] < len(words[0]), "pieman", "lucy")
    assert in_scan.all() and (table["story"] == story_of_word).all()
    assert set(table["story"]) == {"pieman", "lucy"}
