"""Every artificial neuron's (AN) response to a story, at the scan's volumes.

``X = zscore(H @ A)``: ``A`` (n_words x n_ans) holds the word activations of every AN at
one site of every layer (:mod:`.activations`), ``H`` (n_volumes x n_words) places each
word at its scan time and turns it into a volume response (:func:`.alignment.hrf_operator`:
canonical HRF by default). ``H`` is computed once and the words stream through it chunk
by chunk, ``R[rows] += H[rows, chunk] @ A[chunk]`` (only the volumes the chunk's words
reach), accumulated in float64, so memory grows with n_volumes x n_ans, never with
n_tokens x n_ans. Columns are then z-scored; ANs whose response has no variance (all
zero: e.g. every word outside the scan) are dropped and reported.

A word without tokens (an empty string in the transcript) contributes nothing, as if
its activation were zero.

Results can be cached in a folder (``cache_dir``): ``an_responses.npy``,
``an_index.tsv``, ``dropped.tsv``, ``provenance.json``, each written atomically, and
within a size budget ``word_activations.npy``: ``A`` itself, streamed to disk as the
words come (:mod:`.word_activations`), for what reads word-level responses later. The
same inputs and options load from the folder; any change that can alter the numbers
recomputes (see :func:`extract_an_responses`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._progress import ProgressCallback, check_cancel, report
from ..errors import ConfigError, DroppedANsWarning, check_choice
from .nuisance import DEFAULT_PAUSE_LABELS, remove_pause_labels
from .sites import DEFAULT_SITE, SITES, an_index
from .word_activations import WordActivationWriter

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from ..io.stimuli import WordEvents

__all__ = ["AN_FILES", "ANResponses", "extract_an_responses", "load_an_responses", "story_sha256"]

#: Files of a feature folder, in the order they are written (provenance last).
AN_FILES = ("an_responses.npy", "an_index.tsv", "dropped.tsv", "provenance.json")

#: A column whose standard deviation is at most this fraction of its root mean square
#: holds no signal beyond rounding (exactly 0 for a column of zeros).
_NO_VARIANCE = 1e-7

#: Bumped when a change in this package would change the numbers for the same options.
_ALGORITHM_VERSION = 1


@dataclass
class ANResponses:
    """The responses of a model's ANs at the scan's volumes.

    Attributes
    ----------
    responses : ndarray of shape (n_volumes, n_ans), float32
        Each column z-scored (mean 0, standard deviation 1 over volumes).
    index : pandas.DataFrame
        One row per column of ``responses``: ``layer`` (0 = first block), ``unit``,
        ``site``.
    dropped : pandas.DataFrame
        ANs left out: ``layer, unit, site, reason`` (``"no variance"`` or
        ``"non-finite"``).
    provenance : dict
        What produced the responses (model and weight hashes, site, tokenizer, context
        policy, alignment, TR, volumes, story and its hash, versions, device, dtype,
        ``cache_key``).
    from_cache : bool
        True when :func:`extract_an_responses` read them from its cache folder.
    """

    responses: np.ndarray
    index: pandas.DataFrame
    dropped: pandas.DataFrame
    provenance: dict = field(default_factory=dict)
    from_cache: bool = False

    @property
    def n_volumes(self) -> int:
        return int(self.responses.shape[0])

    @property
    def n_ans(self) -> int:
        return int(self.responses.shape[1])

    def __repr__(self) -> str:
        model = self.provenance.get("model", {}).get("name", "?")
        return (
            f"ANResponses({model!r}, {self.n_volumes} volumes x {self.n_ans} ANs, "
            f"site={self.provenance.get('site', '?')!r}, dropped={len(self.dropped)})"
        )


# ---------------------------------------------------------------------------- helpers


def _sha256_bytes(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def story_sha256(words: WordEvents) -> str:
    """Hash of what the computation reads from a story: words and scan times
    (``provenance.json``'s ``story.words_sha256``)."""
    text = "\x1f".join(words.words).encode("utf-8")
    return _sha256_bytes(
        text,
        np.ascontiguousarray(words.onsets, dtype="<f8").tobytes(),
        np.ascontiguousarray(words.offsets, dtype="<f8").tobytes(),
    )


def _story_file(source: str) -> Path | None:
    if source.startswith("bundled:"):
        try:
            from ..datasets import story_path

            return story_path(source.split(":", 1)[1])
        except Exception:  # noqa: BLE001 - provenance only
            return None
    path = Path(source)
    return path if source and path.is_file() else None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("napari-brainorg", "numpy", "torch", "transformers", "tokenizers", "safetensors", *extra):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _check_tr(tr) -> float:
    try:
        value = float(tr)
    except (TypeError, ValueError):
        raise ConfigError(f"'tr' must be a positive number of seconds; {tr!r} was provided.") from None
    if not np.isfinite(value) or value <= 0:
        raise ConfigError(f"'tr' must be a positive number of seconds; {tr!r} was provided.")
    return value


def _check_n_volumes(n_volumes) -> int:
    if isinstance(n_volumes, bool) or not isinstance(n_volumes, (int, np.integer)) or n_volumes < 2:
        raise ConfigError(
            f"'n_volumes' must be a whole number of volumes, at least 2 (columns are "
            f"z-scored over volumes); {n_volumes!r} was provided."
        )
    return int(n_volumes)


def _read_words(story, onset: float) -> WordEvents:
    from ..io.stimuli import WordEvents, read_story

    if isinstance(story, WordEvents):
        return story.shifted(onset) if onset else story
    # The reader's warnings (filled-in times...) are re-issued so that they point at
    # the caller of extract_an_responses, not at this module.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        words = read_story(story, onset=onset)
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=3)
    return words


