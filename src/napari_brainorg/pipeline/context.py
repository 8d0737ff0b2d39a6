"""What every step of a run shares: the step context with its content-keyed cache, and
the names things have in the result folder.

:class:`StepContext` is handed to every step (:mod:`napari_brainorg.pipeline.steps`); it
holds the configuration, the folder's writer, progress and cancellation, the keys of
the steps run so far and the summary being built. A step asks :meth:`StepContext.cached`
whether its outputs can be reused and stamps them with :meth:`StepContext.done`.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import CancelToken, ProgressCallback, check_cancel, report
from ..errors import CacheMismatchWarning
from ..io.results import ResultWriter
from ._state import file_identity, key_of
from .config import PipelineConfig


def model_slug(model: str) -> str:
    """A folder-safe short name for a model given by name, path or hub id."""
    p = Path(str(model))
    name = p.stem if p.suffix == ".gguf" else p.name or str(model)
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.")
    return slug or "model"


def story_file(story: str) -> Path | None:
    """The file a story option reads: the path itself, or a bundled story's file."""
    path = Path(str(story)).expanduser()
    if path.is_file():
        return path
    from ..datasets import list_stories, story_path

    return story_path(str(story)) if str(story) in list_stories() else None


def atlas_file(atlas: str) -> Path | None:
    """The file an atlas option reads: a bundled atlas's NIfTI or the path given."""
    from ..datasets import BUNDLED_ATLASES, atlas_path

    if atlas in BUNDLED_ATLASES:
        return atlas_path(atlas)
    path = Path(str(atlas)).expanduser()
    return path if path.is_file() else None


def atlas_slug(atlas: str) -> str:
    """The name of an atlas in the result folder: a bundled name, or a file's name without
    its extensions (``/data/my_networks.nii.gz`` -> ``my_networks``)."""
    from ..datasets import BUNDLED_ATLASES

    if atlas in BUNDLED_ATLASES:
        return atlas
    return model_slug(Path(str(atlas)).name.split(".")[0])


def baseline_slugs(config: PipelineConfig) -> dict[str, str]:
    """Folder names of the baselines of ``config``: kind -> slug."""
    fc = config.features
    source = model_slug(fc.baseline_model or fc.models[0])
    names = {"phase_randomised": f"{source}-phase-randomised", "untrained": f"{source}-untrained",
             "nuisance": "nuisance"}
    return {kind: names[kind] for kind in fc.baselines}


def subject_file_name(subject: str) -> str:
    """The file-safe name of a subject's encoding artifact (``sub-01`` -> ``sub-01``)."""
    return model_slug(subject)


