"""Config -> ordered steps -> artifacts in a result folder.

Steps, each stamped in ``OUT/.cache/<step>.json`` with its key (a hash of every option
it uses, the keys of the steps it reads from and the *contents* of the files it reads)
and the checksums of the files it wrote, so a re-run recomputes exactly what changed
(see :class:`_Context`). A run holds the folder's lock, removes ``summary.json`` first
and writes it last, so an interrupted folder reads as incomplete:

1. ``story``      read the timed words, place them in volumes
2. ``features``   AN responses per model (the extraction caches itself as well)
3. ``atoms``      sparse dictionary per model; ``top_words``: the words that most
                  activate and suppress each atom (:mod:`._top_words`)
4. ``fmri``       load the subjects' fMRI, or simulate labelled subjects
5. ``encoding``   per model and subject: paper's sparse fit, cross-validated ridge,
                  OLS z maps; group maps; noise ceiling
6. ``networks``   atom maps vs each atlas: association tables
7. ``report``     analyses, figures, summary, recovery (simulated data)
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .._progress import CancelToken, ProgressCallback, check_cancel, report
from ..errors import CacheMismatchWarning, ConfigError, FolderInUseError
from ..io.results import (DATASET_DESCRIPTION, SUMMARY, WARNINGS, ResultFolder, ResultWriter, RunLock,
                          check_output_folder)
from ._state import file_identity, key_of
from ._top_words import step_top_words
from .validate import validate_config
from .config import PipelineConfig, config_to_yaml

_log = logging.getLogger(__name__)


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


@dataclass
class _Context:
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
    summary: dict[str, Any] = field(default_factory=dict)
    #: nuisance regressors (n_volumes, n_confounds) of the story step, for the encoding step
    confounds: Any = None
    #: every input file read, path -> content identity (for provenance.json)
    inputs: dict[str, str] = field(default_factory=dict)
    #: the story runs, [(story, n_volumes, tr), ...] in the order their volumes are stacked
    runs: list = field(default_factory=list)
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
        report(self.progress, name, done, total)
        check_cancel(self.cancel)


def _device(cfg_device: str) -> str:
    if cfg_device != "auto":
        return cfg_device
    from .._backend import cuda_available

    return "cuda" if cuda_available() else "cpu"


# ---------------------------------------------------------------------------- steps
def _step_story(ctx: _Context):
    """Timed words without pause labels -> story/words.tsv; nuisance regressors on the
    volume grid (same operator as the ANs) -> story/nuisance.tsv and ``ctx.confounds``."""
    import warnings

    import pandas as pd

    from ..features.alignment import volume_of_words
    from ..features.nuisance import PauseLabelsWarning, nuisance_regressors, remove_pause_labels
    from ..io.stimuli import read_story, read_story_onset

    if ctx.config.multi_story:  # each story on its own, stacked (pipeline._stories)
        from ._stories import step_stories

        return step_stories(ctx)
    cfg = ctx.config.story
    ctx.runs = [(cfg.label, cfg.n_volumes, cfg.tr)]
    onset = read_story_onset(cfg.events) if cfg.events else cfg.onset
    words = read_story(cfg.path, onset=onset)
    words, n_pause_labels = remove_pause_labels(words, cfg.pause_labels)
    outputs = ["story/words.tsv", "story/nuisance.tsv"]
    # paths are not part of a key (a moved study is the same study): their contents are
    if ctx.cached("story", [cfg.model_dump(mode="json", exclude={"path", "events"}), onset,
                            ctx.config.features.alignment], outputs,
                  inputs=[story_file(cfg.path), cfg.events]):
        nuisance = pd.read_csv(ctx.out / outputs[1], sep="\t", index_col="volume")
    else:
        df = words.to_dataframe()
        df["volume"] = volume_of_words(words.onsets, cfg.n_volumes, cfg.tr)
        ctx.writer.write_table(outputs[0], df)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PauseLabelsWarning)  # already removed and warned above
            nuisance = nuisance_regressors(words, cfg.tr, cfg.n_volumes, alignment=ctx.config.features.alignment,
                                           pause_labels=None, min_pause=cfg.min_pause)
        ctx.writer.write_table(outputs[1], nuisance.reset_index())
        ctx.done("story", {"nuisance": nuisance.attrs.get("provenance", {})})
    ctx.confounds = nuisance
    n_in = int(((words.onsets >= 0) & (words.onsets < cfg.n_volumes * cfg.tr)).sum())
    ctx.summary["story"] = {"source": words.source, "onset": onset, "n_words": len(words),
                            "n_words_in_scan": n_in, "n_filled_times": int((~words.measured).sum()),
                            "n_pause_labels_removed": n_pause_labels,
                            "nuisance_regressors": list(nuisance.columns)}
    return words


def _step_features(ctx: _Context, words, model: str, untrained_seed: int | None = None):
    """``untrained_seed``: the baseline of the same architecture with random weights."""
    from ..features.extract import AN_FILES, extract_an_responses

    cfg = ctx.config
    slug = model_slug(model) + ("-untrained" if untrained_seed is not None else "")
    if isinstance(words, list):  # several stories: one extraction per story, stacked
        from ._stories import features_stories

        return features_stories(ctx, words, model, slug, untrained_seed)
    step = f"features/{slug}"
    # the extraction keys its own cache (story, model weights, options); this stamp adds
    # the checksums of its files, so a corrupted cache is recomputed, not trusted
    # where the model runs (device_map, max_memory, offload_folder) changes no number
    placement = {"device_map", "max_memory", "offload_folder"}
    if not ctx.cached(step, [cfg.features.model_dump(mode="json", exclude={"models", *placement}), slug,
                             ctx.keys["story"],
                             untrained_seed],
                      [f"{step}/{name}" for name in AN_FILES]):
        (ctx.out / step / AN_FILES[-1]).unlink(missing_ok=True)
    if untrained_seed is not None:
        from ..features.untrained import load_untrained_model

        model = load_untrained_model(model, seed=untrained_seed, device=_device(cfg.features.device),
                                     dtype=cfg.features.dtype)
    ans = extract_an_responses(
        words, model, tr=cfg.story.tr, n_volumes=cfg.story.n_volumes,
        site=cfg.features.site, alignment=cfg.features.alignment, context=cfg.features.context,
        device=_device(cfg.features.device), dtype=cfg.features.dtype,
        **cfg.features.model_dump(include=placement),
        center_words=cfg.features.center_words, pause_labels=cfg.story.pause_labels,
        cache_dir=ctx.out / "features" / slug, progress=ctx.progress, cancel=ctx.cancel,
    )
    ctx.done(step)
    ctx.keys[step] = key_of(ctx.keys[step], str(ans.provenance.get("cache_key", "")))
    return ans


def baseline_slugs(config: PipelineConfig) -> dict[str, str]:
    """Folder names of the baselines of ``config``: kind -> slug."""
    fc = config.features
    source = model_slug(fc.baseline_model or fc.models[0])
    names = {"phase_randomised": f"{source}-phase-randomised", "untrained": f"{source}-untrained",
             "nuisance": "nuisance"}
    return {kind: names[kind] for kind in fc.baselines}


def _step_baselines(ctx: _Context, words, per_model: dict) -> dict[str, dict]:
    """Pseudo-models that go through the same encoding and association tests (METHOD §4):
    phase-randomised atoms of the baseline model, its untrained twin (random weights from
    its configuration; ANs extracted and atoms learned exactly like the model's), and the
    nuisance regressors as atoms. Their folders are written like a model's."""
    import pandas as pd
    import scipy.sparse as sp

    from ._state import key_of

    cfg = ctx.config
    fc = cfg.features
    if not fc.baselines:
        return {}
    source_name = fc.baseline_model or fc.models[0]
    source = model_slug(source_name)
    if source not in per_model:
        raise ConfigError(f"features.baseline_model {fc.baseline_model!r} is not among features.models {fc.models}.")
    out: dict[str, dict] = {}
    for kind, slug in baseline_slugs(cfg).items():
        check_cancel(ctx.cancel)
        if kind == "untrained":
            ans = _step_features(ctx, words, source_name, untrained_seed=cfg.seed)
            atoms, codes, index = _step_atoms(ctx, ans, slug)
            out[slug] = {"model": f"untrained {source_name} (random weights from its configuration, seed {cfg.seed})",
                         "atoms": atoms, "codes": codes, "index": index, "n_ans": ans.responses.shape[1],
                         "dropped": len(ans.dropped), "an": None, "baseline": kind}
            continue
        if kind == "phase_randomised":
            from ..encoding.inference import phase_randomise

            src = per_model[source]
            lengths = [r[1] for r in _runs(cfg)]
            atoms = phase_randomise(src["atoms"], random_state=cfg.seed, runs=lengths).astype(np.float32)
            codes, index = src["codes"], src["index"]
            label = (f"{source_name} atoms, Fourier phases randomised (the same phases for every atom"
                     + (", each story's on its own" if len(lengths) > 1 else "") + f"), seed {cfg.seed}")
            upstream = [ctx.keys[f"atoms/{source}"], "phases per story run", lengths]
        else:  # nuisance
            conf = ctx.confounds
            atoms = np.asarray(conf.to_numpy(), np.float64)
            atoms = (atoms / np.linalg.norm(atoms, axis=0)).astype(np.float32)
            codes = sp.identity(atoms.shape[1], format="csr", dtype=np.float32)
            index = pd.DataFrame({"layer": np.zeros(atoms.shape[1], int), "unit": np.arange(atoms.shape[1]),
                                  "site": [f"nuisance:{c}" for c in conf.columns]})
            label = f"nuisance regressors as atoms: {', '.join(conf.columns)}"
            upstream = ctx.keys["story"]
        rel = f"atoms/{slug}"
        ctx.keys[rel] = key_of(rel, kind, upstream, cfg.seed)
        ctx.writer.write_npy(f"{rel}/atoms.npy", atoms)
        ctx.writer.write_npz_sparse(f"{rel}/codes.npz", sp.csr_matrix(codes))
        ctx.writer.write_json(f"{rel}/dictionary.json", {"baseline": kind, "source": label,
                                                        "n_atoms": int(atoms.shape[1])})
        out[slug] = {"model": label, "atoms": atoms, "codes": codes, "index": index, "n_ans": codes.shape[1],
                     "dropped": 0, "an": None, "baseline": kind}
    return out


def _step_atoms(ctx: _Context, ans, slug: str):
    import pandas as pd
    import scipy.sparse as sp

    from ..sparse.atoms import layer_histogram
    from ..sparse.dictionary import SparseDictionary

    cfg = ctx.config.atoms
    rel = f"atoms/{slug}"
    # atoms.tsv is not an output of this step: the networks step rewrites it (annotated)
    outputs = [f"{rel}/atoms.npy", f"{rel}/codes.npz", f"{rel}/dictionary.json", f"{rel}/layer_hist.tsv",
               f"{rel}/columns.npy"]
    step = f"atoms/{slug}"
    if ctx.cached(step, [cfg.model_dump(mode="json"), ctx.keys[f"features/{slug}"]], outputs):
        atoms = np.load(ctx.out / outputs[0])
        codes = sp.load_npz(ctx.out / outputs[1])
        columns = np.load(ctx.out / outputs[4])
        return atoms, codes, ans.index.iloc[columns].reset_index(drop=True)

    X = ans.responses
    index = ans.index
    columns = np.arange(X.shape[1])
    draws = None
    if cfg.ans_per_layer or cfg.ans_total:
        from ..analyses.subsample import subsample_ans

        try:
            draws = subsample_ans(index, n_per_layer=cfg.ans_per_layer, n_total=cfg.ans_total,
                                  by_layer=cfg.ans_by_layer, n_draws=cfg.size_draws, random_state=cfg.seed)
        except ValueError as exc:
            raise ConfigError(f"atoms: model {slug!r} ({X.shape[1]} ANs): {exc}") from None
        columns = np.sort(np.asarray(draws[0]))
        X = X[:, columns]
        index = index.iloc[columns].reset_index(drop=True)
    backend = cfg.backend
    # several stories: the dictionary may be learned on some of them (atoms.stories)
    rows = None
    if cfg.stories is not None and ctx.config.multi_story:
        from ..encoding.stories import run_rows

        rows = run_rows(_runs(ctx.config), cfg.stories)
    X_all = X
    if rows is not None:
        X = X[rows]
    est = SparseDictionary(n_atoms=cfg.n_atoms, alpha=cfg.alpha, max_iter=cfg.max_iter, tol=cfg.tol,
                           init=cfg.init, random_state=cfg.seed, backend=backend)
    est.fit(X.T, progress=ctx.progress, cancel=ctx.cancel)
    atoms = np.asarray(est.atoms_, dtype=np.float32)
    codes = sp.csr_matrix(est.codes_)
    if rows is not None:
        from ..sparse.atoms import atoms_on_new_volumes

        # the other stories' atom time courses: their ANs projected on the codes
        full = atoms_on_new_volumes(X_all, codes).astype(np.float32)
        full[rows] = atoms
        atoms = full
    flipped = np.zeros(atoms.shape[1], bool)
    if cfg.orient == "members":
        from ..sparse.atoms import orient_atoms

        atoms, codes, flipped = orient_atoms(atoms, codes)
    reproducibility = _atom_reproducibility(ctx, X, atoms if rows is None else atoms[rows])
    size_control = _size_control_spread(ctx, ans.responses, draws, atoms) if draws is not None else None
    hist = layer_histogram(codes, index)
    hist_df = hist.copy()
    hist_df.insert(0, "atom", np.arange(len(hist_df)))
    w = ctx.writer
    w.write_npy(outputs[0], atoms)
    w.write_npz_sparse(outputs[1], codes)
    w.write_table(outputs[3], pd.DataFrame(hist_df))
    w.write_npy(outputs[4], columns)
    w.write_json(f"{rel}/dictionary.json", {
        "n_atoms": cfg.n_atoms, "alpha": float(getattr(est, "alpha", np.nan)) if not isinstance(getattr(est, "alpha", None), str) else est.alpha,
        "n_iter": int(getattr(est, "n_iter_", -1)),
        "objective": [float(v) for v in np.atleast_1d(getattr(est, "objective_", []))],
        "n_ans": int(X.shape[1]), "mean_nonzero_per_an": float(codes.getnnz() / max(X.shape[1], 1)),
        "init": cfg.init, "seed": cfg.seed,
        "orient": cfg.orient, "n_flipped": int(flipped.sum()),
        "stories": ([r[0] for r in ctx.runs] if cfg.stories is None else list(cfg.stories)),
        "other_stories": (None if rows is None else
                          "atom time courses = least-squares projection of the story's ANs on the codes"),
        "reproducibility": reproducibility,
        "size_control": size_control,
    })
    ctx.done(step)
    return atoms, codes, index


def _size_control_spread(ctx: _Context, X_all: np.ndarray, draws: list, atoms: np.ndarray) -> dict:
    """Dictionary of every draw of equal-sized AN sets: the spread over draws of the share
    of variance explained, codes per AN and atoms matched to the first draw's."""
    from ..sparse.dictionary import SparseDictionary
    from ..sparse.selection import match_atoms

    cfg = ctx.config.atoms
    rows = []
    for i, columns in enumerate(draws):
        ctx.stage("size control draws", i, len(draws))
        X = np.ascontiguousarray(X_all[:, np.sort(columns)].T)
        est = SparseDictionary(n_atoms=cfg.n_atoms, alpha=cfg.alpha, max_iter=cfg.max_iter, tol=cfg.tol,
                               init=cfg.init, random_state=cfg.seed, backend=cfg.backend)
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, cancel=ctx.cancel)
        codes = np.asarray(est.codes_, np.float64)
        resid = X - codes.T @ est.components_
        rows.append({
            "explained_variance": float(1 - (resid ** 2).sum() / ((X - X.mean(1, keepdims=True)) ** 2).sum()),
            "codes_per_an": float((codes != 0).sum(0).mean()),
            "matched_to_first": float((match_atoms(atoms, est.atoms_)[2] >= 0.9).mean()),
        })
    out: dict[str, Any] = {"rule": ("ans_total" if cfg.ans_total else "ans_per_layer"),
                           "n_ans_per_draw": int(len(draws[0])), "n_draws": len(draws),
                           "by_layer": bool(cfg.ans_by_layer) if cfg.ans_total else True}
    for key in rows[0]:
        values = np.array([r[key] for r in rows])
        out[key] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "values": [float(v) for v in values]}
    return out