def _alignment_kwargs(words: WordEvents, options: dict | None) -> tuple[dict, dict]:
    """(kwargs for hrf_operator, their JSON-able record)."""
    options = dict(options or {})
    allowed = ("durations", "oversampling", "frame_offset", "lanczos_window", "fir_delays")
    for key in options:
        check_choice("alignment_options key", key, allowed)
    record = dict(options)
    durations = options.pop("durations", None)
    if durations is True or durations == "words":
        options["durations"] = words.offsets - words.onsets
        record["durations"] = "words"
    elif durations not in (None, False):
        raise ConfigError(
            "'alignment_options[\"durations\"]' must be True (each word a boxcar of its own "
            f"duration) or None (impulses); {durations!r} was provided."
        )
    if "fir_delays" in options:
        record["fir_delays"] = [int(d) for d in options["fir_delays"]]
    return options, record


def _cache_valid(folder: Path, key: str) -> bool:
    if not all((folder / name).is_file() for name in AN_FILES):
        return False
    try:
        saved = json.loads((folder / "provenance.json").read_text())
    except (OSError, ValueError):
        return False
    return saved.get("cache_key") == key


# ---------------------------------------------------------------------------- public


def _stream_keeping(folder, max_gb: float, loaded, words, H, **stream_options):
    """:func:`_stream_words_through_operator`, keeping the word activations in ``folder``
    (within ``max_gb``); a failed or cancelled pass leaves no partial file.

    Returns the stream's ``(R, units_per_layer, prepared)`` and the keeper's record."""
    # made with the folder even when nothing is kept: it removes an earlier extraction's file
    keeper = None if folder is None else WordActivationWriter(folder, len(words), max_gb)
    try:
        R, units_per_layer, prepared = _stream_words_through_operator(loaded, words, H, keeper=keeper,
                                                                      **stream_options)
        kept = keeper.finish() if keeper is not None else {"kept": False, "reason": "no cache folder"}
    except BaseException:
        if keeper is not None:
            keeper.abort()
        raise
    return R, units_per_layer, prepared, kept