@dataclass
class StepContext:
    """What the steps share: the config, the writer, progress/cancel and the step keys.

    A step asks :meth:`cached` whether it may reuse its outputs. Its key hashes the
    options it uses (``key_parts``: config sections, upstream keys, the seed) with the
    content identity of every file it reads (``inputs``); its stamp
    ``OUT/.cache/<step>.json`` records the key and the checksums of its ``outputs``,
    written by :meth:`done` once they are all on disk::

        if not ctx.cached("atoms/minilm", [cfg.model_dump(mode="json"), upstream_key],
                          outputs=["atoms/minilm/atoms.npy"], inputs=[]):
            ...compute, write the outputs...
            ctx.done("atoms/minilm")
    """

    config: PipelineConfig
    writer: ResultWriter
    progress: ProgressCallback | None
    cancel: CancelToken | None
    keys: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    #: each step's CPU seconds (every thread of this process), summed over models
    cpu_times: dict[str, float] = field(default_factory=dict)
    #: steps that raised the process's peak resident memory -> that peak (GB)
    peak_memory: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    #: nuisance regressors (n_volumes, n_confounds) of the story step, for the encoding step
    confounds: Any = None
    #: every input file read, path -> content identity (for provenance.json)
    inputs: dict[str, str] = field(default_factory=dict)
    #: the story runs, [(story, n_volumes, tr), ...] in the order their volumes are stacked
    runs: list = field(default_factory=list)
    #: what one step computed that a later step of the same run may reuse (e.g. the
    #: subjects' standardised mean fMRI of the calibrated maps, shared by the models);
    #: keyed by content by whoever stores it, and gone with the run
    memo: dict[Any, Any] = field(default_factory=dict)
    _outputs: dict[str, list[str]] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return self.writer.path

    def key(self, step: str, key_parts, inputs=()) -> str:
        """The key of ``step``: a hash of ``key_parts`` and the contents of ``inputs``."""
        identities = []
        for p in inputs:
            if p is None:
                continue
            ident = file_identity(p)
            self.inputs[str(p)] = ident
            identities.append(ident)
        self.keys[step] = key_of(step, key_parts, identities)
        return self.keys[step]

    def cached(self, step: str, key_parts, outputs=(), *, inputs=()) -> bool:
        """True when ``step`` ran with the same key and its ``outputs`` are unchanged.

        Parameters
        ----------
        step : str
            The step's name, e.g. ``"atoms/minilm"`` (its stamp is ``.cache/<step>.json``).
        key_parts : JSON-able
            Every option the step uses and the keys of the steps it reads from.
        outputs : list of str
            Files (relative to ``OUT``) the step writes; checked against the stamp's checksums.
        inputs : list of path-like
            Files the step reads; their contents (not their paths) enter the key.

        A file changed since the step wrote it (e.g. a same-size corruption) gives a
        :class:`~napari_brainorg.errors.CacheMismatchWarning` naming it. When the step
        must run, its old stamp is removed first, so an interrupted rerun is never trusted.
        """
        key = self.key(step, key_parts, inputs)
        self._outputs[step] = list(outputs)
        stamp = self.out / ".cache" / f"{step}.json"
        if not stamp.exists():
            return False
        ok = self._stamp_matches(step, stamp, key, list(outputs))
        if not ok:
            stamp.unlink(missing_ok=True)
        return ok

    def _stamp_matches(self, step: str, stamp: Path, key: str, outputs: list[str]) -> bool:
        try:
            saved = json.loads(stamp.read_text())
        except (OSError, ValueError):
            return False
        recorded = saved.get("outputs")
        if saved.get("key") != key or not isinstance(recorded, dict) or set(outputs) - set(recorded):
            return False
        for rel in outputs:
            path = self.out / rel
            if not path.is_file():
                return False
            if file_identity(path) != recorded[rel]:
                warnings.warn(
                    f"{str(path)!r} changed since step {step!r} wrote it (checksum differs); "
                    f"recomputing {step!r}.", CacheMismatchWarning, stacklevel=3)
                return False
        return True

    def forget_outputs(self, step: str) -> None:
        """Drop the outputs :meth:`cached` registered for ``step``: for a step whose files are
        known only once it has run, checked against its previous stamp's list, which is not
        what the new run writes."""
        self._outputs.pop(step, None)

    def done(self, step: str, extra: dict | None = None, outputs=()) -> None:
        """Stamp ``step`` as finished: its key and the checksums of its outputs
        (those given to :meth:`cached`, plus ``outputs``)."""
        rels = list(dict.fromkeys([*self._outputs.get(step, ()), *outputs]))
        checksums = {rel: file_identity(self.out / rel) for rel in rels}
        self.writer.write_json(f".cache/{step}.json",
                               {"key": self.keys[step], "outputs": checksums, **(extra or {})})

    def stage(self, name: str, done: int, total: int) -> None:
        """Report progress of stage ``name`` and stop here if the run was cancelled."""
        report(self.progress, name, done, total)
        check_cancel(self.cancel)


def resolve_device(cfg_device: str) -> str:
    """``features.device`` as the model runs it: ``"auto"`` is CUDA when present, else the CPU."""
    if cfg_device != "auto":
        return cfg_device
    from .._backend import cuda_available

    return "cuda" if cuda_available() else "cpu"


def clear_output(ctx: StepContext, rel: str) -> None:
    """Remove ``OUT/rel`` (a file or folder of an earlier run) before a step rewrites it."""
    target = ctx.writer._target(rel)
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()


def files_under(ctx: StepContext, rel: str) -> list[str]:
    """Every file under ``OUT/rel``, relative to ``OUT``, sorted."""
    return sorted(str(p.relative_to(ctx.out)) for p in (ctx.out / rel).rglob("*") if p.is_file())


def read_stamp(ctx: StepContext, step: str) -> dict:
    """The stamp ``OUT/.cache/<step>.json`` as written by :meth:`StepContext.done` ({} if none)."""
    try:
        return json.loads((ctx.out / ".cache" / f"{step}.json").read_text())
    except (OSError, ValueError):
        return {}


def save_npz(writer: ResultWriter, rel: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``OUT/rel`` as an ``.npz``, atomically.

    Not compressed: float maps compress by a sixth to a half for 15-20 s of a core per
    demo run (a model's group arrays: 45.6 MB in 0.2 s, or 38.8 MB in 3.3 s compressed)."""
    from ..io.results import atomic_path

    target = writer._target(rel)
    with atomic_path(target, ".npz") as tmp:
        np.savez(tmp, **arrays)