def _atom_reproducibility(ctx: _Context, X: np.ndarray, atoms: np.ndarray) -> dict | None:
    """Learn the dictionary again from ``n_restarts`` other starts (seeds seed+1, ...):
    each atom's matched |r| (Hungarian, mean over restarts; ``per_atom``, the
    ``reproducibility`` column of atoms.tsv) and the fraction matched at |r| >= 0.9."""
    from ..sparse.dictionary import SparseDictionary
    from ..sparse.selection import match_atoms

    cfg = ctx.config.atoms
    if not cfg.n_restarts:
        return None
    best = np.zeros((cfg.n_restarts, atoms.shape[1]))
    for i in range(cfg.n_restarts):
        ctx.stage("atom reproducibility", i, cfg.n_restarts)
        other = SparseDictionary(n_atoms=cfg.n_atoms, alpha=cfg.alpha, max_iter=cfg.max_iter, tol=cfg.tol,
                                 init=cfg.init, random_state=cfg.seed + 1 + i, backend=cfg.backend)
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the kept start warns already
            other.fit(X.T, cancel=ctx.cancel)
        ref_idx, _, abs_r = match_atoms(atoms, other.atoms_)
        best[i, ref_idx] = abs_r
    fractions = (best >= 0.9).mean(1)
    return {"n_restarts": cfg.n_restarts, "seeds": [cfg.seed + 1 + i for i in range(cfg.n_restarts)],
            "threshold": 0.9, "fraction_reproduced": [float(f) for f in fractions],
            "mean_fraction_reproduced": float(fractions.mean()),
            "rule": "each atom matched one to one to another start's atoms by |Pearson r| (Hungarian)",
            "per_atom": [float(v) for v in best.mean(0)]}


def _correlations(columns: np.ndarray, series: np.ndarray) -> np.ndarray:
    """Pearson r of each column of ``columns`` (n_volumes, k) with ``series`` (n_volumes,)."""
    a = columns - columns.mean(0)
    b = series - series.mean()
    den = np.sqrt((a * a).sum(0) * (b @ b))
    return np.where(den > 0, (b @ a) / np.where(den > 0, den, 1), 0.0)


# Default plant: sources that activate and deactivate networks of two atlases, chosen
# among those that cover few other networks in part (the Smith maps overlap one another;
# a network covered by 5-30 % is neither clearly driven nor clearly not). Each source
# drives one network; truth.json lists what that means in every scored atlas (Smith
# auditory also covers 39 % of Yeo somatomotor and 42 % of Yeo ventral attention).
_DEFAULT_PLANT = [("smith10:auditory", +1), ("yeo7:Limbic", -1), ("smith10:cerebellum", +1),
                  ("yeo7:Default", -1), ("yeo7:Frontoparietal", +1), ("yeo7:Dorsal attention", -1)]


def _default_links(sources: list[int], atlas: str) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Assign each chosen source one network and a sign (see ``_DEFAULT_PLANT``)."""
    from ..datasets import BUNDLED_ATLASES, atlas_labels

    if atlas == "smith10":
        plant = _DEFAULT_PLANT
    else:
        names = atlas_labels(atlas) if atlas in BUNDLED_ATLASES else []
        if not names:
            raise ValueError(f"fmri.simulate.links is needed for atlas {atlas!r} (no bundled network names).")
        plant = [(f"{atlas}:{n}", +1 if i % 2 == 0 else -1) for i, n in enumerate(names)]
    links: dict[int, list[str]] = {}
    negative: dict[int, list[str]] = {}
    for i, src in enumerate(sources):
        net, sign = plant[i % len(plant)]
        (links if sign > 0 else negative)[int(src)] = [net]
    return links, negative


#: fMRI options that are paths: their contents enter the key instead
_FMRI_PATHS = {"images", "regions", "bids", "mask"}


def _step_fmri(ctx: _Context, planting: dict | None):
    cfg = ctx.config
    fc = cfg.fmri
    if fc.simulate is not None:
        return _simulate(ctx, planting)
    from ..io.fmri import find_bids_runs, load_fmri, load_region_timeseries

    if cfg.multi_story:  # every story's runs, stacked per subject
        from ._stories import fmri_stories

        data = fmri_stories(ctx)
        ctx.summary["fmri"] = {"kind": data.kind, "subjects": data.subjects, "sources": data.sources,
                               "notes": data.notes, "simulated": False,
                               "runs": [{"story": n, "n_volumes": v, "tr": t} for n, v, t in data.runs]}
        return data, None

    if fc.regions:
        ctx.key("fmri", [fc.model_dump(mode="json", exclude=_FMRI_PATHS), cfg.story.n_volumes],
                inputs=list(fc.regions))
        data = load_region_timeseries(fc.regions, n_volumes=cfg.story.n_volumes, subjects=fc.subjects)
    else:
        images = list(fc.images)
        subjects = fc.subjects
        if fc.bids is not None:
            runs = find_bids_runs(fc.bids.root, fc.bids.task, subjects=fc.bids.subjects,
                                  derivative=fc.bids.derivative, space=fc.bids.space)
            images = [r["bold"] for r in runs]
            subjects = [r["subject"] for r in runs]
        mask_file = None if fc.mask == "mni" else fc.mask
        ctx.key("fmri", [fc.model_dump(mode="json", exclude=_FMRI_PATHS), fc.mask == "mni", subjects,
                         cfg.story.n_volumes, cfg.story.tr],
                inputs=[*images, mask_file])
        data = load_fmri(images, mask=fc.mask, n_volumes=cfg.story.n_volumes, subjects=subjects,
                         tr=cfg.story.tr, progress=ctx.progress, cancel=ctx.cancel)
    ctx.summary["fmri"] = {"kind": data.kind, "subjects": data.subjects, "sources": data.sources,
                           "notes": data.notes, "simulated": False}
    return data, None


def _driving_model(config: PipelineConfig) -> str:
    sc = config.fmri.simulate
    slugs = [model_slug(m) for m in config.features.models]
    slug = model_slug(sc.model) if sc is not None and sc.model else slugs[0]
    if slug not in slugs:
        raise ValueError(f"fmri.simulate.model {sc.model!r} is not among features.models {config.features.models}.")
    return slug


def _planted_sources(ctx: _Context, planting: dict) -> tuple[np.ndarray, dict]:
    """Candidate source time courses from the driving model's ANs, and how they were made."""
    from ..simulate import an_mix_sources

    sc = ctx.config.fmri.simulate
    atoms, codes, responses = planting["atoms"], planting["codes"], planting["responses"]
    if sc.sources == "atoms":
        return atoms, {"kind": "atoms", "note": "the analysis' own atoms (an easy simulation)"}
    if sc.sources == "an_mix":
        sources, info = an_mix_sources(responses, codes, range(atoms.shape[1]), n_members=sc.n_members,
                                       seed=sc.seed)
        return sources, {"kind": "an_mix", "n_members": sc.n_members, "model": planting["slug"],
                         "note": "signed mean of n_members ANs drawn among the members of one atom each",
                         "members": {str(i): d for i, d in enumerate(info)}}
    from ..sparse.dictionary import SparseDictionary

    ac = ctx.config.atoms
    rng = np.random.default_rng(sc.seed + 1)
    n_ans = responses.shape[1]
    cols = np.sort(rng.choice(n_ans, size=max(int(round(sc.relearn_fraction * n_ans)), ac.n_atoms), replace=False))
    est = SparseDictionary(n_atoms=ac.n_atoms, alpha=ac.alpha, max_iter=ac.max_iter, tol=ac.tol,
                           random_state=ac.seed + 1000 + sc.seed, backend=ac.backend, init="random")
    est.fit(np.ascontiguousarray(responses[:, cols].T), progress=ctx.progress, cancel=ctx.cancel)
    return np.asarray(est.atoms_, np.float64), {
        "kind": "relearned", "model": planting["slug"], "fraction": sc.relearn_fraction,
        "n_ans_used": int(cols.size), "seed": int(ac.seed + 1000 + sc.seed), "init": "random",
        "note": "atoms of a dictionary learned again from another start on a random subset of the ANs"}


def load_simulated_subjects(config: PipelineConfig, sim_dir: Path):
    """The simulated subjects written in ``sim_dir`` as the analysis reads them.

    With several stories, each subject's images (one per story) are stacked in the
    configuration's story order.

    Returns
    -------
    FMRIData
    """
    from ..io.fmri import concat_story_runs, load_fmri

    def load(pattern, n_volumes, tr):
        images = sorted(Path(sim_dir).glob(pattern))
        return load_fmri([str(p) for p in images], mask=str(Path(sim_dir) / "mask.nii.gz"), n_volumes=n_volumes,
                         tr=tr, subjects=[p.name.split("_")[0] for p in images])

    if not config.multi_story:
        return load("sub-*_bold.nii.gz", config.story.n_volumes, config.story.tr)
    per_story = {st.label: load(f"sub-*_task-{st.label}_sim_bold.nii.gz", st.n_volumes, st.tr)
                 for st in config.stories}
    return concat_story_runs(per_story, {st.label: st.tr for st in config.stories})


def _simulate(ctx: _Context, planting: dict):
    from ..simulate import SIMULATOR_REVISION, SimulationPlan, distinct_sources, simulate_fmri, write_simulation

    cfg = ctx.config
    sc = cfg.fmri.simulate
    slug = planting["slug"]
    sim_dir = ctx.out / "simulated"
    key_parts = [sc.model_dump(mode="json"), ctx.keys[f"atoms/{slug}"], list(cfg.networks.atlases), cfg.story.tr,
                 ["simulator revision", SIMULATOR_REVISION]]
    runs = ctx.runs if cfg.multi_story else None
    if runs:
        key_parts.append([list(r) for r in runs])
    stamp = _read_stamp(ctx, "simulate")
    if not ctx.cached("simulate", key_parts, sorted(stamp.get("outputs", {})) or ["simulated/truth.json"]):
        # nothing of an earlier simulation may be read as a subject of this one, and its
        # stamp's files (another number of subjects) are not this step's outputs
        shutil.rmtree(sim_dir, ignore_errors=True)
        ctx.forget_outputs("simulate")
        sources, info = _planted_sources(ctx, planting)
        if sc.links is None and sc.negative_links is None:
            chosen = distinct_sources(sources, sc.n_links) if sc.n_links else []
            links, negative = _default_links(chosen, sc.atlas)
        else:
            links, negative = dict(sc.links or {}), dict(sc.negative_links or {})
        plan = SimulationPlan(
            links=links, negative_links=negative, atlas=sc.atlas, truth_atlases=list(cfg.networks.atlases),
            n_subjects=sc.n_subjects, r2_range=(sc.r2_min, sc.r2_max), ar1_grey=sc.ar1_grey,
            ar1_other=sc.ar1_other, hrf_delay_s=sc.hrf_delay_s, hrf_dispersion_s=sc.hrf_dispersion_s,
            fluctuation_atlases=list(sc.fluctuation_atlases), fluctuation_share=sc.fluctuation_share,
            seed=sc.seed, resolution_mm=sc.resolution_mm)
        sim = simulate_fmri(sources, plan, tr=cfg.story.tr, source_info=info, runs=runs, progress=ctx.progress,
                            cancel=ctx.cancel)
        written = write_simulation(sim, sim_dir)
        ctx.done("simulate", outputs=[str(Path(p).relative_to(ctx.out)) for p in written])
    ctx.keys["fmri"] = ctx.keys["simulate"]
    data = load_simulated_subjects(cfg, sim_dir)
    truth = json.loads((sim_dir / "truth.json").read_text())
    ctx.summary["fmri"] = {"kind": "voxels", "subjects": data.subjects, "simulated": True,
                           "driving_model": slug, "sources": truth["sources"].get("kind"),
                           "planted_links": truth.get("planted_links"), "notes": data.notes}
    return data, truth