def extract_an_responses(
    story,
    model,
    *,
    tr: float,
    n_volumes: int,
    onset: float = 0.0,
    site: str = DEFAULT_SITE,
    alignment: str = "glover",
    alignment_options: dict | None = None,
    context: int | None = None,
    min_context: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    device_map=None,
    max_memory: dict | None = None,
    offload_folder: str | os.PathLike | None = None,
    batch_words: int = 512,
    center_words: bool = True,
    pause_labels=DEFAULT_PAUSE_LABELS,
    cache_dir: str | os.PathLike | None = None,
    word_activations_max_gb: float = 0.0,
    progress: ProgressCallback | None = None,
    cancel=None,
) -> ANResponses:
    """Record every AN's response to a story at the scan's volumes.

    Parameters
    ----------
    story : WordEvents, path-like or str
        Timed words (:class:`~napari_brainorg.io.stimuli.WordEvents`), a story file, or a
        bundled story name (``"pieman"``).
    model : str, path-like, ModelSpec or LoadedModel
        A bundled name (``"minilm"``, ``"smollm2"``), a model folder, a ``.gguf`` file, a
        hub id, or a model already loaded (:func:`.models.load_language_model`; then its
        own device and dtype are used).
    tr : float
        Repetition time in seconds.
    n_volumes : int
        Number of fMRI volumes.
    onset : float
        Seconds added to every word time (the story's start in the scan).
    site : {"ffn_hidden", "ffn_out", "residual"}
        Where the ANs are read (:mod:`.sites`).
    alignment : {"glover", "spm", "lanczos", "fir"}
        The word -> volume operator (:func:`.alignment.hrf_operator`).
    alignment_options : dict or None
        More options of the operator: ``durations`` (True: each word a boxcar of its own
        duration), ``oversampling``, ``frame_offset``, ``lanczos_window``, ``fir_delays``.
    context, min_context : int or None
        The context policy (:mod:`.activations`); None: the model's defaults.
    device : str
        ``"auto"`` (default: CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    dtype : {"auto", "float32", "float16", "bfloat16"}
        ``"auto"`` (default): bfloat16 on CUDA, float32 on CPU
        (:func:`.models.resolve_dtype`). Word activations are pooled and accumulated
        in float32 / float64 whatever the model's precision.
    device_map, max_memory, offload_folder
        Placement of a model larger than one device (accelerate; see
        :func:`.models.load_language_model`). Recorded in provenance, not part of the
        cache key (they change where the numbers are computed, not the numbers).
    batch_words : int
        Words whose activations are held at once (whole windows): memory
        ``batch_words * n_ans * 4`` bytes; larger batches help GPUs.
    center_words : bool
        True (default): each AN's word activations are centred (its mean over the
        story's words removed) before the operator, ``X = H @ (A - mean_w A)``. Without
        it (the paper's raw form) every AN with a nonzero mean activation carries
        ``mean x H @ 1``, the word rate, and the first atom learned is the word rate.
    pause_labels : iterable of str or None
        Forced-aligner labels read as silence and removed before the model runs
        (:data:`.nuisance.DEFAULT_PAUSE_LABELS`; warned with their count). None keeps
        every entry.
    cache_dir : path-like or None
        Folder for the results. When it holds results of the same inputs they are loaded
        instead of computed. It must be new, empty, or written by napari-brainorg.
    word_activations_max_gb : float
        With ``cache_dir``: also keep the word activations of every AN (before the
        operator) as ``word_activations.npy`` in the folder when they take at most this
        many GiB (float32, n_words x n_ans; :mod:`.word_activations`); 0 (default): never.
        ``provenance.json``'s ``word_activations`` says whether they were kept and why
        not. Not part of the cache key (it changes no number): a folder cached without
        them stays so.
    progress, cancel
        See :mod:`napari_brainorg._progress`.

    Returns
    -------
    ANResponses

    Raises
    ------
    ModelNotFoundError, ConfigError, StoryFormatError

    Warns
    -----
    DroppedANsWarning
        When some ANs have no variance and are dropped.

    Notes
    -----
    The cache key covers the story's words and scan times, the model (its files'
    sha256), ``site``, ``alignment`` and its options, ``tr``, ``n_volumes``, ``context``,
    ``min_context``, ``dtype`` (as resolved: ``"auto"`` on CUDA is bfloat16) and this
    package's version. ``device`` and
    ``batch_words`` only change rounding, so they are recorded but not part of the key:
    results computed on a GPU are reused on the CPU.
    """
    started = time.perf_counter()
    tr, n_volumes = _check_extract_options(site, alignment, tr, n_volumes, batch_words)
    words = _read_words(story, onset)
    words, _ = remove_pause_labels(words, pause_labels, warn=True)
    align_kwargs, align_record = _alignment_kwargs(words, alignment_options)
    loaded, spec, device, dtype = _resolve_language_model(model, device, dtype, device_map, max_memory,
                                                          offload_folder)
    model_record, story_record = _model_record(spec, loaded), _story_record(words)
    options = _numeric_options(site=site, alignment=alignment, align_record=align_record, tr=tr,
                               n_volumes=n_volumes, context=context, min_context=min_context, dtype=dtype,
                               center_words=center_words, pause_labels=pause_labels)
    cache_key = _cache_key(model_record, story_record, options)
    folder, cached = _open_cache(cache_dir, cache_key)
    if cached is not None:
        return cached

    if loaded is None:
        loaded = _load_reporting(spec, progress, device=device, dtype=dtype, device_map=device_map,
                                 max_memory=max_memory, offload_folder=offload_folder)
    check_cancel(cancel)
    H = _word_to_volume_operator(words, n_volumes, tr, alignment, align_kwargs)
    R, units_per_layer, prepared, kept = _stream_keeping(
        folder, word_activations_max_gb, loaded, words, H, site=site, context=context, min_context=min_context,
        batch_words=batch_words, center_words=center_words, progress=progress, cancel=cancel,
        stage=f"{spec.name} ANs")
    responses, keep, reason = _zscore_columns(R)
    del R  # the float64 responses are the largest array of the run
    index, dropped = _drop_constant_ans(keep, reason, units_per_layer, site, spec.name)

    provenance = _provenance(cache_key=cache_key, model_record=model_record, story_record=story_record,
                             options=options, loaded=loaded, prepared=prepared,
                             units_per_layer=units_per_layer, keep=keep, words=words,
                             batch_words=batch_words, started=started)
    provenance["word_activations"] = kept
    result = ANResponses(responses=responses, index=index, dropped=dropped, provenance=provenance)
    if folder is not None:
        _write(folder, result)
    return result


