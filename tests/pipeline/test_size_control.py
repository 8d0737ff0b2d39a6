"""Model-size control: the same total number of ANs from models of different depth."""

from __future__ import annotations

import json
import types

import numpy as np
import pandas as pd
import pytest

from napari_brainorg.errors import ConfigError
from napari_brainorg.io.results import ResultWriter
from napari_brainorg.pipeline import make_config
from napari_brainorg.pipeline.context import StepContext
from napari_brainorg.pipeline.steps.atoms import step_atoms
from napari_brainorg.sparse.planted import planted_ans


def _fake_model(rng, n_layers, per_layer, n_volumes=60):
    X, _ = planted_ans(n_volumes, n_layers * per_layer, 5, random_state=rng)
    index = pd.DataFrame({"layer": np.repeat(np.arange(n_layers), per_layer),
                          "unit": np.tile(np.arange(per_layer), n_layers), "site": "ffn_hidden"})
    return types.SimpleNamespace(responses=X.astype(np.float32), index=index)


def test_ans_total_equalises_models_of_different_depth(rng, tmp_path):
    config = make_config({"atoms": {"n_atoms": 5, "max_iter": 20, "ans_total": 240, "size_draws": 3,
                                    "n_restarts": 0, "backend": "numpy"},
                          "out": str(tmp_path / "out")})
    ctx = StepContext(config, ResultWriter(tmp_path / "out"), None, None)
    for slug, n_layers in (("shallow", 6), ("deep", 30)):
        ctx.keys[f"features/{slug}"] = slug
        model = _fake_model(rng, n_layers, 50)
        atoms, codes, index = step_atoms(ctx, model, slug)
        assert codes.shape[1] == len(index) == 240  # the same total, whatever the depth
        counts = index["layer"].value_counts()
        assert len(counts) == n_layers and counts.max() - counts.min() <= 1  # spread evenly over layers
        info = json.loads((tmp_path / f"out/atoms/{slug}/dictionary.json").read_text())
        size = info["size_control"]
        assert size["rule"] == "ans_total" and size["n_draws"] == 3 and size["n_ans_per_draw"] == 240
        ev = size["explained_variance"]
        assert len(ev["values"]) == 3 and ev["sd"] > 0 and 0.3 < ev["mean"] < 1
        assert size["matched_to_first"]["values"][0] == 1.0  # the first draw is the analysed one
        assert info["n_ans"] == 240


def test_size_rules_are_exclusive_and_a_model_too_small_is_named(rng, tmp_path):
    with pytest.raises(ConfigError, match="at most one of 'ans_per_layer'"):
        make_config({"atoms": {"ans_per_layer": 10, "ans_total": 100}, "out": str(tmp_path / "x")})
    config = make_config({"atoms": {"n_atoms": 3, "ans_total": 1000, "n_restarts": 0}, "out": str(tmp_path / "y")})
    ctx = StepContext(config, ResultWriter(tmp_path / "y"), None, None)
    ctx.keys["features/small"] = "small"
    with pytest.raises(ConfigError, match=r"'small' \(300 ANs\).*n_total"):
        step_atoms(ctx, _fake_model(rng, 6, 50), "small")


def test_atoms_seed_changes_the_start_and_atoms_are_oriented(rng, tmp_path):
    model = _fake_model(rng, 4, 100)
    learned = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        config = make_config({"atoms": {"n_atoms": 8, "max_iter": 15, "seed": seed, "n_restarts": 1,
                                        "backend": "numpy"}, "out": str(tmp_path / name)})
        ctx = StepContext(config, ResultWriter(tmp_path / name), None, None)
        ctx.keys["features/m"] = "m"
        atoms, codes, _ = step_atoms(ctx, model, "m")
        learned[name] = atoms
        dense = codes.toarray()
        for j in range(dense.shape[0]):  # the sign rule: most members of every atom positive
            members = dense[j][dense[j] != 0]
            assert members.size == 0 or (members > 0).sum() >= (members < 0).sum()
        info = json.loads((tmp_path / name / "atoms/m/dictionary.json").read_text())
        rep = info["reproducibility"]
        assert info["init"] == "random" and rep["seeds"] == [seed + 1] and len(rep["per_atom"]) == 8
    np.testing.assert_array_equal(learned["a"], learned["b"])
    assert not np.allclose(learned["a"], learned["c"])  # another seed, another start


def test_baseline_model_must_be_one_of_the_models(tmp_path):
    with pytest.raises(ConfigError, match="baseline_model.*'smollm2' was provided"):
        make_config({"features": {"models": ["minilm"], "baselines": ["untrained"], "baseline_model": "smollm2"},
                     "out": str(tmp_path / "x")})
    config = make_config({"features": {"models": ["minilm"], "baselines": ["phase_randomised", "nuisance"]},
                          "out": str(tmp_path / "y")})
    from napari_brainorg.pipeline.context import baseline_slugs

    assert baseline_slugs(config) == {"phase_randomised": "minilm-phase-randomised", "nuisance": "nuisance"}


def test_the_nuisance_baseline_is_not_its_own_confound(tmp_path):
    from napari_brainorg.pipeline.study import study_confounds

    config = make_config({"features": {"models": ["minilm"], "baselines": ["nuisance"]}, "out": str(tmp_path / "x")})
    ctx = StepContext(config, ResultWriter(tmp_path / "x"), None, None)
    ctx.confounds = pd.DataFrame(np.random.default_rng(0).standard_normal((300, 4)),
                                 columns=["word_rate", "word_length", "word_frequency", "pause"])
    assert study_confounds(ctx, "minilm").shape == (300, 4)  # the models are fitted with the confounds
    assert study_confounds(ctx, "nuisance") is None          # the nuisance atoms are the confounds