def _clear(ctx: _Context, rel: str) -> None:
    """Remove ``OUT/rel`` (a file or folder of an earlier run) before a step rewrites it."""
    target = ctx.writer._target(rel)
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()


def _files_under(ctx: _Context, rel: str) -> list[str]:
    return sorted(str(p.relative_to(ctx.out)) for p in (ctx.out / rel).rglob("*") if p.is_file())


def _read_stamp(ctx: _Context, step: str) -> dict:
    try:
        return json.loads((ctx.out / ".cache" / f"{step}.json").read_text())
    except (OSError, ValueError):
        return {}


def _confounds(ctx: _Context, slug: str | None = None):
    """The story's nuisance regressors (word rate, word length / frequency, pauses,
    HRF-convolved like the ANs; ``story/nuisance.tsv``) when ``encoding.confounds`` is on;
    None otherwise (then only the drifts are nuisance), and None for the nuisance
    baseline, whose atoms they are. Constant columns are dropped."""
    if not ctx.config.encoding.confounds or (slug is not None and slug == baseline_slugs(ctx.config).get("nuisance")):
        return None
    table = getattr(ctx, "confounds", None)
    if table is None:
        return None
    table = table.select_dtypes("number")
    if len(table) != sum(r[1] for r in ctx.runs or [(None, ctx.config.story.n_volumes)]) or table.shape[1] == 0:
        return None
    table = table.loc[:, table.std() > 0]
    return table if table.shape[1] else None


def _runs(config: PipelineConfig) -> list[tuple[str, int, float]]:
    """The story runs of ``config``, [(story, n_volumes, tr), ...] in the order their
    volumes are stacked (one for a single story)."""
    return [(s.label, s.n_volumes, s.tr) for s in config.story_list]


def _filter_runs(ctx: _Context, Y: np.ndarray) -> np.ndarray:
    """``encoding.highpass_cutoff`` applied to ``Y`` (n_volumes, n_columns): over the story,
    or within each story's run when there are several (its own TR, drifts and mean)."""
    from ..encoding.preprocessing import highpass

    ec = ctx.config.encoding
    runs = _runs(ctx.config)
    if len(runs) > 1:
        from ..encoding.stories import highpass_runs

        return highpass_runs(np.asarray(Y, np.float64), runs, ec.highpass_cutoff)
    return highpass(Y, ctx.config.story.tr, cutoff=ec.highpass_cutoff) if ec.highpass_cutoff \
        else np.asarray(Y, np.float64)


def _map_rows(ctx: _Context) -> tuple[np.ndarray, list]:
    """The volumes (rows) and runs the atom maps and association tests use:
    ``encoding.map_stories``, by default every story."""
    names = ctx.config.encoding.map_stories
    runs = _runs(ctx.config)
    n = sum(r[1] for r in runs)
    if names is None or len(runs) < 2:
        return np.arange(n), runs
    from ..encoding.stories import run_rows

    return run_rows(runs, names), [r for r in runs if r[0] in names]


def subject_file_name(subject: str) -> str:
    """The file-safe name of a subject's encoding artifact (``sub-01`` -> ``sub-01``)."""
    return model_slug(subject)


def _encoding_key_parts(ctx: _Context, slug: str) -> list:
    """What every encoding task of ``slug`` depends on: the encoding options and the keys of
    the atoms, the fMRI and the story (the confounds)."""
    cfg = ctx.config
    return [cfg.encoding.model_dump(mode="json"), ctx.keys[f"atoms/{slug}"], ctx.keys["fmri"], ctx.keys["story"],
            cfg.seed, cfg.story.tr]


@dataclass(frozen=True)
class SubjectTask:
    """One encoding task: a model's atoms against one subject's fMRI.

    Everything a worker needs besides the arrays: which model and subject, the subject's
    place in the study (``index``: it seeds the subject's permutations, so a split run
    draws what one run draws), whether time courses are kept, and the step key.
    """

    slug: str
    subject: str
    index: int
    n_subjects: int
    keep_courses: bool
    key: str

    @property
    def step(self) -> str:
        return f"encoding/{self.slug}/subjects/{subject_file_name(self.subject)}"

    @property
    def artifact(self) -> str:
        return f"{self.step}.npz"


def _subject_tasks(ctx: _Context, data, slug: str, warn: bool = True) -> list[SubjectTask]:
    """The encoding tasks of ``slug``, one per subject of ``data``, keyed by content."""
    ec = ctx.config.encoding
    n_sub = len(data.data)
    keep = bool(ec.save_timecourses) and _timecourses_fit(n_sub, data.data[0].shape, ec.timecourses_max_gb, slug,
                                                          warn=warn)
    upstream = key_of(f"encoding/{slug}/subjects", _encoding_key_parts(ctx, slug))
    return [SubjectTask(slug, subject, s, n_sub, keep, key_of(upstream, subject, s, keep))
            for s, subject in enumerate(data.subjects)]


def encode_subject(ctx: _Context, task: SubjectTask, Y: np.ndarray, atoms: np.ndarray, confounds=None,
                   an=None, tick=None) -> dict[str, np.ndarray]:
    """One subject's encoding: GLS atom maps, the paper's sparse fit (and its shift null),
    the cross-validated ridge (and its permutation p), the layer-wise baseline.

    Writes ``encoding/<model>/subjects/<subject>.npz`` (stamped in ``.cache`` with
    ``task.key``), or reads it back when the stamp matches; the group step reads only
    these files, so subjects computed by other processes or jobs merge into one run.

    Parameters
    ----------
    ctx : _Context
        Only ``config``, ``writer`` and ``cancel`` are used (a worker builds its own).
    task : SubjectTask
    Y : ndarray of shape (n_volumes, n_voxels)
        The subject's fMRI.
    atoms : ndarray of shape (n_volumes, k)
    confounds : ndarray of shape (n_volumes, n_confounds) or None
    an : tuple (ndarray (n_volumes, n_ans), ndarray (n_ans,) of layers) or None
        For the layer-wise baseline only.
    tick : callable, optional
        Called after each model fitted (progress).

    Returns
    -------
    dict of str -> ndarray
        ``z``, ``effect``, ``rho`` (each (k, n_voxels) or (n_voxels,)), and as configured
        ``coef``, ``r2_sparse``, ``r2_sparse_null``, ``r2_cv``, ``r_cv``, ``p_cv``,
        ``baseline_r2``, ``baseline_layers``, ``measured``, ``predicted``.
    """
    from ..encoding.glm import gls_atom_maps
    from ..encoding.preprocessing import drift_basis, highpass

    if ctx.cached(task.step, [task.key], [task.artifact]):
        arr = np.load(ctx.out / task.artifact)
        if tick is not None:
            for _ in range(1 + len(ctx.config.encoding.models)):
                tick()
        return {k: arr[k] for k in arr.files}
    cfg = ctx.config
    ec = cfg.encoding
    tr = cfg.story.tr
    k = atoms.shape[1]
    runs = _runs(cfg) if cfg.multi_story else None  # several stories: drifts and delays per run
    X = _filter_runs(ctx, atoms.astype(np.float64))
    # the volumes of the atom maps (encoding.map_stories: e.g. stories held out of the dictionary)
    mrows, map_runs = _map_rows(ctx)
    # the maps' nuisance: the drifts the high-pass removes (constant, trend, cosines) and
    # the story's confounds; the atoms themselves stay unfiltered in the GLS
    if runs:
        from ..encoding.stories import run_drift_basis

        nuisance = run_drift_basis(map_runs, ec.highpass_cutoff)
    else:
        nuisance = drift_basis(atoms.shape[0], tr, ec.highpass_cutoff)
    out: dict[str, np.ndarray] = {}
    check_cancel(ctx.cancel)
    Yf = _filter_runs(ctx, Y)
    maps = gls_atom_maps(atoms[mrows], Y[mrows], nuisance=nuisance,
                         confounds=None if confounds is None else np.asarray(confounds)[mrows],
                         noise_model=ec.noise_model)
    out["z"], out["effect"], out["rho"] = maps.z, maps.effect, maps.rho
    if tick is not None:
        tick()
    if "sparse" in ec.models:
        from ..encoding.sparse_fit import SparseAtomEncoder

        enc = SparseAtomEncoder(alpha=ec.sparse_alpha).fit(X[mrows], Yf[mrows])
        out["coef"] = np.asarray(enc.coef_, np.float32)
        if task.keep_courses:
            out["measured"] = np.asarray(Yf, np.float32).T
            out["predicted"] = np.asarray(enc.predict(X), np.float32).T
        out["r2_sparse"] = np.asarray(enc.r2_, np.float32)
        if ec.sparse_null_shifts:
            from ..encoding.inference import circular_shift_draws
            from ..encoding.sparse_fit import sparse_r2_null

            # the same shifts for every subject: the story is shared
            shifts = circular_shift_draws(len(mrows), ec.sparse_null_shifts, random_state=cfg.seed)
            out["r2_sparse_null"] = sparse_r2_null(X[mrows], Yf[mrows], shifts, alpha=ec.sparse_alpha,
                                                   cancel=ctx.cancel).astype(np.float32)
        if tick is not None:
            tick()
    if "ridge" in ec.models:
        from ..encoding.ridge import CVRidgeEncoder

        if runs:  # several stories: delays and drifts within each run, done here
            from ..encoding.stories import highpass_runs, leave_one_story_out, make_delays_runs

            design = highpass_runs(make_delays_runs(atoms, runs, ec.delays), runs, ec.highpass_cutoff)
            enc = CVRidgeEncoder(alphas=np.asarray(ec.alphas), n_folds=ec.n_folds, gap=ec.gap, delays=(0,),
                                 highpass_cutoff=None, detrend=False, tr=tr)
            enc.fit(design, Yf)
        else:
            design = None
            enc = CVRidgeEncoder(alphas=np.asarray(ec.alphas), n_folds=ec.n_folds, gap=ec.gap,
                                 delays=tuple(ec.delays), highpass_cutoff=ec.highpass_cutoff, tr=tr)
            enc.fit(atoms, Y)
        if task.keep_courses and "sparse" not in ec.models:
            measured = Yf if runs else enc._filter(np.asarray(Y, np.float64))
            out["measured"] = np.asarray(measured + enc.y_mean_, np.float32).T
            out["predicted"] = np.asarray(enc.predict(atoms if design is None else design), np.float32).T
        out["r2_cv"] = np.asarray(enc.r2_, np.float32)
        out["r_cv"] = np.asarray(enc.r_, np.float32)
        if runs and ec.leave_one_story_out:
            # trained on the other stories, scored on each held-out one: (n_stories, n_voxels)
            loso = leave_one_story_out(atoms, Yf, runs, np.asarray(ec.alphas), delays=tuple(ec.delays),
                                       highpass_cutoff=ec.highpass_cutoff, gap=ec.gap, filtered=True,
                                       cancel=ctx.cancel)
            out["r2_loso"] = np.asarray(loso.r2, np.float32)
            out["r_loso"] = np.asarray(loso.r, np.float32)
        if ec.n_permutations:
            out["p_cv"] = _ridge_p_values(ctx, enc, atoms, Yf, seed=cfg.seed + task.index, design=design)
        if ec.baseline and an is not None:
            from ..encoding.baseline import layerwise_encoding

            base = layerwise_encoding(an[0], an[1], Y, enc.folds_, np.asarray(ec.alphas), gap=ec.gap,
                                      delays=tuple(ec.delays), tr=tr, highpass_cutoff=ec.highpass_cutoff,
                                      progress=ctx.progress, cancel=ctx.cancel)
            out["baseline_r2"] = np.asarray(base.r2, np.float32)
            out["baseline_layers"] = np.asarray(base.layers)
        if "sparse" not in ec.models:
            out["coef"] = np.asarray(enc.coef_[:k], np.float32)
        if tick is not None:
            tick()
    target = ctx.writer._target(task.artifact)
    from ..io.results import atomic_path

    with atomic_path(target, ".npz") as tmp:
        np.savez(tmp, **out)  # uncompressed: written and read once per run, as large as the data
    ctx.done(task.step)
    return out


def _encoding_confounds(ctx: _Context, slug: str):
    """The confound values (n_volumes, n_confounds) of ``slug``'s encoding, or None."""
    confounds = _confounds(ctx, slug)
    return None if confounds is None else confounds.to_numpy(np.float64)


def _encoding_outputs(slug: str, kind: str) -> list[str]:
    """The files the group encoding step of ``slug`` is stamped with (arrays.npz last)."""
    rel = f"encoding/{slug}"
    if kind == "regions":
        return [f"{rel}/regions.csv", f"{rel}/atom_maps.csv", f"{rel}/atom_maps_z.csv", f"{rel}/arrays.npz"]
    return [f"{rel}/atom_maps.nii.gz", f"{rel}/atom_maps_z.nii.gz", f"{rel}/mask.nii.gz", f"{rel}/arrays.npz"]