# --------------------------------------------------------- steps of extract_an_responses


def _check_extract_options(site: str, alignment: str, tr, n_volumes, batch_words) -> tuple[float, int]:
    """Check the options that need neither the story nor the model.

    Returns
    -------
    tr : float
    n_volumes : int

    Raises
    ------
    ConfigError
        Naming the first option that is not allowed.
    """
    from .alignment import ALIGNMENT_METHODS

    check_choice("site", site, SITES)
    check_choice("alignment", alignment, ALIGNMENT_METHODS)
    tr = _check_tr(tr)
    n_volumes = _check_n_volumes(n_volumes)
    if isinstance(batch_words, bool) or not isinstance(batch_words, (int, np.integer)) or batch_words < 1:
        raise ConfigError(f"'batch_words' must be a positive number of words; {batch_words!r} was provided.")
    return tr, n_volumes


def _resolve_language_model(model, device: str, dtype: str, device_map, max_memory,
                            offload_folder) -> tuple[Any, Any, str, str]:
    """Find the model and the device and precision it will run in, without loading it.

    Returns
    -------
    loaded : LoadedModel or None
        ``model`` itself when it was already loaded, else None.
    spec : ModelSpec
    device, dtype : str
        A loaded model's own; otherwise as resolved (``"auto"`` made explicit).
    """
    from .models import LoadedModel, _check_device, _check_placement, resolve_dtype, resolve_model

    loaded = model if isinstance(model, LoadedModel) else None
    spec = loaded.spec if loaded is not None else resolve_model(model)
    if loaded is not None:
        device, dtype = loaded.device, loaded.dtype
    else:
        # resolved now: the cache key holds the precision the numbers are computed in
        device = _check_device(device)
        dtype = resolve_dtype(dtype, device)
        _check_placement(device_map, max_memory, offload_folder)
    return loaded, spec, device, dtype


