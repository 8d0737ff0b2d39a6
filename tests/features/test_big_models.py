"""Big models: precision by device, placement over devices and disk, Llama-3-8B's shape.

The Llama-3-8B-shaped model has RANDOM weights (built from the configuration, nothing
downloaded): these tests check shapes, labels and the code paths, never what its ANs mean.
GPU paths run where torch sees CUDA and are skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_brainorg.errors import ConfigError
from napari_brainorg.features.extract import extract_an_responses
from napari_brainorg.features.models import (
    LLAMA3_8B_SHAPE,
    llama3_8b_config,
    llama3_8b_shaped_model,
    load_language_model,
    resolve_dtype,
)
from napari_brainorg.features.sites import site_hooks
from napari_brainorg.io.stimuli import WordEvents, read_story

torch = pytest.importorskip("torch")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here: the GPU path (bfloat16, device_map on GPUs) is not run")


@pytest.fixture(scope="module")
def short_story() -> WordEvents:
    """The first 80 words of the bundled pieman story (about 35 s), times as recorded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        story = read_story("pieman")
    n = 80
    return WordEvents(words=list(story.words[:n]), onsets=story.onsets[:n], offsets=story.offsets[:n],
                      measured=story.measured[:n], source=story.source)


def test_dtype_auto_is_bfloat16_on_cuda_and_float32_elsewhere():
    assert resolve_dtype("auto", "cuda") == resolve_dtype("auto", "cuda:1") == "bfloat16"
    assert resolve_dtype("auto", "cpu") == resolve_dtype("auto", "mps") == "float32"
    assert resolve_dtype("float16", "cpu") == "float16"
    with pytest.raises(ConfigError, match="'dtype'"):
        resolve_dtype("int8", "cpu")


def test_a_model_offloaded_to_disk_gives_the_same_responses(short_story, tmp_path):
    """device_map with a memory cap: most layers wait on disk, the numbers do not change."""
    plain = extract_an_responses(short_story, "smollm2", tr=1.5, n_volumes=30, device="cpu")
    assert plain.provenance["dtype"] == "float32"                    # the default 'auto', resolved and recorded
    assert plain.provenance["device_map"] is None and plain.provenance["placement"] is None
    offloaded = extract_an_responses(short_story, "smollm2", tr=1.5, n_volumes=30, device="cpu",
                                     device_map="auto", max_memory={"cpu": "150MB"},
                                     offload_folder=tmp_path / "offload")
    placement = offloaded.provenance["placement"]
    assert placement.get("disk", 0) > 10 and offloaded.provenance["device_map"] == "auto"
    assert offloaded.provenance["cache_key"] == plain.provenance["cache_key"]   # placement is not in the key
    np.testing.assert_allclose(offloaded.responses, plain.responses, atol=1e-5)
    with pytest.raises(ConfigError, match="'device_map'"):
        load_language_model("smollm2", device="cpu", device_map="everywhere")
    with pytest.raises(ConfigError, match="device_map"):
        load_language_model("smollm2", device="cpu", max_memory={"cpu": "1GB"})


def test_the_llama3_8b_shape_has_458752_ffn_units():
    """The full 32-layer shape, built without memory (meta device): widths and parameter count."""
    from transformers import AutoModel

    config = llama3_8b_config()
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    hooks = site_hooks(model, "llama", "ffn_hidden")
    assert len(hooks) == 32 and {h.n_units for h in hooks} == {14336}
    assert sum(h.n_units for h in hooks) == 458_752
    # Llama-3-8B without its output head: 8,030,261,248 - 128,256 x 4,096
    assert sum(p.numel() for p in model.parameters()) == 8_030_261_248 - 128_256 * 4096
    assert config.num_key_value_heads == 8 and config.vocab_size == LLAMA3_8B_SHAPE["vocab_size"]