def _step_encoding(ctx: _Context, data, atoms: np.ndarray, slug: str, an=None, subject_results=None):
    """Per model: every subject's encoding (:func:`encode_subject`), then the group maps.

    ``an``: (AN responses, their layers), needed only for the layer-wise baseline.
    ``subject_results``: the subjects' results computed elsewhere (by Dask workers), in
    the subjects' order; by default they are computed (or read back) here, one by one.
    """
    cfg = ctx.config
    ec = cfg.encoding
    rel = f"encoding/{slug}"
    step = f"encoding/{slug}"
    key_parts = _encoding_key_parts(ctx, slug)
    outputs = _encoding_outputs(slug, data.kind)
    if ctx.cached(step, key_parts, outputs):
        arr = np.load(ctx.out / outputs[3])
        return {k: arr[k] for k in arr.files}
    tasks = _subject_tasks(ctx, data, slug)
    if subject_results is None:
        total = len(tasks) * (1 + len(ec.models))
        counter = {"done": 0}

        def tick():
            counter["done"] += 1
            ctx.stage(f"encoding {slug}", counter["done"], total)

        confounds = _encoding_confounds(ctx, slug)
        ctx.stage(f"encoding {slug}", 0, total)
        subject_results = [encode_subject(ctx, task, Y, atoms, confounds, an, tick)
                           for task, Y in zip(tasks, data.data)]
    return _encoding_group(ctx, data, slug, tasks, subject_results, atoms.shape[1], outputs)


def _encoding_group(ctx: _Context, data, slug: str, tasks: list[SubjectTask], subject_results: list[dict],
                    k: int, outputs: list[str]) -> dict[str, np.ndarray]:
    """The group part of the encoding: group maps, chance levels and noise ceiling from the
    subjects' results (read from their artifacts), written beside them."""
    from ..encoding.inference import group_effects
    from ..encoding.preprocessing import highpass

    cfg = ctx.config
    ec = cfg.encoding
    tr = cfg.story.tr
    rel = f"encoding/{slug}"
    step = f"encoding/{slug}"
    n_sub = len(subject_results)
    # no map of an earlier configuration stays beside the new ones; the subjects'
    # artifacts stay (they are keyed), except those of subjects this run does not have
    keep = {f"{t.step.rsplit('/', 1)[-1]}.npz" for t in tasks}
    for child in sorted((ctx.out / rel).glob("*")):
        if child.name == "subjects":
            for f in child.glob("*"):
                if f.name not in keep:
                    f.unlink()
        else:
            _clear(ctx, str(child.relative_to(ctx.out)))

    def stacked(name):
        return [r[name] for r in subject_results if name in r]

    results = {name: stacked(name) for name in ("z", "effect", "rho", "coef", "r2_sparse", "r2_cv", "r_cv",
                                                "p_cv", "baseline_r2", "r2_sparse_null", "r2_loso", "r_loso")}
    baseline_layers = subject_results[0].get("baseline_layers")
    timecourses = {"measured": stacked("measured"), "predicted": stacked("predicted")}
    confounds = _confounds(ctx, slug)
    runs = _runs(cfg) if cfg.multi_story else None
    map_runs = _map_rows(ctx)[1]
    group_z, group_method = group_effects(np.stack(results["effect"]), np.stack(results["z"]),
                                          method=ec.group_effects, min_random=ec.min_subjects_random)
    group = {
        "z": np.asarray(group_z, np.float32),
        "effect": np.mean(np.stack(results["effect"]), 0).astype(np.float32),
        "ar1": np.mean(np.stack(results["rho"]), 0).astype(np.float32),
        "coef": np.mean(np.stack(results["coef"]), 0).astype(np.float32),
        "subject_z": np.stack(results["z"]).astype(np.float32),
        "subject_effect": np.stack(results["effect"]).astype(np.float32),
    }
    ctx.summary.setdefault("maps", {})[slug] = {
        "statistic": f"per-subject GLS z of each atom with all atoms, drifts and confounds "
                     f"(noise model {ec.noise_model}, estimated without the atoms)",
        "noise_model": ec.noise_model, "group_effects": group_method, "n_subjects": n_sub,
        "min_subjects_random": ec.min_subjects_random,
        "group_statistic": ("one-sample t over subjects of the standardised effects, as z"
                            if group_method == "random" else "Stouffer sum of subject z / sqrt(n)"),
        "confounds": [] if confounds is None else list(confounds.columns),
    }
    if runs:
        ctx.summary["maps"][slug]["stories"] = [r[0] for r in map_runs]
    if results["p_cv"]:
        from ..encoding.inference import fdr, stouffer_p

        # subjects' one-sided permutation p combined by Stouffer (mid-p: a subject whose
        # observed R2 is below every draw gives a finite z), then FDR over voxels
        _, p_group = stouffer_p(np.stack(results["p_cv"]), n_draws=ec.n_permutations)
        group["q_cv"] = np.asarray(fdr(p_group, 0.05)[1], np.float32)
    if results["baseline_r2"]:
        group["baseline_r2"] = np.mean(np.stack(results["baseline_r2"]), 0).astype(np.float32)
        group["baseline_layers"] = baseline_layers
    if results["r2_sparse_null"]:
        group.update(_sparse_r2_chance(np.mean(np.stack(results["r2_sparse"]), 0),
                                       np.mean(np.stack(results["r2_sparse_null"]), 0)))
    for name in ("r2_sparse", "r2_cv", "r_cv"):
        if results[name]:
            group[name] = np.mean(np.stack(results[name]), 0).astype(np.float32)
            group[f"subject_{name}"] = np.stack(results[name]).astype(np.float32)
    for name in ("r2_loso", "r_loso"):  # (n_subjects, n_stories, n_voxels): held-out story per row
        if results[name]:
            per_story = np.mean(np.stack(results[name]), 0)
            group[f"{name}_stories"] = per_story.astype(np.float32)
            group[name] = per_story.mean(0).astype(np.float32)
            group[f"subject_{name}"] = np.stack(results[name]).astype(np.float32)
    if n_sub > 1:
        from ..encoding.stats import noise_ceiling_isc, noise_ceiling_split_half

        filtered = [_filter_runs(ctx, Y) if runs or ec.highpass_cutoff else Y for Y in data.data]
        # the ceiling of one subject's r (split-half + Spearman-Brown), beside the
        # leave-one-out ISC (a lower reference with few subjects)
        ceiling = noise_ceiling_split_half(filtered, random_state=cfg.seed)
        group["noise_ceiling"] = np.asarray(ceiling.subject_r, np.float32)
        group["noise_ceiling_group"] = np.asarray(ceiling.group_r, np.float32)
        group["isc_loo"] = np.asarray(noise_ceiling_isc(filtered), np.float32)
    w = ctx.writer
    if data.kind == "regions":
        _write_region_tables(w, rel, data.region_names, group, k)
    else:
        w.write_nifti(f"{rel}/mask.nii.gz", data.mask_img)
        w.write_nifti(outputs[0], data.unmask(group["coef"]))
        w.write_nifti(outputs[1], data.unmask(group["z"]))
        for name in ("r2_sparse", "r2_cv", "r_cv", "noise_ceiling", "q_cv", "ar1", "r2_sparse_null_p95",
                     "r2_loso", "r_loso", "r2_loso_stories"):
            if name in group:
                w.write_nifti(f"{rel}/{name}.nii.gz", data.unmask(group[name]))
        if "baseline_r2" in group:
            w.write_nifti(f"{rel}/baseline_r2_layers.nii.gz", data.unmask(group["baseline_r2"]))
    if "baseline_r2" in group:
        import pandas as pd

        table = pd.DataFrame({"model": [f"layer {int(l)}" for l in group["baseline_layers"]] + ["atoms"],
                              "r2_median": list(np.median(group["baseline_r2"], 1)) + [np.median(group["r2_cv"])],
                              "r2_p95": list(np.percentile(group["baseline_r2"], 95, 1))
                              + [np.percentile(group["r2_cv"], 95)]})
        w.write_table(f"{rel}/baseline.csv", table)
    if timecourses["measured"]:
        _save_voxel_timecourses(w, rel, timecourses, ec, data.subjects)
    _save_npz(w, outputs[3], group)
    ctx.done(step, outputs=[f for f in _files_under(ctx, rel) if not f.startswith(f"{rel}/subjects/")])
    return group


def _timecourses_fit(n_subjects: int, shape: tuple[int, int], max_gb: float, slug: str, warn: bool = True) -> bool:
    """Whether every subject's measured and predicted courses, shape ``(n_volumes,
    n_voxels)`` each, fit within ``encoding.timecourses_max_gb``; a warning says when not."""
    n_bytes = 8 * n_subjects * int(shape[0]) * int(shape[1])
    if n_bytes <= max_gb * 2**30:
        return True
    if not warn:
        return False
    from ..errors import BrainorgWarning

    warnings.warn(
        f"encoding.save_timecourses: the voxel time courses of {slug} would take {n_bytes / 2**30:.1f} GiB "
        f"({n_subjects} subjects x {shape[1]} voxels x {shape[0]} volumes x 2 x float32), more than "
        f"encoding.timecourses_max_gb = {max_gb:g}; they are not saved (the viewer's voxel panel shows no "
        "time course). Raise encoding.timecourses_max_gb to keep them.", BrainorgWarning, stacklevel=2)
    return False


def _save_voxel_timecourses(writer: ResultWriter, rel: str, timecourses: dict, ec, subjects) -> None:
    """Each subject's measured (preprocessed) and predicted time course of every voxel,
    float32 arrays of shape (n_subjects, n_voxels, n_volumes) (a voxel's courses are
    contiguous, so the viewer reads one voxel from a memory map). The prediction is the
    encoding model's own: the paper's sparse fit (in sample) when it runs, else the
    ridge's final fit (in sample). Size: 8 x subjects x voxels x volumes bytes (e.g. 10
    subjects x 50,000 voxels x 300 volumes = 1.2 GB); ``encoding.save_timecourses: false``
    turns it off."""
    sparse = "sparse" in ec.models
    writer.write_npy(f"{rel}/voxel_measured.npy", np.stack(timecourses["measured"]))
    writer.write_npy(f"{rel}/voxel_predicted.npy", np.stack(timecourses["predicted"]))
    writer.write_json(f"{rel}/voxel_timecourses.json", {
        "subjects": list(subjects),
        "shape": "(n_subjects, n_voxels, n_volumes); voxels in the order of mask.nii.gz (C order)",
        "measured": "the fMRI as the model saw it: cosine high-pass "
                    f"(cut-off {ec.highpass_cutoff} s) with its detrending, in the data's units"
                    + ("" if sparse else ", plus the voxel's mean"),
        "predicted": ("sparse fit (in sample): SparseAtomEncoder.predict of the high-passed atoms"
                      if sparse else "ridge final fit (in sample): CVRidgeEncoder.predict of the atoms"),
        "model": "sparse" if sparse else "ridge",
    })


def _sparse_r2_chance(observed: np.ndarray, null: np.ndarray) -> dict[str, np.ndarray]:
    """The paper's in-sample R2 (group mean, per voxel) against its circular-shift null
    (group mean under each shared shift, (n_shifts, n_voxels)): per-voxel null median,
    95th percentile and p; per-draw map median and 95th percentile (map-level chance)."""
    from ..encoding.inference import permutation_p

    return {
        "r2_sparse_null_median": np.median(null, 0).astype(np.float32),
        "r2_sparse_null_p95": np.percentile(null, 95, 0).astype(np.float32),
        "r2_sparse_p": np.asarray(permutation_p(observed, null), np.float32),
        "r2_sparse_null_map_median": np.median(null, 1).astype(np.float32),
        "r2_sparse_null_map_p95": np.percentile(null, 95, 1).astype(np.float32),
    }


def _ridge_p_values(ctx: _Context, enc, atoms: np.ndarray, Yf: np.ndarray, seed: int,
                    design: np.ndarray | None = None) -> np.ndarray:
    """One-sided p of each voxel's held-out R2 against circular shifts of the atoms, with
    the real fit's folds and per-voxel alphas (see ``make_ridge_score_fn``). ``design``:
    the delayed, filtered atoms when already made (several stories: per run)."""
    from ..encoding.preprocessing import highpass, make_delays
    from ..encoding.stats import circular_shift_null, make_ridge_score_fn

    ec = ctx.config.encoding
    if design is not None:
        X = design
    else:
        X = make_delays(atoms, tuple(ec.delays))
        if ec.highpass_cutoff:
            X = highpass(X, ctx.config.story.tr, cutoff=ec.highpass_cutoff)
    score_fn = make_ridge_score_fn(enc.folds_, np.asarray(ec.alphas), fixed_alpha=enc.alpha_, gap=ec.gap)
    null = circular_shift_null(X, Yf, score_fn, n_permutations=ec.n_permutations, random_state=seed,
                               keep_null=False, progress=ctx.progress, cancel=ctx.cancel)
    return np.asarray(null.p_values, np.float64)


def _write_region_tables(writer: ResultWriter, rel: str, names, group: dict, k: int) -> None:
    """Parcellated data: one row per region instead of NIfTI maps."""
    import pandas as pd

    from ..encoding.inference import fdr

    per_region = pd.DataFrame({"region": list(names)})
    for name in ("r2_sparse", "r2_sparse_null_median", "r2_sparse_null_p95", "r2_sparse_p", "r2_cv", "r_cv",
                 "q_cv", "noise_ceiling", "isc_loo", "r2_loso", "r_loso"):
        if name in group:
            per_region[name] = group[name]
    if "r2_sparse_p" in group:
        per_region.insert(list(per_region.columns).index("r2_sparse_p") + 1, "r2_sparse_q",
                          fdr(np.asarray(group["r2_sparse_p"], np.float64))[1])
    if "subject_r_cv" in group:
        _, lo, hi = _subject_ci(group["subject_r_cv"])
        at = list(per_region.columns).index("r_cv") + 1
        per_region.insert(at, "r_cv_ci_high", hi)
        per_region.insert(at, "r_cv_ci_low", lo)
    if "baseline_r2" in group:  # the layer-wise population baseline, best layer per region
        per_region["baseline_layer_r2_best"] = np.max(group["baseline_r2"], 0)
        per_region["baseline_layer_best"] = np.asarray(group["baseline_layers"])[np.argmax(group["baseline_r2"], 0)]
    writer.write_table(f"{rel}/regions.csv", per_region)
    for stat, rel_name in (("coef", "atom_maps.csv"), ("z", "atom_maps_z.csv")):
        table = pd.DataFrame(group[stat].T, columns=[f"atom_{i}" for i in range(k)])
        table.insert(0, "region", list(names))
        writer.write_table(f"{rel}/{rel_name}", table)