def _model_record(spec, loaded) -> dict:
    """The model's part of the provenance: name, kind, source and weight hashes."""
    from .models import weights_sha256

    record = {
        "name": spec.name,
        "kind": spec.kind,
        "source": str(spec.path),
        "architecture": spec.architecture,
        "causal": spec.causal,
        "weights_sha256": weights_sha256(spec),
    }
    if getattr(spec, "description", ""):  # e.g. the bundled SmolLM2's quantisation (not part of the cache key)
        record["description"] = spec.description
    if loaded is not None and loaded.extra.get("untrained"):
        # random weights from the model's configuration (features.untrained), not these files
        record["untrained_init_seed"] = int(loaded.extra["init_seed"])
    if loaded is not None and loaded.extra.get("random_weights"):
        # a shape-only model (models.llama3_8b_shaped_model): no trained weights at all
        record["random_weights"] = loaded.extra["random_weights"]
    return record


def _story_record(words: WordEvents) -> dict:
    """The story's part of the provenance: source, size, onset and hashes."""
    record = {
        "source": words.source,
        "n_words": len(words),
        "onset_shift": words.onset_shift,
        "words_sha256": story_sha256(words),
    }
    story_file = _story_file(words.source)
    if story_file is not None:
        record["file_sha256"] = _file_sha256(story_file)
    return record


def _numeric_options(*, site, alignment, align_record, tr, n_volumes, context, min_context, dtype,
                     center_words, pause_labels) -> dict:
    """The options that can change the numbers, in the JSON form the cache key hashes."""
    return {
        "site": site,
        "alignment": alignment,
        "alignment_options": align_record,
        "tr": tr,
        "n_volumes": n_volumes,
        "context": None if context is None else int(context),
        "min_context": None if min_context is None else int(min_context),
        "dtype": dtype,
        "center_words": bool(center_words),
        "pause_labels": sorted({str(p).strip().lower() for p in (pause_labels or ())}),
    }


def _cache_key(model_record: dict, story_record: dict, options: dict) -> str:
    """sha256 of what the numbers depend on: model weights, story, options, version."""
    key_source = {
        "model": {k: model_record[k] for k in ("name", "kind", "architecture", "weights_sha256")},
        "story_sha256": story_record["words_sha256"],
        "options": options,
        "version": [_versions().get("napari-brainorg", "0"), _ALGORITHM_VERSION],
    }
    return hashlib.sha256(json.dumps(key_source, sort_keys=True).encode()).hexdigest()


def _open_cache(cache_dir, cache_key: str) -> tuple[Path | None, ANResponses | None]:
    """The cache folder (None without ``cache_dir``) and its results when they match the key.

    Raises
    ------
    ConfigError
        When the folder holds files that napari-brainorg did not write.
    """
    if cache_dir is None:
        return None, None
    from ..io.results import check_output_folder

    folder = check_output_folder(cache_dir)
    if not _cache_valid(folder, cache_key):
        return folder, None
    cached = load_an_responses(folder)
    cached.from_cache = True
    return folder, cached


def _load_reporting(spec, progress: ProgressCallback | None, **placement):
    """Load the model, reported as the stage ``"load <name>"`` (0 then 1 of 1)."""
    from .models import load_language_model

    report(progress, f"load {spec.name}", 0, 1)
    loaded = load_language_model(spec, **placement)
    report(progress, f"load {spec.name}", 1, 1)
    return loaded


def _word_to_volume_operator(words: WordEvents, n_volumes: int, tr: float, alignment: str,
                             align_kwargs: dict) -> np.ndarray:
    """The operator ``H`` that turns word activations into volume responses.

    Returns
    -------
    H : ndarray of shape (n_volumes, n_words)
    """
    from .alignment import hrf_operator

    H = np.asarray(hrf_operator(words.onsets, n_volumes, tr, method=alignment, **align_kwargs))
    if H.shape != (n_volumes, len(words)):  # pragma: no cover - alignment's contract
        raise ConfigError(f"hrf_operator returned shape {H.shape}; expected {(n_volumes, len(words))}.")
    return H