def test_llama3_8b_shaped_model_is_labelled_random_and_extracts(short_story):
    """One layer of Llama-3-8B's width in bfloat16 on the CPU: 14,336 ANs, labelled as random."""
    lm = llama3_8b_shaped_model(1, seed=3, device="cpu", dtype="bfloat16")
    assert "RANDOM-WEIGHTS" in lm.spec.name and lm.spec.kind == "config"
    assert lm.ffn_size == 14336 and lm.hidden_size == 4096 and lm.n_layers == 1
    assert next(lm.model.parameters()).dtype == torch.bfloat16
    ans = extract_an_responses(short_story, lm, tr=1.5, n_volumes=30)
    prov = ans.provenance
    assert prov["n_ans"] == 14336 and prov["dtype"] == "bfloat16"
    assert "RANDOM WEIGHTS" in prov["model"]["random_weights"]["what"]
    assert "SmolLM2" in prov["model"]["random_weights"]["tokenizer"]
    assert prov["model"]["weights_sha256"] == {}
    assert ans.responses.dtype == np.float32 and np.isfinite(ans.responses).all()
    assert ans.n_ans > 14000                                        # random units still respond to words
    with pytest.raises(ConfigError, match="no weights to load"):
        load_language_model(lm.spec)
    with pytest.raises(ConfigError, match="'n_layers'"):
        llama3_8b_shaped_model(33)


# ----------------------------------------------------------------------------- GPU


@needs_cuda
def test_cuda_extraction_is_bfloat16_by_default_and_close_to_float32(short_story):
    gpu = extract_an_responses(short_story, "minilm", tr=1.5, n_volumes=30, device="cuda")
    cpu = extract_an_responses(short_story, "minilm", tr=1.5, n_volumes=30, device="cpu")
    assert gpu.provenance["dtype"] == "bfloat16" and gpu.provenance["device"].startswith("cuda")
    assert gpu.provenance["cache_key"] != cpu.provenance["cache_key"]     # another precision, other numbers
    keys = [ans.index["layer"].to_numpy() * 1_000_000 + ans.index["unit"].to_numpy() for ans in (gpu, cpu)]
    _, ig, ic = np.intersect1d(*keys, return_indices=True)                # the same ANs, kept in both
    r = [np.corrcoef(gpu.responses[:, i], cpu.responses[:, j])[0, 1] for i, j in zip(ig[::50], ic[::50])]
    assert len(r) > 20 and np.median(r) > 0.95


@needs_cuda
def test_cuda_device_map_auto_places_the_model_on_the_gpu(short_story):
    placed = extract_an_responses(short_story, "smollm2", tr=1.5, n_volumes=30, device="cuda",
                                  device_map="auto")
    plain = extract_an_responses(short_story, "smollm2", tr=1.5, n_volumes=30, device="cuda")
    assert set(placed.provenance["placement"]) <= {f"cuda:{i}" for i in range(torch.cuda.device_count())}
    np.testing.assert_allclose(placed.responses, plain.responses, atol=1e-2)


@needs_cuda
def test_cuda_llama3_8b_shaped_model_in_full(short_story):
    """All 32 layers in bfloat16 on the GPU: 458,752 ANs (random weights)."""
    if torch.cuda.get_device_properties(0).total_memory < 24 * 2**30:
        pytest.skip("the GPU has less than 24 GiB: Llama-3-8B's 15 GiB of bfloat16 weights and the "
                    "streaming buffers do not fit")
    torch.cuda.reset_peak_memory_stats()
    lm = llama3_8b_shaped_model(32, device="cuda")
    assert lm.dtype == "bfloat16"
    ans = extract_an_responses(short_story, lm, tr=1.5, n_volumes=30)
    assert ans.provenance["n_ans"] == 458_752
    assert np.isfinite(ans.responses).all()
    assert torch.cuda.max_memory_allocated() < 40 * 2**30           # 15 GB of weights plus streaming


def test_the_readme_llama_example_is_a_valid_features_section():
    """The README's Llama-3-8B configuration parses, with its placement reaching the loader's checks."""
    import re
    from pathlib import Path

    import yaml

    from napari_brainorg.features.models import _check_placement
    from napari_brainorg.pipeline.config import FeaturesConfig

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### Large models: Llama-3-8B", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    features = FeaturesConfig(**yaml.safe_load(block)["features"])
    assert "meta-llama/Meta-Llama-3-8B" in features.models
    assert features.dtype == "auto" and features.device_map == "auto"
    device_map, memory, folder = _check_placement(features.device_map, features.max_memory, features.offload_folder)
    assert memory == {0: "20GiB", "cpu": "48GiB"} and folder == "/scratch/offload"