def _subject_ci(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over subjects (axis 0) and its t confidence interval (NaN with one subject)."""
    from scipy import stats as sps

    values = np.asarray(values, np.float64)
    n = values.shape[0]
    mean = values.mean(0)
    if n < 2:
        return mean, np.full_like(mean, np.nan), np.full_like(mean, np.nan)
    half = sps.t.ppf(0.5 + level / 2, n - 1) * values.std(0, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def _region_results(ctx: _Context, data, per_model: dict, baselines: dict) -> None:
    """Parcellated data: each model's regions.csv gains the baselines' r per region; a
    figure of r with its CI over subjects, the noise ceiling and the baselines; the best
    regions in summary.json."""
    import pandas as pd

    from ..analyses.figures import region_results_figure

    if data.kind != "regions":
        return
    out = {}
    for slug, res in per_model.items():
        path = ctx.out / f"encoding/{slug}/regions.csv"
        if res.get("baseline") or not path.exists():
            continue
        table = pd.read_csv(path)
        for b, base in baselines.items():
            if "r_cv" in base["group"]:
                table[f"r_cv_{b}"] = base["group"]["r_cv"]
        ctx.writer.write_table(f"encoding/{slug}/regions.csv", table)
        if "r_cv" in table:
            ctx.writer.write_figure(f"figures/{slug}_regions.png", region_results_figure(table, title=slug))
            cols = [c for c in ("region", "r_cv", "r_cv_ci_low", "r_cv_ci_high", "r2_cv", "q_cv", "r2_sparse",
                                "r2_sparse_null_p95", "r2_sparse_q", "noise_ceiling",
                                *[f"r_cv_{b}" for b in baselines]) if c in table]
            top = table.sort_values("r_cv", ascending=False).head(10)[cols]
            out[slug] = json.loads(top.to_json(orient="records"))
    if out:
        ctx.summary["regions"] = out


def _save_npz(writer: ResultWriter, rel: str, arrays: dict[str, np.ndarray]) -> None:
    from ..io.results import atomic_path

    target = writer._target(rel)
    with atomic_path(target, ".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def _step_networks(ctx: _Context, data, group: dict, slug: str, atoms: np.ndarray | None = None):
    import pandas as pd

    from ..io.atlases import load_fbn

    nc = ctx.config.networks
    regions = data.kind == "regions"
    if regions and (nc.test != "stimulus" or atoms is None):
        ctx.summary.setdefault("skipped", {})[f"networks/{slug}"] = (
            "region time series have no voxel maps for the spatial test; the stimulus test "
            "(networks.test 'stimulus') tests every atom x region")
        return {}
    step = f"networks/{slug}"
    rel = f"networks/{slug}"
    outputs = [f"{rel}/association_activated.csv", f"{rel}/association_deactivated.csv"]
    atlases = {}
    for name in ([] if regions else nc.atlases):
        atlas = load_fbn(name, data.mask_img)
        atlases[atlas_slug(name)] = atlas  # tables, figures and display files name it so
        _write_atlas_display(ctx, atlas_slug(name), atlas, data.mask_img)
    from ..networks.association import TEST_REVISION

    if ctx.cached(step, [nc.model_dump(mode="json", exclude={"atlases"}),
                         ["regions"] if regions else [atlas_slug(a) for a in nc.atlases],
                         ctx.keys[f"encoding/{slug}"], ctx.config.seed, ["test revision", TEST_REVISION]], outputs,
                  inputs=[] if regions else [atlas_file(name) for name in nc.atlases]):
        summary = ctx.out / f"{rel}/test.json"
        if summary.exists():
            ctx.summary.setdefault("networks", {})[slug] = json.loads(summary.read_text())
        return {p: pd.read_csv(ctx.out / o) for p, o in zip(("activated", "deactivated"), outputs)}
    _clear(ctx, rel)
    if regions:
        tables, criterion = _region_tables(ctx, data, atoms, slug)
    elif nc.test == "stimulus" and atoms is not None:
        tables, criterion = _stimulus_tables(ctx, data, group, atoms, atlases, slug)
    else:
        tables, criterion = _spatial_tables(ctx, data, group, atlases, slug)
    for part, out_rel in zip(("activated", "deactivated"), outputs):
        ctx.writer.write_table(out_rel, tables[part])
    ctx.writer.write_json(f"{rel}/test.json", criterion)
    ctx.summary.setdefault("networks", {})[slug] = criterion
    ctx.done(step)
    return tables


def _fdr_across_models(ctx: _Context, per_model: dict, baseline: bool = False) -> None:
    """q over atoms x networks x directions x every model of the run, per atlas.

    The networks step corrects each model alone (kept as ``q_model``); with
    ``networks.fdr_across_models`` (default) the models' p-values are corrected together,
    so the run's claims about all its models hold at the FDR level. Baselines keep
    their own family: they are corrected less strictly than the models, which can only
    make "model beats baseline" harder. The tables are rewritten and the networks steps
    stamped again with them (the correction is redone from the p-values on every run).
    """
    from ..networks.association import family_fdr

    nc = ctx.config.networks
    tested = {slug: res for slug, res in per_model.items()
              if res.get("tables") and all("effect_ok" in t.columns for t in res["tables"].values())}
    if not tested:
        return
    regions = all(set(t["atlas"].astype(str)) == {"regions"} for res in tested.values()
                  for t in res["tables"].values())
    units, per = ("regions", "") if regions else ("networks", ", per atlas")
    if nc.fdr_across_models and len(tested) > 1:
        family = f"atoms x {units} x both directions x models ({', '.join(tested)}){per}"
        corrected = family_fdr({slug: [res["tables"]["activated"], res["tables"]["deactivated"]]
                                for slug, res in tested.items()}, alpha=nc.alpha,
                               min_network_relative_effect=nc.min_network_relative_effect)
    else:
        family = (f"atoms x {units} x both directions{per}, "
                  + ("this baseline alone" if baseline else "each model alone" if len(tested) > 1 else "one model"))
        corrected = {slug: [t if "q_model" in t.columns else t.assign(q_model=t["q"])
                            for t in (res["tables"]["activated"], res["tables"]["deactivated"])]
                     for slug, res in tested.items()}
    for slug, (act, deact) in corrected.items():
        rel = f"networks/{slug}"
        tables = {"activated": act.assign(fdr_family=family), "deactivated": deact.assign(fdr_family=family)}
        for part, table in tables.items():
            ctx.writer.write_table(f"{rel}/association_{part}.csv", table)
        record = dict(ctx.summary.get("networks", {}).get(slug) or {})
        if record:
            record["fdr_family"] = family
            if nc.fdr_across_models and len(tested) > 1 and "of one atlas;" in record.get("criterion", ""):
                record["criterion"] = record["criterion"].replace(
                    "of one atlas;", f"of one atlas and every model of the run ({', '.join(tested)});", 1)
            ctx.writer.write_json(f"{rel}/test.json", record)
            ctx.summary["networks"][slug] = record
        ctx.done(rel)
        per_model[slug]["tables"] = tables


def _display_columns(maps, atlas, mask_img, part: str, nc) -> dict:
    """Descriptive overlap of the thresholded group map (display only, not tested)."""
    from ..networks.overlap import overlap_scores, threshold_atom_maps

    act, deact = threshold_atom_maps(maps, method="z" if nc.map_stat == "z" else "robust_z", value=nc.threshold)
    parts = act if part == "activated" else deact
    sign = 1.0 if part == "activated" else -1.0
    networks = atlas.masks()
    scores = overlap_scores(parts, networks, maps=sign * np.asarray(maps, np.float64),
                            network_maps=atlas.network_maps())
    return {"overlap_rate": scores["overlap_rate"].ravel(), "dice": scores["dice"].ravel(),
            "correlation": scores["correlation"].ravel(),
            "n_part_voxels": np.repeat(parts.sum(1), networks.shape[0]),
            "n_network_voxels": np.tile(networks.sum(1), parts.shape[0])}


def _stimulus_tables(ctx: _Context, data, group: dict, atoms: np.ndarray, atlases: dict, slug: str):
    import pandas as pd

    from ..networks.association import disjoint_networks, stimulus_association

    nc = ctx.config.networks
    names = [(a, n) for a, atlas in atlases.items() for n in atlas.network_names]
    networks = np.concatenate([disjoint_networks(atlas.maps, atlas.masks()) for atlas in atlases.values()])
    kwargs, confounds = _association_args(ctx, slug)
    atoms, fmri = _map_volumes(ctx, atoms, data, kwargs)
    table = stimulus_association(atoms, fmri, networks, network_names=[n for _, n in names],
                                 atlas_names=[a for a, _ in names], **kwargs)
    maps = group["z"] if nc.map_stat == "z" else group["coef"]
    tables = {}
    for part in ("activated", "deactivated"):
        frames = []
        for name, atlas in atlases.items():
            sub = table[(table["direction"] == part) & (table["atlas"] == name)].reset_index(drop=True)
            sub.insert(3, "part", part)
            for col, values in _display_columns(maps, atlas, data.mask_img, part, nc).items():
                sub[col] = values
            frames.append(sub)
        tables[part] = pd.concat(frames, ignore_index=True)
    criterion = _criterion_record(ctx, table, nc, confounds, "atoms x networks x both directions, per atlas and model")
    criterion.update({"networks": "disjoint (each voxel to its highest network)",
                      "display_threshold": {"map": nc.map_stat, "threshold": nc.threshold}})
    return tables, criterion


def _map_volumes(ctx: _Context, atoms: np.ndarray, data, kwargs: dict):
    """The atoms and fMRI the association test reads: with several stories, the volumes of
    encoding.map_stories, each run's drifts added to the confounds (``kwargs`` updated)."""
    if not ctx.config.multi_story:
        return atoms, data.data
    from ..encoding.stories import run_drift_basis

    rows, map_runs = _map_rows(ctx)
    drifts = run_drift_basis(map_runs, ctx.config.encoding.highpass_cutoff)
    conf = kwargs["confounds"]
    kwargs["confounds"] = drifts if conf is None else np.column_stack([conf[rows], drifts])
    kwargs["highpass_cutoff"] = None  # the drifts are in the confounds
    kwargs["runs"] = [int(r[1]) for r in map_runs]  # each story's phases drawn on their own
    return atoms[rows], [Y[rows] for Y in data.data]


def _association_args(ctx: _Context, slug: str) -> dict:
    """The stimulus test's options, shared by voxel and region data."""
    nc = ctx.config.networks
    ec = ctx.config.encoding
    confounds = _confounds(ctx, slug)
    return dict(tr=ctx.config.story.tr, confounds=None if confounds is None else confounds.to_numpy(np.float64),
                highpass_cutoff=ec.highpass_cutoff, null=nc.null,
                n_permutations=10_000 if nc.n_permutations is None else nc.n_permutations,
                n_refine=nc.n_refine, contribution=nc.contribution, network_score=nc.network_score, moved=nc.moved,
                min_effect=nc.min_effect, min_relative_effect=nc.min_relative_effect,
                min_network_relative_effect=nc.min_network_relative_effect,
                min_network_relative_marginal=nc.min_network_relative_marginal, group_effects=ec.group_effects, min_subjects_random=ec.min_subjects_random, alpha=nc.alpha,
                random_state=ctx.config.seed, progress=ctx.progress, cancel=ctx.cancel), confounds


def _criterion_record(ctx: _Context, table, nc, confounds, fdr_family: str) -> dict:
    record = {"test": table.attrs["test"], "criterion": table.attrs["criterion"],
              "n_permutations": table.attrs["n_permutations"], "n_refine": table.attrs.get("n_refine", 0),
              "null": table.attrs["null"],
              "group_effects": table.attrs["group_effects"], "contribution": table.attrs["contribution"],
              "network_score": nc.network_score, "moved": table.attrs["moved"], "fdr_family": fdr_family,
              "confounds": [] if confounds is None else list(confounds.columns)}
    if ctx.config.multi_story:
        record["stories"] = [r[0] for r in _map_rows(ctx)[1]]
        record["drifts"] = "per story run (constant, trend, cosines), with the confounds"
    return record


def _region_tables(ctx: _Context, data, atoms: np.ndarray, slug: str):
    """The stimulus test on region time series: every region is a network of its own.

    A region's series is its column, drifts and confounds removed and standardised, as
    a network's mean over standardised voxels is for voxel data; the null, the unique
    contribution, the group statistic and the FDR are the voxel test's.
    """
    from ..networks.association import stimulus_association

    nc = ctx.config.networks
    names = list(data.region_names or [f"region_{i}" for i in range(data.data[0].shape[1])])
    kwargs, confounds = _association_args(ctx, slug)
    atoms, fmri = _map_volumes(ctx, atoms, data, kwargs)
    table = stimulus_association(atoms, fmri, np.eye(len(names), dtype=bool), network_names=names,
                                 atlas_names=["regions"] * len(names), **kwargs)
    tables = {}
    for part in ("activated", "deactivated"):
        sub = table[table["direction"] == part].reset_index(drop=True)
        sub.insert(3, "part", part)
        tables[part] = sub
    criterion = _criterion_record(ctx, table, nc, confounds, "atoms x regions x both directions, per model")
    criterion["networks"] = "the regions of the region table (each its own network)"
    return tables, criterion


def _spatial_tables(ctx: _Context, data, group: dict, atlases: dict, slug: str):
    import pandas as pd

    from ..networks.overlap import associate_atoms

    nc = ctx.config.networks
    maps = group["z"] if nc.map_stat == "z" else group["coef"]
    n_perm = 500 if nc.n_permutations is None else nc.n_permutations
    tables = {}
    criterion = {}
    for part in ("activated", "deactivated"):
        frames = []
        for name, atlas in atlases.items():
            ctx.stage(f"networks {slug}", len(frames), len(atlases))
            df = associate_atoms(
                maps, atlas, data.mask_img, part=part, threshold_method="z" if nc.map_stat == "z" else "robust_z",
                threshold=nc.threshold, score=nc.score, n_permutations=n_perm, alpha=nc.alpha,
                min_score=nc.min_score, random_state=ctx.config.seed, progress=ctx.progress, cancel=ctx.cancel,
            )
            criterion = {"test": "spatial-shift", "criterion": df.attrs["criterion"], "n_permutations": n_perm}
            df.insert(0, "atlas", name)
            df["direction"] = part
            df["statistic"] = df[nc.score]
            df["test"] = "spatial-shift"
            frames.append(df)
        tables[part] = pd.concat(frames, ignore_index=True)
    return tables, criterion


def _write_atlas_display(ctx: _Context, name: str, atlas, mask_img) -> None:
    import pandas as pd

    ctx.writer.write_nifti(f"networks/atlas_{name}.nii.gz", atlas.label_image(mask_img))
    colors = np.asarray(atlas.colors, dtype=float)
    ctx.writer.write_table(f"networks/atlas_{name}.tsv", pd.DataFrame({
        "index": np.arange(1, len(atlas.network_names) + 1), "network": atlas.network_names,
        "r": colors[:, 0], "g": colors[:, 1], "b": colors[:, 2], "a": colors[:, 3],
    }))


def _annotate_atoms_table(ctx: _Context, slug: str, tables: dict, codes, index, atoms) -> None:
    """Write atoms.tsv: each atom's ANs and layers, and its associated networks (explorer).

    Rebuilt from the codes on every run, so it always matches this run's atoms and tables.
    """
    import pandas as pd

    from ..sparse.atoms import atoms_table

    table = atoms_table(codes, index)
    if ctx.confounds is not None and "word_rate" in ctx.confounds:
        table["r_word_rate"] = _correlations(atoms, ctx.confounds["word_rate"].to_numpy())
    info_path = ctx.out / f"atoms/{slug}/dictionary.json"
    per_atom = (json.loads(info_path.read_text()).get("reproducibility") or {}).get("per_atom") \
        if info_path.exists() else None
    if per_atom is not None and len(per_atom) == len(table):
        table["reproducibility"] = per_atom
    if not tables:
        ctx.writer.write_table(f"atoms/{slug}/atoms.tsv", table)
        return
    score = ctx.config.networks.score
    for part, df in tables.items():
        shown = "statistic" if "statistic" in df.columns else score
        assoc = df[df["associated"].astype(bool)]
        names = assoc.groupby("atom").apply(
            lambda g: "; ".join(f"{a}:{n} ({s:.2f})" for a, n, s in zip(g["atlas"], g["network"], g[shown])),
            include_groups=False,
        ) if len(assoc) else pd.Series(dtype=str)
        names = names.to_dict()
        table[f"networks_{part}"] = [names.get(a, "") for a in table["atom"]]
    best = pd.concat([d.assign(part=p) for p, d in tables.items()])
    if score in best.columns:  # region tables have no thresholded-map overlap
        table["best_score"] = table["atom"].map(best.groupby("atom")[score].max()).fillna(0.0)
    ctx.writer.write_table(f"atoms/{slug}/atoms.tsv", table)


def _step_report(ctx: _Context, per_model: dict, truth: dict | None) -> None:
    import pandas as pd

    from ..analyses import figures as figs

    w = ctx.writer
    summary_models = {}
    for slug, res in per_model.items():
        group = res["group"]
        if res.get("baseline"):  # pseudo-models: numbers in the summary and tables, no figures
            r2 = group.get("r2_cv", group.get("r2_sparse"))
            ctx.summary.setdefault("baseline_results", {})[slug] = {
                "baseline": res["baseline"], "source": res["model"], "n_atoms": int(res["atoms"].shape[1]),
                "r2_median": float(np.median(r2)) if r2 is not None else None,
                "n_associations": {p: int(t["associated"].astype(bool).sum()) for p, t in res["tables"].items()},
                **_chance_summary(group)}
            continue
        hist_df = pd.read_csv(ctx.out / f"atoms/{slug}/layer_hist.tsv", sep="\t").set_index("atom")
        w.write_figure(f"figures/{slug}_layer_histograms.png", figs.layer_histogram_figure(hist_df))
        w.write_figure(f"figures/{slug}_atom_correlation.png", figs.atom_correlation_figure(res["atoms"]))
        for part, table in res["tables"].items():
            for atlas in table["atlas"].unique():
                sub = table[table["atlas"] == atlas]
                value = _tested_value(sub, ctx.config)
                w.write_figure(f"figures/{slug}_{atlas}_{part}_association.png",
                               figs.association_heatmap_figure(sub, value=value, signed=value == "statistic"))
        r2_name = "r2_cv" if "r2_cv" in group else "r2_sparse"
        r2_img = ctx.out / f"encoding/{slug}/{r2_name}.nii.gz"
        if r2_img.exists():  # voxel data (region time series have a table instead)
            w.write_figure(f"figures/{slug}_{r2_name}.png", figs.r2_glass_figure(str(r2_img)))
        r2 = group.get(r2_name)
        summary_models[slug] = {
            "n_ans": int(res["n_ans"]), "n_atoms": int(res["atoms"].shape[1]),
            "r2_kind": r2_name,
            "r2_median": float(np.median(r2)) if r2 is not None else None,
            "r2_p95": float(np.percentile(r2, 95)) if r2 is not None else None,
            "n_associations": {p: int(t["associated"].astype(bool).sum()) for p, t in res["tables"].items()},
        }
        summary_models[slug].update(_chance_summary(group))
        if "r2_loso_stories" in group:  # several stories: the ridge trained on the others, per held-out story
            summary_models[slug]["r2_loso"] = {
                "median": float(np.median(group["r2_loso"])), "p95": float(np.percentile(group["r2_loso"], 95)),
                "per_story_median": {r[0]: float(np.median(v)) for r, v in zip(_runs(ctx.config),
                                                                                group["r2_loso_stories"])},
                "per_story_p95": {r[0]: float(np.percentile(v, 95)) for r, v in zip(_runs(ctx.config),
                                                                                 group["r2_loso_stories"])},
                "r_median": float(np.median(group["r_loso"]))}
        dict_path = ctx.out / f"atoms/{slug}/dictionary.json"
        if dict_path.exists():
            info = json.loads(dict_path.read_text())
            rep = info.get("reproducibility") or {}
            summary_models[slug]["atoms"] = {
                "init": info.get("init"), "orient": info.get("orient"), "n_flipped": info.get("n_flipped"),
                "fraction_reproduced": rep.get("mean_fraction_reproduced"),
                "reproduced_at": rep.get("threshold"), "n_restarts": rep.get("n_restarts", 0),
                "size_control": info.get("size_control")}
    ctx.summary["results"] = summary_models
    _compare_models(ctx, per_model)
    if truth is not None:
        _score_recovery(ctx, per_model, truth)


def _score_recovery(ctx: _Context, per_model: dict, truth: dict) -> None:
    """recovery.json: every declaration of the driving model scored against the planted truth."""
    import pandas as pd

    from ..analyses.recovery import MIN_CORRELATION, match_atoms, recovery_scores, source_constituents

    slug = ctx.summary["fmri"]["driving_model"]
    tables = per_model[slug]["tables"]
    if not tables:
        return
    sources = np.load(ctx.out / "simulated" / truth["files"]["planted_sources"])
    planted = sorted(int(s) for s in truth["sources"]["planted"])
    if planted:
        _, match = match_atoms(sources[:, planted], per_model[slug]["atoms"], min_correlation=MIN_CORRELATION)
        match["planted"] = [planted[i] for i in match["planted"]]
    else:  # a null simulation: every declaration is false
        match = pd.DataFrame(columns=["planted", "learned", "correlation", "sign", "matched", "best_other"])
    rec = recovery_scores(truth["expected_links"], tables, match, min_correlation=MIN_CORRELATION,
                          partial_links=truth.get("network_shares"))
    if planted:
        # the constituent reading: sources as combinations of the learned atoms, with the
        # drifts and confounds the association test removes (analyses.recovery)
        from ..encoding.preprocessing import drift_basis

        nuisance = [drift_basis(sources.shape[0], ctx.config.story.tr, ctx.config.encoding.highpass_cutoff)]
        confounds = _confounds(ctx, slug)
        if confounds is not None:
            nuisance.append(confounds.to_numpy())
        cons = source_constituents(sources[:, planted], per_model[slug]["atoms"], nuisance=np.column_stack(nuisance))
        cons["planted"] = [planted[i] for i in cons["planted"]]
        alt = recovery_scores(truth["expected_links"], tables, match, partial_links=truth.get("network_shares"),
                              constituents=cons)
        rec["constituents"] = {k: alt[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn", "fp_partial",
                                                   "by_atlas", "by_direction", "details", "criterion")}
        rec["constituents"]["betas"] = [{"source": int(r.planted), "atom": int(r.learned), "beta": round(float(r.beta), 4)}
                                        for r in cons[cons["constituent"]].itertuples(index=False)]
    rec.update({"simulated": True, "driving_model": slug, "sources": truth["sources"].get("kind"),
                "atlases": sorted(rec["by_atlas"]),
                "declaration_rule": _declaration_rule(ctx, slug),
                "expected_rule": truth.get("expected_rule")})
    ctx.writer.write_json("recovery.json", rec)
    ctx.summary["recovery"] = {k: rec[k] for k in ("precision", "recall", "tp", "fp", "fn", "fp_partial", "n_tests")}
    if "constituents" in rec:
        ctx.summary["recovery"]["constituents"] = {k: rec["constituents"][k]
                                                   for k in ("precision", "recall", "tp", "fp", "fn")}


def _tested_value(table, config) -> str:
    """The column the association test scored (``statistic``), else the display score."""
    if "statistic" in table.columns and table["statistic"].notna().any():
        return "statistic"
    return config.networks.score


def _declaration_rule(ctx: _Context, slug: str) -> str:
    """How a link was declared, as the networks step recorded it in ``test.json``."""
    path = ctx.out / f"networks/{slug}/test.json"
    if path.exists():
        recorded = json.loads(path.read_text())
        if recorded.get("criterion"):
            return f"{recorded.get('test', '')}: {recorded['criterion']}".strip(": ")
    return (f"q < {ctx.config.networks.alpha} (BH-FDR over atom x network tests) and "
            f"{ctx.config.networks.score} >= {ctx.config.networks.min_score}")


def _compare_baselines(ctx: _Context, models: dict, baselines: dict) -> None:
    """Each model against each baseline through the same tests: per-subject median
    held-out r (and the paper's in-sample R2) of the model minus the baseline's, with a
    one-sided exact sign-flip p over subjects; association counts side by side.
    -> comparison/baselines.csv and summary.json["baseline_comparison"]."""
    import itertools

    import pandas as pd

    rows = []
    for (m, res), (b, base) in itertools.product(models.items(), baselines.items()):
        for metric, key in (("median r_cv", "subject_r_cv"), ("median r2_sparse", "subject_r2_sparse")):
            if key not in res["group"] or key not in base["group"]:
                continue
            mv = np.median(res["group"][key], axis=1).astype(np.float64)
            bv = np.median(base["group"][key], axis=1).astype(np.float64)
            diff = mv - bv
            n = diff.size
            # exact sign flips over subjects (one-sided: the model beats the baseline); a
            # draw equal to the observed mean up to rounding counts as reaching it
            tol = 1e-9 * max(1.0, float(np.abs(diff).max(initial=0.0)))
            if n <= 16:  # every pattern, the observed one included: p >= 2**-n
                null = (np.array(list(itertools.product([1.0, -1.0], repeat=n))) * diff).mean(1)
                p = float(np.mean(null >= diff.mean() - tol))
            else:
                signs = np.random.default_rng(ctx.config.seed).choice([1.0, -1.0], size=(10000, n))
                p = float((1 + np.sum((signs * diff).mean(1) >= diff.mean() - tol)) / 10001)
            rows.append({"model": m, "baseline": b, "baseline_kind": base.get("baseline"), "metric": metric,
                         "model_value": float(mv.mean()), "baseline_value": float(bv.mean()),
                         "difference": float(diff.mean()), "p": p, "n_subjects": int(n),
                         "test": "exact sign-flip over subjects, one-sided" if n <= 16 else
                                 "sign-flip over subjects (10,000 draws), one-sided",
                         "model_associations": int(sum(t["associated"].astype(bool).sum()
                                                       for t in res["tables"].values())) if res["tables"] else None,
                         "baseline_associations": int(sum(t["associated"].astype(bool).sum()
                                                          for t in base["tables"].values())) if base["tables"] else None})
    if not rows:
        return
    table = pd.DataFrame(rows)
    ctx.writer.write_table("comparison/baselines.csv", table)
    ctx.summary["baseline_comparison"] = [
        {**r, "reads": f"{r['model']} vs {r['baseline']} on {r['metric']}: {r['model_value']:.4f} vs "
                       f"{r['baseline_value']:.4f}, the model ahead by {r['difference']:+.4f} "
                       f"(p = {r['p']:.3g}, {r['test']}, {r['n_subjects']} subjects)"} for r in rows]


def _chance_summary(group: dict) -> dict:
    """Scores beside their chance levels and the noise ceiling, for summary.json."""
    out: dict[str, Any] = {}
    if "r2_sparse" in group:
        r2 = group["r2_sparse"]
        entry = {"median": float(np.median(r2)), "p95": float(np.percentile(r2, 95)),
                 "kind": "in-sample R2 of the paper's sparse fit (group mean)"}
        if "r2_sparse_null_map_median" in group:
            med, p95 = group["r2_sparse_null_map_median"], group["r2_sparse_null_map_p95"]
            entry.update({
                "null": "circular shifts of the atoms, the same for every subject, sparse model refit",
                "n_shifts": int(med.size),
                "null_median": float(np.median(med)), "null_median_95th": float(np.percentile(med, 95)),
                "null_p95": float(np.median(p95)),
                "p_map_median": float((1 + (med >= entry["median"]).sum()) / (1 + med.size)),
                "fraction_voxels_p05": float(np.mean(group["r2_sparse_p"] <= 0.05)),
            })
        out["r2_sparse"] = entry
    if "noise_ceiling" in group:
        out["noise_ceiling"] = {
            "estimator": "split-half ISC with Spearman-Brown, ceiling of one subject's r (sqrt of the "
                         "single-subject reliability), mean over random splits",
            "median": float(np.median(group["noise_ceiling"])),
            "p95": float(np.percentile(group["noise_ceiling"], 95)),
            "isc_loo_median": float(np.median(group["isc_loo"])) if "isc_loo" in group else None,
        }
    if "r_cv" in group:
        out["r_cv_median"] = float(np.median(group["r_cv"]))
    if "subject_r_cv" in group:
        per_subject = np.median(group["subject_r_cv"], axis=1)  # each subject's median over voxels
        mean, lo, hi = _subject_ci(per_subject[:, None])
        out["r_cv_subjects"] = {"per_subject_median": [float(v) for v in per_subject], "mean": float(mean[0]),
                                "ci95": [float(lo[0]), float(hi[0])], "n_subjects": int(per_subject.size),
                                "ci": "t interval over subjects of each subject's median r over voxels/regions"}
    return out


def _encoding_scheme(ctx: _Context) -> dict:
    """How encoding was scored (summary.json and provenance.json)."""
    cfg = ctx.config
    ec = cfg.encoding
    stories = [r[0] for r in ctx.runs]
    out = {"contiguous_folds": {"n_folds": ec.n_folds, "gap": ec.gap,
                                "over": "the stories' volumes one after another" if len(stories) > 1 else "the story"},
           "stories": stories,
           "dictionary_stories": list(cfg.atoms.stories) if cfg.atoms.stories else stories,
           "map_stories": list(ec.map_stories) if ec.map_stories else stories}
    if len(stories) > 1:
        out["drifts"] = "per story run: constant, trend and cosine high-pass with the run's TR; confounds per story"
        from ..encoding.stories import loso_scheme

        out["leave_one_story_out"] = (loso_scheme(ctx.runs, ec.delays, ec.highpass_cutoff, gap=ec.gap)
                                      if ec.leave_one_story_out and "ridge" in ec.models else None)
    return out


def _headlines(ctx: _Context, kind: str) -> list[str]:
    """One line per model: held-out r with its CI over subjects, the paper's R2 beside its
    chance level, the noise ceiling, and the baselines."""
    unit = "regions" if kind == "regions" else "voxels"
    lines = []
    for slug, info in ctx.summary.get("results", {}).items():
        parts = [slug + ":"]
        rs = info.get("r_cv_subjects")
        if rs:
            ci = "" if np.isnan(rs["ci95"][0]) else f" [95% CI {rs['ci95'][0]:.3f}, {rs['ci95'][1]:.3f}]"
            parts.append(f"held-out r {rs['mean']:.3f}{ci} over {rs['n_subjects']} subjects (median over {unit})")
        r2 = info.get("r2_sparse")
        if r2 and "null_median" in r2:
            parts.append(f"paper's in-sample R2 {r2['median']:.3f} vs {r2['null_median']:.3f} by chance "
                         f"(shift null, 95th pct of the map median {r2['null_median_95th']:.3f})")
        nc = info.get("noise_ceiling")
        if nc:
            parts.append(f"noise ceiling r {nc['median']:.3f}")
        for row in ctx.summary.get("baseline_comparison", []):
            if row["model"] == slug and row["metric"] == "median r_cv":
                parts.append(f"vs {row['baseline']} {row['difference']:+.3f} (p = {row['p']:.2g})")
        lines.append("; ".join([parts[0] + " " + parts[1]] + parts[2:]) if len(parts) > 1 else parts[0])
    return lines


def _compare_models(ctx: _Context, per_model: dict) -> None:
    """METHOD section 5 side by side: FBN coverage, temporal consistency of the atoms linked
    to one network (with the number of atoms and a size-matched null), diversity, R2."""
    from ..analyses import figures as figs
    from ..analyses.comparison import compare_models

    if not all(res["tables"] for res in per_model.values()):
        return
    atoms = {slug: res["atoms"] for slug, res in per_model.items()}
    tables = {}
    for slug, res in per_model.items():
        t = res["tables"]["activated"].copy()
        t["network"] = t["atlas"].astype(str) + ":" + t["network"].astype(str)
        tables[slug] = t
    r2 = {slug: res["group"].get("r2_cv", res["group"].get("r2_sparse")) for slug, res in per_model.items()}
    out = compare_models(atoms, tables, r2_by_model=r2, n_null=500, random_state=ctx.config.seed,
                         cancel=ctx.cancel)
    for name, table in out.items():
        ctx.writer.write_table(f"comparison/{name}.csv", table.reset_index())
    ctx.writer.write_figure("figures/models_comparison.png",
                            figs.model_comparison_figure(out["coverage"], out["summary"]))
    ctx.summary["comparison"] = json.loads(out["summary"].to_json(orient="index"))


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("numpy", "scipy", "scikit-learn", "nibabel", "nilearn", "torch", "transformers", "pandas"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _planting(ctx: _Context, slug: str, ans, atoms, codes) -> dict:
    """What the simulation builds its sources from: the ANs the atoms were learned on."""
    columns = np.load(ctx.out / f"atoms/{slug}/columns.npy")
    return {"slug": slug, "atoms": np.asarray(atoms, np.float64), "codes": codes,
            "responses": np.asarray(ans.responses[:, columns])}


# ---------------------------------------------------------------------------- tasks
# Functions a worker runs (see .tasks): they take the configuration, the folder and the
# arrays, write their artifacts and return names; the run that submitted them holds the
# folder's lock and reads the artifacts back through the same cached steps.
def _task_context(config: PipelineConfig, out: str, keys: dict | None = None) -> _Context:
    return _Context(config, ResultWriter(out), None, None, keys=dict(keys or {}))


def _model_task(config: PipelineConfig, out: str, model: str, story_key: str, words, runs) -> str:
    """Features, atoms and top words of one model -> their folders (``words`` and ``runs``:
    the story step's, one entry per story)."""
    ctx = _task_context(config, out, {"story": story_key})
    ctx.runs = list(runs)
    slug = model_slug(model)
    ans = _step_features(ctx, words, model)
    _, codes, index = _step_atoms(ctx, ans, slug)
    step_top_words(ctx, words, model, slug, codes, index)
    return slug


def _subject_task(config: PipelineConfig, out: str, task: SubjectTask, Y, atoms, confounds, an) -> str:
    """One model x subject encoding -> ``encoding/<model>/subjects/<subject>.npz``."""
    encode_subject(_task_context(config, out), task, Y, atoms, confounds, None if an is None else tuple(an))
    return task.artifact


def _networks_task(config: PipelineConfig, out: str, slug: str, encoding_key: str, runs, confounds, data, group,
                   atoms) -> str:
    """One model's association tables -> ``networks/<model>/`` (its group maps given)."""
    ctx = _task_context(config, out, {f"encoding/{slug}": encoding_key})
    ctx.runs, ctx.confounds = list(runs), confounds
    _step_networks(ctx, data, group, slug, atoms)
    return slug


def _networks_tasks(ctx: _Context, executor, data, per_model: dict) -> None:
    """Every model's network step on ``executor`` (the run reads the tables back)."""
    shared = executor.scatter(data)  # every subject's fMRI, sent once
    executor.map(_networks_task, [(ctx.config, str(ctx.out), slug, ctx.keys[f"encoding/{slug}"], ctx.runs,
                                   ctx.confounds, shared, executor.scatter(res["group"]), res["atoms"])
                                  for slug, res in per_model.items()],
                 stage="networks (model tasks)", progress=ctx.progress, cancel=ctx.cancel)


def _subject_lock(out: Path, subject: str):
    """The lock a part of a run split by subjects holds while it encodes ``subject``."""
    from filelock import FileLock

    return FileLock(str(out / f".napari-brainorg.subject-{subject_file_name(subject)}.lock"), timeout=0)


def _encoding_tasks(ctx: _Context, executor, data, per_model: dict, subjects: list[str] | None, merge: bool,
                    release=None) -> list[Path]:
    """The encoding tasks (model x subject) whose artifacts are missing, run on ``executor``.

    ``subjects`` (a part of a split run): only theirs, after giving the folder's lock back
    (``release``), each subject under its own lock. ``merge``: none; a subject still
    locked by a part, or without its artifact, is an error naming it.
    """
    from filelock import Timeout

    from ..errors import IncompleteResultError

    if subjects is not None:
        unknown = [s for s in subjects if s not in data.subjects]
        if unknown:
            raise ConfigError(f"--subjects: {unknown} are not subjects of this study; expected some of "
                              f"{data.subjects}.")
    todo = []
    for slug, res in per_model.items():
        if subjects is None and ctx.cached(f"encoding/{slug}", _encoding_key_parts(ctx, slug),
                                           _encoding_outputs(slug, data.kind)):
            continue
        for task, Y in zip(_subject_tasks(ctx, data, slug, warn=False), data.data):
            if subjects is not None and task.subject not in subjects:
                continue
            if not ctx.cached(task.step, [task.key], [task.artifact]):
                todo.append((slug, task, Y))
    if merge:
        busy = []
        for subject in data.subjects:
            lock = _subject_lock(ctx.out, subject)
            try:
                lock.acquire()
                lock.release()
            except Timeout:
                busy.append(subject)
        if busy:
            raise FolderInUseError(f"merge: subjects {busy} are still being encoded by another part of the run "
                                   f"in {str(ctx.out)!r}; merge once those runs have finished.")
        if todo:
            missing = sorted({f"{task.subject} ({slug})" for slug, task, _ in todo})
            raise IncompleteResultError(
                f"merge: {len(missing)} subject encodings are missing or out of date in {str(ctx.out)!r}: "
                f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}; run `brainorg run CONFIG "
                "--subjects ...` for them with this configuration first.")
        return []
    locks = []
    if subjects is not None:
        if release is not None:
            release()  # the other parts may now run (or reuse) the shared steps
        for subject in subjects:
            lock = _subject_lock(ctx.out, subject)
            try:
                lock.acquire()
            except Timeout:
                for held in locks:
                    held.release()
                raise FolderInUseError(f"subject {subject!r} of {str(ctx.out)!r} is being encoded by another "
                                       "run; give each part of a split run other subjects.") from None
            locks.append(lock)
    try:
        _run_encoding_tasks(ctx, executor, per_model, todo)
    finally:
        for lock in locks:
            lock.release()
    return [ctx.out / task.artifact for slug in per_model
            for task in _subject_tasks(ctx, data, slug, warn=False)
            if subjects is None or task.subject in subjects]


def _run_encoding_tasks(ctx: _Context, executor, per_model: dict, todo: list) -> None:
    stage = "encoding (subject tasks)"
    confounds = {slug: _encoding_confounds(ctx, slug) for slug in {slug for slug, _, _ in todo}}
    if executor is None or executor.name == "sequential":
        for i, (slug, task, Y) in enumerate(todo):
            ctx.stage(stage, i, len(todo))
            res = per_model[slug]
            encode_subject(ctx, task, Y, res["atoms"], confounds[slug], res.get("an"))
        ctx.stage(stage, len(todo), len(todo))
        return
    # large arrays go to the workers once, not once per task
    shared: dict[Any, Any] = {}

    def sent(key, value):
        if value is None:
            return None
        if key not in shared:
            shared[key] = executor.scatter(value)
        return shared[key]

    arguments = []
    for slug, task, Y in todo:
        res = per_model[slug]
        an = res.get("an")
        arguments.append((ctx.config, str(ctx.out), task, sent(("Y", task.subject), Y),
                          sent(("atoms", slug), np.asarray(res["atoms"])), sent(("confounds", slug), confounds[slug]),
                          None if an is None else [sent(("an", slug, i), a) for i, a in enumerate(an)]))
    executor.map(_subject_task, arguments, stage=stage, progress=ctx.progress, cancel=ctx.cancel)


# ---------------------------------------------------------------------------- entry
def run_pipeline(config: PipelineConfig, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None, *, jobs: int | None = None, scheduler: str | None = None,
                 merge: bool = False) -> ResultFolder:
    """Run every step of ``config`` and return the result folder.

    The warnings the run raises are shown as usual and kept in ``warnings.json``; the
    maps are also written with BIDS-derivatives names (``maps/``), the folder is
    described for BIDS (``dataset_description.json``) and, once the folder is complete,
    the HTML report (``report.html``) is written from it.

    Parameters
    ----------
    config : PipelineConfig
    progress : callable ``progress(stage, done, total)``, optional
    cancel : object with ``is_set()`` (a ``threading.Event``), optional
        When set, the run stops at the next checkpoint with ``CancelledError``;
        files already written are complete (atomic) and reused by the next run.
    jobs : int, optional
        Run the tasks (features and atoms per model, encoding per model x subject) on a
        local Dask cluster of ``jobs`` workers (:mod:`.tasks`); default: in this process.
    scheduler : str, optional
        Run them on an existing Dask cluster (scheduler address or scheduler file).
    merge : bool
        Use only subjects already encoded by :func:`run_subjects` (a run split by
        subjects): a subject without its artifact is an error instead of being computed.
    """
    return _run_steps(config, progress, cancel, jobs=jobs, scheduler=scheduler, merge=merge)


def run_subjects(config: PipelineConfig, subjects, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None, *, jobs: int | None = None,
                 scheduler: str | None = None) -> list[Path]:
    """One part of a run split by subjects: the shared steps and these subjects' encoding.

    Several such runs (separate jobs, on other machines) may share ``config.out``: each
    waits for the folder's lock only while it runs (or reuses) the shared steps (story,
    features, atoms, simulation), then releases it and encodes its subjects under one
    lock per subject. ``run_pipeline(config, merge=True)`` (``brainorg merge``) then makes
    the group maps, tables and report from the files: the same as one run.

    Parameters
    ----------
    config : PipelineConfig
        The same configuration for every part and the merge (it keys the artifacts).
    subjects : list of str
        Subjects of the study (as in ``summary.json``'s ``fmri.subjects``, e.g. ``sub-01``).

    Returns
    -------
    list of Path
        The subjects' artifacts, ``OUT/encoding/<model>/subjects/<subject>.npz``.
    """
    subjects = [str(s) for s in subjects]
    if not subjects:
        raise ConfigError("'subjects' is empty; give at least one subject to encode.")
    return _run_steps(config, progress, cancel, jobs=jobs, scheduler=scheduler, subjects=subjects)


def _describe_outputs(ctx: _Context, caught: list[dict]) -> None:
    """Self-describing outputs: BIDS-named maps with sidecars, warnings, dataset description."""
    from .derivatives import write_statmaps

    for model in ctx.config.features.models:
        write_statmaps(ctx.writer, ctx.config, model_slug(model), model)
    ctx.writer.write_json(WARNINGS, caught)
    ctx.writer.write_json(DATASET_DESCRIPTION, dataset_description(ctx.config))


def dataset_description(config: PipelineConfig) -> dict:
    """The BIDS-derivatives ``dataset_description.json`` of a run's result folder."""
    fmri = config.fmri
    desc = {
        "Name": f"napari-brainorg: atoms of {', '.join(config.features.models)} and their brain maps"
                f" ({'SIMULATED fMRI' if fmri.simulate is not None else 'fMRI'}, story {Path(config.story.path).name})",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": "napari-brainorg",
            "Version": __version__,
            "Description": "Sparse dictionary atoms of language-model artificial neurons, voxel-wise "
                           "encoding of fMRI and atom-network associations (Sun et al. 2024, arXiv:2410.19542).",
        }],
        "HowToAcknowledge": "Cite Sun et al. (2024) arXiv:2410.19542 and the atlases used "
                            "(see report.html, Methods).",
    }
    if fmri.bids is not None:
        desc["SourceDatasets"] = [{"URL": Path(fmri.bids.root).resolve().as_uri()}]
    if fmri.simulate is not None:
        desc["SourceDatasets"] = [{"URL": "simulated/"}]
    return desc