def _stream_words_through_operator(loaded, words: WordEvents, H: np.ndarray, *, site: str,
                                   context, min_context, batch_words: int, center_words: bool,
                                   progress, cancel, stage: str, keeper=None):
    """``R = H @ A`` (or ``H @ (A - mean_w A)``), word windows streamed through the model.

    Parameters
    ----------
    loaded : LoadedModel
    words : WordEvents, length n_words
    H : ndarray of shape (n_volumes, n_words)
        From :func:`_word_to_volume_operator`.
    site, context, min_context, batch_words, center_words, progress, cancel
        As in :func:`extract_an_responses`.
    stage : str
        Name of the progress stage (reported in words).
    keeper : WordActivationWriter or None
        Gets every chunk of word activations (raw, before centring) to keep on disk.

    Returns
    -------
    R : torch.Tensor of shape (n_volumes, n_ans), float64
        On the model's device; zeros when no word has a token.
    units_per_layer : list of int
        Number of ANs of each layer at ``site`` (``sum == n_ans``).
    prepared : (WordTokens, ContextPolicy, WindowPlan)
        The story's tokens, context policy and windows
        (:func:`.activations.prepare_story`).
    """
    import torch

    from .activations import iter_word_activations, prepare_story
    from .sites import site_hooks

    n_volumes = H.shape[0]
    dev = torch.device(loaded.device)
    H_t = torch.as_tensor(H, dtype=torch.float32, device=dev)
    # H's nonzero rows per chunk decide which volumes a chunk of words reaches
    reaches = H != 0
    prepared = prepare_story(loaded, words.words, context, min_context)
    R = None
    word_sum = None  # sum over words of each AN's activation (float64), for centring
    seen = np.zeros(len(words), dtype=bool)
    chunks = iter_word_activations(
        loaded, words.words, site=site, context=context, min_context=min_context,
        batch_words=int(batch_words), progress=progress, cancel=cancel, stage=stage,
        prepared=prepared,
    )
    for chunk in chunks:
        if R is None:
            R = torch.zeros((n_volumes, chunk.values.shape[1]), dtype=torch.float64, device=dev)
        _accumulate(R, H_t, reaches, chunk, cancel=cancel)
        if keeper is not None:
            keeper.add(chunk.word_index, chunk.values)
        if center_words:
            part = chunk.values.sum(dim=0, dtype=torch.float64)
            word_sum = part if word_sum is None else word_sum + part
            seen[chunk.word_index] = True
        del chunk  # free the chunk before the next forward pass allocates the next one
    check_cancel(cancel)
    if center_words and word_sum is not None:
        # H @ (A - 1 m) = H @ A - (H[:, words with tokens] @ 1) m: words without tokens
        # have no activation to centre (they contribute nothing either way)
        rate = torch.as_tensor(H[:, seen].sum(axis=1), dtype=torch.float64, device=dev)
        R -= torch.outer(rate, word_sum / int(seen.sum()))
    units_per_layer = [h.n_units for h in site_hooks(loaded.model, loaded.spec.architecture, site)]
    if R is None:  # no word has a token: every AN is empty
        R = torch.zeros((n_volumes, int(sum(units_per_layer))), dtype=torch.float64, device=dev)
    return R, units_per_layer, prepared


def _drop_constant_ans(keep: np.ndarray, reason: np.ndarray, units_per_layer: list[int], site: str,
                       model_name: str) -> tuple[pandas.DataFrame, pandas.DataFrame]:
    """Index the kept ANs and list the dropped ones, warning when there are any.

    Parameters
    ----------
    keep : ndarray of shape (n_ans,), bool
    reason : ndarray of shape (n_ans,), object
        From :func:`_zscore_columns`.
    units_per_layer : list of int
    site, model_name : str
        Named in the warning.

    Returns
    -------
    index : pandas.DataFrame
        ``layer, unit, site`` of the kept ANs (n_kept rows).
    dropped : pandas.DataFrame
        ``layer, unit, site, reason`` of the others.

    Warns
    -----
    DroppedANsWarning
        Pointing at the caller of :func:`extract_an_responses`.
    """
    full_index = an_index(len(units_per_layer), units_per_layer, site)
    index = full_index[keep].reset_index(drop=True)
    dropped = full_index[~keep].reset_index(drop=True)
    dropped["reason"] = reason[~keep]
    if len(dropped):
        warnings.warn(
            f"{len(dropped)} of {len(full_index)} ANs of {model_name!r} at site {site!r} have a "
            "response with no variance over the volumes (or non-finite values) and were "
            "dropped; see ANResponses.dropped.",
            DroppedANsWarning,
            stacklevel=3,
        )
    return index, dropped


def _provenance(*, cache_key: str, model_record: dict, story_record: dict, options: dict, loaded,
                prepared, units_per_layer: list[int], keep: np.ndarray, words: WordEvents,
                batch_words: int, started: float) -> dict:
    """What produced the responses, written as ``provenance.json``.

    ``options`` is :func:`_numeric_options`'s record; ``prepared`` what
    :func:`.activations.prepare_story` returned; ``keep`` of shape (n_ans,), bool;
    ``started`` the :func:`time.perf_counter` value at the call's start.
    """
    import torch

    tokens, policy, plan = prepared
    center_words = options["center_words"]
    return {
        "cache_key": cache_key,
        "model": model_record,
        "tokenizer": {
            "name": loaded.tokenizer_name,
            "class": type(loaded.tokenizer).__name__,
            "prefix_ids": list(tokens.prefix_ids),
            "suffix_ids": list(tokens.suffix_ids),
        },
        "n_layers": loaded.n_layers,
        "units_per_layer": units_per_layer,
        "site": options["site"],
        "context_policy": policy.as_dict(),
        "alignment": {"method": options["alignment"], **options["alignment_options"]},
        "tr": options["tr"],
        "n_volumes": options["n_volumes"],
        "onset": words.onset_shift,
        "story": story_record,
        "n_tokens": tokens.n_tokens,
        "n_words_without_tokens": int((tokens.word_stop <= tokens.word_start).sum()),
        "n_windows": plan.n_windows,
        "tokens_through_model": int((plan.stop - plan.start).sum() + plan.n_windows * tokens.n_special),
        "n_ans": int(len(keep)),
        "n_ans_kept": int(keep.sum()),
        "n_ans_dropped": int((~keep).sum()),
        "zscore": "columns centred and divided by their standard deviation over volumes (ddof=0)",
        "empty_words": "words without tokens contribute nothing (activation zero)",
        "pooling": "mean over each word's sub-word tokens; special tokens excluded",
        "center_words": (
            "each AN's mean activation over the story's words removed before the word -> volume operator"
            if center_words else "raw word activations (the paper's form): the word rate is in every AN"),
        "pause_labels": options["pause_labels"],
        "device": str(loaded.device),
        "dtype": loaded.dtype,
        "device_map": loaded.extra.get("device_map"),
        "placement": loaded.extra.get("placement"),
        "batch_words": int(batch_words),
        "torch_threads": int(torch.get_num_threads()),
        "versions": _versions(("gguf",) if model_record["kind"] == "gguf" else ()),
        "seconds": round(time.perf_counter() - started, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _accumulate(R, H_t, reaches: np.ndarray, chunk, block: int = 1 << 14, cancel=None) -> None:
    """``R[rows] += H[rows, words] @ A[words]`` for one chunk of words.

    Only the volumes that the chunk's words reach (``rows``: nonzero rows of ``H``) are
    touched. Products are float32 (BLAS), summed into the float64 ``R``; columns go in
    blocks so that the temporaries stay a few tens of MB whatever the number of ANs.
    ``cancel`` is checked before each block (a block of a large model takes a good part
    of a second on a laptop CPU).
    """
    import torch

    rows = np.flatnonzero(reaches[:, chunk.word_index].any(axis=1))
    if rows.size == 0:
        return
    dev = R.device
    with torch.inference_mode():
        rows_t = torch.as_tensor(rows, device=dev)
        cols_t = torch.as_tensor(chunk.word_index, device=dev)
        weights = H_t.index_select(0, rows_t).index_select(1, cols_t)
        n_ans = chunk.values.shape[1]
        for start in range(0, n_ans, block):  # blocks of columns, not single ANs
            check_cancel(cancel)
            stop = min(start + block, n_ans)
            product = weights @ chunk.values[:, start:stop]
            R[:, start:stop].index_add_(0, rows_t, product.to(torch.float64))


def _zscore_columns(R, block: int = 1 << 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-score the columns of a float64 tensor; flag the ones without variance.

    Works on blocks of columns so the temporaries stay small beside ``R``; the kept
    columns are written into one float32 array as they come (no second copy).

    Returns
    -------
    responses : ndarray of shape (n_volumes, n_kept), float32
    keep : ndarray of shape (n_ans,), bool
    reason : ndarray of shape (n_ans,), object (``""`` where kept)
    """
    import torch

    n_volumes, n_ans = R.shape
    keep = np.zeros(n_ans, dtype=bool)
    reason = np.full(n_ans, "", dtype=object)
    responses = np.empty((n_volumes, n_ans), dtype=np.float32)  # trimmed to the kept columns below
    filled = 0
    for start in range(0, n_ans, block):  # blocks of columns, not single ANs
        stop = min(start + block, n_ans)
        part = R[:, start:stop]
        finite = torch.isfinite(part).all(dim=0)
        rms = part.square().mean(dim=0).sqrt()
        centred = part - part.mean(dim=0)
        std = centred.square().mean(dim=0).sqrt()
        has_variance = std > _NO_VARIANCE * rms
        kept = torch.nonzero(finite & has_variance).flatten()
        values = (centred.index_select(1, kept) / std.index_select(0, kept)).to(torch.float32).cpu().numpy()
        responses[:, filled:filled + values.shape[1]] = values
        filled += values.shape[1]
        finite_np, var_np = finite.cpu().numpy(), has_variance.cpu().numpy()
        keep[start:stop] = finite_np & var_np
        reason[start:stop][~finite_np] = "non-finite"
        reason[start:stop][finite_np & ~var_np] = "no variance"
    if filled < n_ans:
        responses = np.ascontiguousarray(responses[:, :filled])
    return responses, keep, reason


def _write(folder: Path, result: ANResponses) -> None:
    from ..io.results import ResultWriter

    writer = ResultWriter(folder)
    writer.write_npy(AN_FILES[0], result.responses.astype(np.float32, copy=False))
    writer.write_table(AN_FILES[1], result.index)
    writer.write_table(AN_FILES[2], result.dropped.reindex(columns=["layer", "unit", "site", "reason"]))
    # provenance last: its cache_key vouches for the files written before it
    writer.write_json(AN_FILES[3], result.provenance)


def load_an_responses(folder: str | os.PathLike) -> ANResponses:
    """Read AN responses written by :func:`extract_an_responses`.

    Parameters
    ----------
    folder : path-like
        A folder holding ``an_responses.npy``, ``an_index.tsv``, ``dropped.tsv`` and
        ``provenance.json``.

    Raises
    ------
    FileNotFoundError
        A missing folder or file.
    ShapeError
        When the index does not describe the array's columns.
    """
    import pandas as pd

    from ..errors import ShapeError

    folder = Path(folder)
    missing = [name for name in AN_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{str(folder)!r} is not a folder of AN responses: missing {missing}; expected "
            f"{list(AN_FILES)} as written by extract_an_responses or `brainorg extract`."
        )
    responses = np.load(folder / AN_FILES[0])
    index = pd.read_csv(folder / AN_FILES[1], sep="\t", dtype={"layer": np.int32, "unit": np.int32, "site": str})
    dropped = pd.read_csv(folder / AN_FILES[2], sep="\t", dtype={"site": str, "reason": str})
    provenance: dict[str, Any] = json.loads((folder / AN_FILES[3]).read_text())
    if responses.ndim != 2 or responses.shape[1] != len(index):
        raise ShapeError(
            f"{str(folder / AN_FILES[0])!r} has shape {responses.shape}; expected "
            f"(n_volumes, {len(index)}) to match {AN_FILES[1]}."
        )
    return ANResponses(responses=responses, index=index, dropped=dropped, provenance=provenance)