def _run_steps(config: PipelineConfig, progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None, *, jobs: int | None = None, scheduler: str | None = None,
               subjects: list[str] | None = None, merge: bool = False):
    """Every step of ``config``, in order; the parameters are :func:`run_pipeline`'s."""
    validate_config(config)  # before the folder is touched: a bad input changes nothing
    writer = ResultWriter(config.out)
    from ..report import record_warnings, write_report
    from .tasks import make_executor

    _log.info("run: %s -> %s", ", ".join(config.features.models), config.out)
    # a part of a split run waits for the folder while another part runs the shared steps
    lock = RunLock(writer.path, timeout=-1 if subjects is not None else 0)
    executor = make_executor(jobs=jobs, scheduler=scheduler)
    try:
        with lock:
            with record_warnings() as caught:
                result = _run_locked(config, writer, progress, cancel, caught, executor=executor,
                                     subjects=subjects, merge=merge, release=lock.release)
            if subjects is not None:
                return result
            # a view of the finished folder (`brainorg report DIR` rebuilds it)
            _log.info("report: %s (%d warning(s) recorded)", write_report(result), len(caught))
            return result
    finally:
        executor.close()


def _run_locked(config: PipelineConfig, writer: ResultWriter, progress, cancel,
                caught: list[dict] | None = None, *, executor=None, subjects: list[str] | None = None,
                merge: bool = False, release=None):
    ctx = _Context(config, writer, progress, cancel)
    distributed = executor is not None and executor.name != "sequential"
    t0 = time.perf_counter()
    data = truth = None
    if config.fmri.simulate is None:
        # the user's fMRI is read (and checked: NaN, damaged files...) before any model
        # runs and before anything of an earlier result is touched
        t = time.perf_counter()
        data, truth = _step_fmri(ctx, None)
        ctx.timings["fmri"] = time.perf_counter() - t
    _start_run(ctx)
    writer.write_text("config.yaml", config_to_yaml(config))

    def timed(name, fn, *a):
        t = time.perf_counter()
        _log.debug("step %s: start", name)
        out = fn(*a)
        ctx.timings[name] = ctx.timings.get(name, 0.0) + time.perf_counter() - t
        _log.info("step %s: done in %.1f s", name, time.perf_counter() - t)
        return out

    words = timed("story", _step_story, ctx)
    per_model: dict[str, dict] = {}
    driving = _driving_model(config) if config.fmri.simulate is not None else None
    planting = None
    if distributed and len(config.features.models) > 1:
        # each model's features, atoms and top words on a worker; the loop below reads them back
        timed("tasks: models", lambda: executor.map(
            _model_task, [(config, str(writer.path), m, ctx.keys["story"], words, ctx.runs)
                          for m in config.features.models],
            stage="features and atoms (model tasks)", progress=progress, cancel=cancel))
    for model in config.features.models:
        slug = model_slug(model)
        ans = timed("features", _step_features, ctx, words, model)
        check_cancel(cancel)
        atoms, codes, index = timed("atoms", _step_atoms, ctx, ans, slug)
        timed("top words", step_top_words, ctx, words, model, slug, codes, index)
        if slug == driving:
            planting = _planting(ctx, slug, ans, atoms, codes)
        per_model[slug] = {"model": model, "atoms": atoms, "codes": codes, "index": index,
                           "n_ans": ans.responses.shape[1], "dropped": len(ans.dropped),
                           "an": (ans.responses, ans.index["layer"].to_numpy()) if config.encoding.baseline else None}
    check_cancel(cancel)
    if data is None:
        data, truth = timed("fmri", _step_fmri, ctx, planting)
    baselines = timed("baselines", _step_baselines, ctx, words, per_model)
    n_real = len(per_model)
    per_model.update(baselines)
    if distributed or subjects is not None or merge:
        written = timed("tasks: encoding", _encoding_tasks, ctx, executor, data, per_model, subjects, merge,
                        release)
        if subjects is not None:
            return written
    if distributed and data.kind == "voxels" and len(per_model) > 1:
        # every model's group maps first, then each model's network tests on a worker
        for slug, res in per_model.items():
            res["group"] = timed("encoding", _step_encoding, ctx, data, res["atoms"], slug, res.get("an"))
        timed("tasks: networks", _networks_tasks, ctx, executor, data, per_model)
    for slug, res in per_model.items():
        if "group" not in res:
            res["group"] = timed("encoding", _step_encoding, ctx, data, res["atoms"], slug, res.get("an"))
        res["tables"] = timed("networks", _step_networks, ctx, data, res["group"], slug, res["atoms"])
    _fdr_across_models(ctx, dict(list(per_model.items())[:n_real]))
    for slug in list(per_model)[n_real:]:  # each baseline corrected alone
        _fdr_across_models(ctx, {slug: per_model[slug]}, baseline=True)
    for slug, res in per_model.items():
        _annotate_atoms_table(ctx, slug, res["tables"], res["codes"], res["index"], res["atoms"])
    timed("report", _step_report, ctx, per_model, truth)
    if baselines:
        _compare_baselines(ctx, dict(list(per_model.items())[:n_real]), baselines)
    _region_results(ctx, data, per_model, baselines)
    ctx.summary["headline"] = _headlines(ctx, data.kind)
    ctx.summary["encoding_scheme"] = _encoding_scheme(ctx)

    ctx.summary.update({
        "napari_brainorg": __version__,
        "models": list(per_model)[:n_real],
        "model_sources": {s: r["model"] for s, r in list(per_model.items())[:n_real]},
        "baselines": {s: r["model"] for s, r in baselines.items()},
        "tr": config.story.tr, "n_volumes": sum(r[1] for r in ctx.runs) or config.story.n_volumes,
        "simulated": bool(truth is not None),
        "atlases": [atlas_slug(a) for a in config.networks.atlases],
        "template": None,
        "timings_s": {k: round(v, 2) for k, v in ctx.timings.items()},
        "wall_time_s": round(time.perf_counter() - t0, 2),
    })
    writer.write_json("provenance.json", {"config": config.model_dump(mode="json"), "versions": _versions(),
                                          "inputs": ctx.inputs, "cache_keys": ctx.keys, "seed": config.seed,
                                          "stories": [{"story": n, "n_volumes": v, "tr": t} for n, v, t in ctx.runs],
                                          "encoding_scheme": _encoding_scheme(ctx),
                                          "execution": {**(executor.describe() if executor is not None
                                                           else {"executor": "sequential"}), "merge": merge},
                                          "input_identity": _IDENTITY_DOC})
    _describe_outputs(ctx, list(caught or []))
    writer.write_json(SUMMARY, ctx.summary)  # last: a folder without it is incomplete
    return ResultFolder(writer.path)


_IDENTITY_DOC = (
    "sha256 of the whole file up to 256 MiB; larger files: size, modification time (ns) and "
    "sha256 of 16 evenly spaced 1 MiB blocks")


def _config_inputs(config: PipelineConfig) -> list[Path]:
    """Every file or folder the configuration reads (never cleared from ``out``)."""
    from .validate import story_runs

    c = config
    runs = [p for key in ("images", "regions") for files in story_runs(c, key).values() for p in files]
    paths = [*[p for s in c.story_list for p in (s.path, s.events)], *runs, c.fmri.mask,
             *c.networks.atlases, *c.features.models]
    if c.fmri.bids is not None:
        paths.append(c.fmri.bids.root)
    return [Path(str(p)).expanduser().resolve() for p in paths if p]


def _start_run(ctx: _Context) -> None:
    """Mark the folder incomplete and clear what belongs to an earlier run and not to this one.

    ``summary.json`` goes first (written again last). Figures, model comparison and
    recovery are always rebuilt; folders of models, atlases or simulated subjects that
    this configuration does not have are removed. A path the configuration reads is
    never removed.
    """
    cfg = ctx.config
    out = ctx.out
    (out / SUMMARY).unlink(missing_ok=True)
    slugs = {model_slug(m) for m in cfg.features.models} | set(baseline_slugs(cfg).values())
    stale = [out / "figures", out / "comparison", out / "recovery.json"]
    for top in ("features", "atoms", "encoding", "networks"):
        for child in sorted((out / top).glob("*")):
            if child.is_dir() and child.name not in slugs:
                stale += [child, out / ".cache" / top / f"{child.name}.json"]
    # BIDS maps (maps/group, maps/sub-XX): those of a model this configuration does not run
    from ..io.results import statmap_model_label

    labels = {statmap_model_label(slug) for slug in slugs}
    for path in sorted((out / "maps").glob("*/*_statmap.*")):
        label = next((e[len("model-"):] for e in path.name.split("_") if e.startswith("model-")), None)
        if label is not None and label not in labels:
            stale.append(path)
    for stamp in sorted((out / ".cache").glob("statmaps_*.json")):
        if stamp.stem[len("statmaps_"):] not in slugs:
            stale.append(stamp)
    atlases = {atlas_slug(a) for a in cfg.networks.atlases}
    for child in sorted((out / "networks").glob("atlas_*")):
        if child.name.split(".")[0][len("atlas_"):] not in atlases:
            stale.append(child)
    if cfg.fmri.simulate is None:
        stale += [out / "simulated", out / ".cache" / "simulate.json"]
    keep = _config_inputs(cfg)
    for path in stale:
        if not path.exists() or any(k == path.resolve() or path.resolve() in k.parents for k in keep):
            continue
        _clear(ctx, str(path.relative_to(out)))


def run_simulation(config: PipelineConfig, progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None) -> Path:
    """Only the steps that simulated subjects need: story, features, atoms, simulation.

    Returns the folder ``OUT/simulated`` holding ``sub-XX_bold.nii.gz``, ``mask.nii.gz``,
    ``true_r2.nii.gz`` and ``truth.json`` (every file labelled simulated).
    """
    if config.fmri.simulate is None:
        raise ValueError("run_simulation needs fmri.simulate in the configuration.")
    validate_config(config)
    writer = ResultWriter(config.out)
    with RunLock(writer.path):
        (writer.path / SUMMARY).unlink(missing_ok=True)
        return _simulate_locked(config, writer, progress, cancel)


def _simulate_locked(config: PipelineConfig, writer: ResultWriter, progress, cancel) -> Path:
    ctx = _Context(config, writer, progress, cancel)
    words = _step_story(ctx)
    driving = _driving_model(config)
    model = next(m for m in config.features.models if model_slug(m) == driving)
    ans = _step_features(ctx, words, model)
    atoms, codes, _ = _step_atoms(ctx, ans, driving)
    _simulate(ctx, _planting(ctx, driving, ans, atoms, codes))
    return writer.path / "simulated"
