"""Step ``encoding/<model>``: atoms as regressors of every subject's fMRI, then the group.

Reads
    the atoms step's atoms, the fMRI (or simulation) step's data, the story step's
    confounds, and the AN responses for the layer-wise baseline.
Writes
    ``encoding/<model>/subjects/<subject>.npz`` per subject (:func:`encode_subject`: GLS
    atom maps, the paper's sparse fit and its shift null, the cross-validated ridge and
    its permutation p, the layer-wise baseline; each keyed on its own, so subjects
    computed by other processes or jobs merge into one run), then the group
    files, maps with BIDS-derivative names and a JSON sidecar each (what the map holds,
    units, model, method): ``<entities>_desc-<model>_mask.nii.gz`` (the analysis mask),
    ``..._desc-<model>AtomMaps_statmap.nii.gz`` and ``...AtomMapsZ...`` (4D, one volume
    per atom; the z map shown is calibrated against phase-randomised atoms,
    :mod:`napari_brainorg.encoding.calibration`, and ``...AtomMapsZUncalibrated...`` keeps the
    subjects' random- or fixed-effects z), score maps (``...R2Cv...``, ``RCv``, ``R2Sparse``, ``NoiseCeiling``,
    ``QCv``...; ``<entities>`` is ``task-<story>_space-<space>_res-<mm>``),
    ``arrays.npz`` (every group array), ``baseline.tsv``, the prediction as design and
    weights (``voxel_design.npy``, ``voxel_weights.npy``, ``voxel_intercept.npy``,
    ``voxel_timecourses.json``); for region data ``regions.tsv``, ``atom_maps.tsv``,
    ``atom_maps_z.tsv``, ``atom_maps_z_uncalibrated.tsv`` (tables with JSON sidecars). Once per run, whatever the number of
    models: ``encoding/study.npz`` (noise ceiling, ISC), ``encoding/voxel_measured.npy``
    (every subject's high-passed fMRI, float32) and ``encoding/nuisance_only/<subject>.npz``
    (the nuisance regressors' held-out fit and chance level). A baseline is encoded for
    what its comparisons and network tests read: maps, the paper's fit, the held-out r
    and its chance level.
Key
    the encoding options, the keys of the atoms, the fMRI and the story, the seed and TR;
    each subject's task adds the subject, its place in the study and whether its time
    courses are kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from ...._progress import check_cancel
from ....io.results import MapSpace, ResultWriter, group_map_name
from ..._state import key_of
from ...context import (
    StepContext,
    baseline_slugs,
    clear_output,
    files_under,
    model_slug,
    save_npz,
    subject_file_name,
)
from ...study import (
    encoding_confounds,
    highpass_study,
    map_rows,
    on_rows,
    study_confounds,
    study_runs,
    subject_ci,
)
from ._ridge import NUISANCE_ONLY as NUISANCE_ONLY  # the run reads it: which folder to keep
from ._ridge import _prediction_arrays, _ridge_fits, stacked_layer_baselines


#: The group atom maps shown (``atom_maps_z``), in words; part of the group step's key.
MAP_CALIBRATION = ("atom_maps_z: stimulus-calibrated z, each voxel's lock with the atom's unique part (the subjects' "
                   "mean standardised series, drifts, confounds and the other atoms removed) against the null mean "
                   "and SD of the same lock for phase-randomised atoms (each story's phases on its own; sums over "
                   "frequencies, no draw made), light tails corrected (Cornish-Fisher)")


def encoding_key_parts(ctx: StepContext, slug: str) -> list:
    """What every encoding task of ``slug`` depends on: the encoding options and the keys of
    the atoms, the fMRI and the story (the confounds), and the group maps' calibration."""
    cfg = ctx.config
    return [cfg.encoding.model_dump(mode="json"), ctx.keys[f"atoms/{slug}"], ctx.keys["fmri"], ctx.keys["story"],
            cfg.seed, cfg.story.tr, ["maps", MAP_CALIBRATION]]


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
    #: a baseline (phase-randomised, untrained, nuisance): encoded for what its comparisons
    #: and network tests read (maps, the paper's fit, the held-out r and its chance level)
    baseline: bool = False

    @property
    def step(self) -> str:
        return f"encoding/{self.slug}/subjects/{subject_file_name(self.subject)}"

    @property
    def artifact(self) -> str:
        return f"{self.step}.npz"


def subject_tasks(ctx: StepContext, data, slug: str, warn: bool = True) -> list[SubjectTask]:
    """The encoding tasks of ``slug``, one per subject of ``data``, keyed by content."""
    ec = ctx.config.encoding
    n_sub = len(data.data)
    keep = bool(ec.save_timecourses) and timecourses_fit(n_sub, data.data[0].shape, ec.timecourses_max_gb, slug,
                                                          warn=warn)
    baseline = slug in set(baseline_slugs(ctx.config).values())
    upstream = key_of(f"encoding/{slug}/subjects", encoding_key_parts(ctx, slug))
    return [SubjectTask(slug, subject, s, n_sub, keep, key_of(upstream, subject, s, keep, baseline), baseline)
            for s, subject in enumerate(data.subjects)]


def encode_subject(ctx: StepContext, task: SubjectTask, Y: np.ndarray, atoms: np.ndarray, confounds=None,
                   an=None, tick=None, baseline: dict | None = None) -> dict[str, np.ndarray]:
    """One subject's encoding: GLS atom maps, the paper's sparse fit (and its shift null),
    the cross-validated ridge (and its permutation p), the layer-wise baseline.

    Writes ``encoding/<model>/subjects/<subject>.npz`` (stamped in ``.cache`` with
    ``task.key``), or reads it back when the stamp matches; the group step reads only
    these files, so subjects computed by other processes or jobs merge into one run.

    Parameters
    ----------
    ctx : StepContext
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
    baseline : dict, optional
        This subject's layer-wise baseline (``baseline_r2``, ``baseline_r``,
        ``baseline_layers``) when it was fitted for all subjects at once
        (:func:`stacked_layer_baselines`); computed here otherwise.

    Returns
    -------
    dict of str -> ndarray
        ``z``, ``effect``, ``rho`` (each (k, n_voxels) or (n_voxels,)), and as configured
        ``coef``, ``r2_sparse``, ``r2_sparse_null``, ``r2_cv``, ``r_cv``, ``p_cv``,
        ``baseline_r2``, ``baseline_layers``, and (time courses kept) ``prediction_design``,
        ``prediction_weights``, ``prediction_intercept``.
    """
    if ctx.cached(task.step, [task.key], [task.artifact]):
        arr = np.load(ctx.out / task.artifact)
        if tick is not None:
            for _ in range(1 + len(ctx.config.encoding.models)):
                tick()
        return {k: arr[k] for k in arr.files}
    ec = ctx.config.encoding
    out: dict[str, np.ndarray] = {}
    check_cancel(ctx.cancel)
    Yf = highpass_study(ctx, Y)
    out.update(_gls_maps(ctx, Y, atoms, confounds, subject=task.subject))
    if tick is not None:
        tick()
    if "sparse" in ec.models:
        out.update(_sparse_fit(ctx, task, atoms, Yf))
        if tick is not None:
            tick()
    if "ridge" in ec.models:
        out.update(_ridge_fits(ctx, task, Y, Yf, atoms, confounds, an, keep_courses="sparse" not in ec.models,
                               baseline=baseline))
        if tick is not None:
            tick()
    target = ctx.writer._target(task.artifact)
    from ....io.results import atomic_path

    with atomic_path(target, ".npz") as tmp:
        # not compressed: half the size (18.4 → 9.4 MB on the demo) costs 0.8 s of a core per
        # subject and model, 24 s a demo run
        np.savez(tmp, **out)
    ctx.done(task.step)
    return out


def _map_design(ctx: StepContext, n_volumes: int, confounds):
    """The atom maps' volumes (``encoding.map_stories``), their nuisance (the drifts the
    high-pass removes: constant, trend, cosines, per story), the confounds on those
    volumes and the runs' lengths."""
    from ....encoding.preprocessing import drift_basis

    cfg = ctx.config
    ec = cfg.encoding
    mrows, map_runs = map_rows(ctx)
    if cfg.multi_story:
        from ....encoding.stories import run_drift_basis

        nuisance = run_drift_basis(map_runs, ec.highpass_cutoff)
    else:
        nuisance = drift_basis(n_volumes, cfg.story.tr, ec.highpass_cutoff)
    conf = None if confounds is None else np.asarray(confounds)[mrows]
    return mrows, nuisance, conf, [int(r[1]) for r in map_runs] if cfg.multi_story else None


#: the voxels' AR(1) per subject and nuisance, shared by every model's maps of that subject
#: (the noise is estimated without the atoms); a few subjects' worth of one value per voxel
_AR1_MEMO: dict[tuple, np.ndarray] = {}
_AR1_MEMO_SIZE = 64
_AR1_LOCK = threading.Lock()   # subjects encoded side by side share the memo


def _gls_maps(ctx: StepContext, Y: np.ndarray, atoms: np.ndarray, confounds, subject=None) -> dict[str, np.ndarray]:
    """Each atom's GLS map (``z``, ``effect``) and the noise's AR(1) (``rho``) on the map
    volumes (``encoding.map_stories``), with the drifts and confounds as nuisance.

    ``subject`` (its name) lets the models of a run share the subject's AR(1), which
    does not depend on the atoms; it is keyed by the fMRI's content key, the subject, the
    map volumes and the nuisance, so nothing of other data is reused."""
    from ....encoding.glm import ar1_coefficients, gls_atom_maps

    ec = ctx.config.encoding
    # the atoms themselves stay unfiltered in the GLS: the drifts are in the model
    mrows, nuisance, conf, _ = _map_design(ctx, atoms.shape[0], confounds)
    Ym = on_rows(Y, mrows)
    rho = None
    if ec.noise_model == "ar1" and subject is not None and ctx.keys.get("fmri"):
        extra = nuisance if conf is None else np.column_stack([nuisance, np.asarray(conf, np.float64)])
        key = (ctx.keys["fmri"], subject, Y.shape, hashlib.sha256(np.ascontiguousarray(mrows).tobytes()
                                                                   + np.ascontiguousarray(extra).tobytes()).hexdigest())
        with _AR1_LOCK:
            rho = _AR1_MEMO.get(key)
        if rho is None:
            check_cancel(ctx.cancel)
            rho = ar1_coefficients(Ym, extra)
            with _AR1_LOCK:
                if len(_AR1_MEMO) >= _AR1_MEMO_SIZE:
                    _AR1_MEMO.pop(next(iter(_AR1_MEMO)))
                _AR1_MEMO[key] = rho
    maps = gls_atom_maps(atoms[mrows], Ym, nuisance=nuisance, confounds=conf, noise_model=ec.noise_model,
                         rho=rho, cancel=ctx.cancel)
    return {"z": maps.z, "effect": maps.effect, "rho": maps.rho}


#: the subjects' standardised mean fMRI of the calibrated maps is kept for the run's next
#: model (it does not depend on the atoms) up to this many bytes
_CALIBRATION_MEMO_BYTES = 512 * 2**20


def _calibrated_maps(ctx: StepContext, data, atoms: np.ndarray, slug: str) -> np.ndarray:
    """The group maps shown: each voxel's lock with the atom against phase-randomised atoms
    (:func:`napari_brainorg.encoding.calibration.stimulus_calibrated_maps`), on the map volumes."""
    from ....encoding.calibration import stimulus_calibrated_maps

    mrows, nuisance, conf, runs = _map_design(ctx, atoms.shape[0], encoding_confounds(ctx, slug))
    extra = nuisance if conf is None else np.column_stack([nuisance, conf])
    fmri = [on_rows(Y, mrows) for Y in data.data]
    memo = None
    if ctx.keys.get("fmri") and 8 * len(mrows) * fmri[0].shape[1] <= _CALIBRATION_MEMO_BYTES:
        key = ("calibration", ctx.keys["fmri"], len(fmri), fmri[0].shape,
               hashlib.sha256(np.ascontiguousarray(mrows).tobytes() + np.ascontiguousarray(extra).tobytes()).hexdigest())
        if key not in ctx.memo:  # one entry: the nuisance baseline's differs, and comes last
            for old in [k for k in ctx.memo if k[0] == "calibration"]:
                del ctx.memo[old]
            ctx.memo[key] = {}
        memo = ctx.memo[key]
    return stimulus_calibrated_maps(atoms[mrows], fmri, nuisance=extra, runs=runs, cancel=ctx.cancel, memo=memo).z


def _sparse_fit(ctx: StepContext, task: SubjectTask, atoms: np.ndarray, Yf: np.ndarray) -> dict[str, np.ndarray]:
    """The paper's sparse fit on the map volumes: coefficients, in-sample R2, its shift null,
    and (time courses kept) the prediction as a linear map of the high-passed atoms."""
    from ....encoding.sparse_fit import fit_with_shift_null

    cfg = ctx.config
    ec = cfg.encoding
    mrows, _ = map_rows(ctx)
    X = highpass_study(ctx, atoms.astype(np.float64))
    out: dict[str, np.ndarray] = {}
    shifts = []
    if ec.sparse_null_shifts and not task.baseline:
        from ....encoding.inference import circular_shift_draws

        # the same shifts for every subject: the story is shared
        shifts = circular_shift_draws(len(mrows), ec.sparse_null_shifts, random_state=cfg.seed)
    Xm, Ym = on_rows(X, mrows), on_rows(Yf, mrows)
    enc, null = fit_with_shift_null(Xm, Ym, shifts, alpha=ec.sparse_alpha, cancel=ctx.cancel)
    out["coef"] = np.asarray(enc.coef_, np.float32)
    if task.keep_courses:
        # the prediction as a linear map of the high-passed atoms (the viewer forms a
        # voxel's course on a click; the measured courses are written once per study)
        out.update(sparse_prediction(enc, X))
    out["r2_sparse"] = np.asarray(enc.r2_, np.float32)
    if len(shifts):
        out["r2_sparse_null"] = null.astype(np.float32)
    return out


def sparse_prediction(enc, X: np.ndarray) -> dict[str, np.ndarray]:
    """The in-sample prediction of a fitted :class:`~napari_brainorg.encoding.sparse_fit.SparseAtomEncoder`
    on the (high-passed) atoms ``X`` (n_volumes, k) as ``X @ weights + intercept``
    (see :func:`_prediction_arrays`)."""
    scale = enc.y_scale_.astype(np.float64)
    coef = enc.coef_.astype(np.float64) * scale[None, :]
    weights = coef / enc.atom_norm_.astype(np.float64)[:, None]
    intercept = enc.y_mean_.astype(np.float64) - (enc.atom_mean_ / enc.atom_norm_).astype(np.float64) @ coef
    return _prediction_arrays(X, weights, intercept)


def encoding_outputs(ctx: StepContext, slug: str, kind: str) -> list[str]:
    """The files the group encoding step of ``slug`` is stamped with (arrays.npz last)."""
    rel = f"encoding/{slug}"
    if kind == "regions":
        return [f"{rel}/regions.tsv", f"{rel}/atom_maps.tsv", f"{rel}/atom_maps_z.tsv", f"{rel}/arrays.npz"]
    space = ctx.writer.space or MapSpace()
    return [*(group_map_name(slug, name, space) for name in ("atom_maps", "atom_maps_z", "mask")),
            f"{rel}/arrays.npz"]


def step_encoding(ctx: StepContext, data, atoms: np.ndarray, slug: str, an=None, subject_results=None):
    """Per model: every subject's encoding (:func:`encode_subject`), then the group maps.

    ``an``: (AN responses, their layers), needed only for the layer-wise baseline.
    ``subject_results``: the subjects' results computed elsewhere (by Dask workers), in
    the subjects' order; by default they are computed (or read back) here, one by one.
    """
    cfg = ctx.config
    ec = cfg.encoding
    step = f"encoding/{slug}"
    key_parts = encoding_key_parts(ctx, slug)
    outputs = encoding_outputs(ctx, slug, data.kind)
    if ctx.cached(step, key_parts, outputs):
        arr = np.load(ctx.out / outputs[3])
        return {k: arr[k] for k in arr.files}
    tasks = subject_tasks(ctx, data, slug)
    if subject_results is None:
        total = len(tasks) * (1 + len(ec.models))
        counter = {"done": 0}

        def tick():
            counter["done"] += 1
            ctx.stage(f"encoding {slug}", counter["done"], total)

        confounds = encoding_confounds(ctx, slug)
        ctx.stage(f"encoding {slug}", 0, total)
        baselines = stacked_layer_baselines(ctx, tasks, data, an)
        subject_results = _encode_subjects(ctx, tasks, data, atoms, confounds, an, tick, baselines)
    return _encoding_group(ctx, data, slug, tasks, subject_results, atoms, outputs)


#: a subject's encoding holds about this many copies of its fMRI in float64 at once (the
#: high-passed data, the sparse fit's prepared voxels, the GLS products, the ridge's chunks)
_SUBJECT_COPIES = 3
#: at most this share of the memory available is taken by subjects encoded side by side
_SUBJECT_MEMORY_SHARE = 0.5


def subject_threads(n_subjects: int, shape: tuple[int, int]) -> int:
    """How many subjects are encoded at once in this process: one per core, as many as the
    memory available holds (:data:`_SUBJECT_COPIES` float64 copies of a subject's fMRI
    each, within :data:`_SUBJECT_MEMORY_SHARE` of it), at least 1.

    Each subject then runs on one core (BLAS and the solvers' threads limited to 1):
    a subject's work has single-threaded parts (filters, the t-to-z conversion, the AR
    estimates, the solvers' set-up) that leave a second core idle when subjects run one
    after another on every core."""
    from ...._backend import available_cores

    cores = available_cores()
    import psutil

    available = psutil.virtual_memory().available
    per_subject = _SUBJECT_COPIES * 8 * int(shape[0]) * int(shape[1])
    fit = int(_SUBJECT_MEMORY_SHARE * available // max(per_subject, 1))
    return max(1, min(cores, int(n_subjects), fit))


def _encode_subjects(ctx: StepContext, tasks: list[SubjectTask], data, atoms: np.ndarray, confounds, an, tick,
                     baselines: dict) -> list[dict]:
    """Every subject's :func:`encode_subject`, in the subjects' order; several at once
    (:func:`subject_threads`) on threads of their own, each single-threaded, or one after
    another. A subject's results do not depend on which: every chunking in it depends on
    the data's shape alone."""
    todo = [t for t in tasks if not ctx.cached(t.step, [t.key], [t.artifact])]
    n_threads = subject_threads(len(todo), data.data[0].shape) if len(todo) > 1 else 1
    if n_threads <= 1:
        return [encode_subject(ctx, task, Y, atoms, confounds, an, tick, baseline=baselines.get(task.index))
                for task, Y in zip(tasks, data.data)]
    from concurrent.futures import ThreadPoolExecutor

    from ...._backend import blas_limit

    lock = threading.Lock()
    stop = threading.Event()

    class _Stop:
        """The run's cancel, or this step's own stop (an error in another subject, Ctrl-C)."""

        def is_set(self) -> bool:
            return stop.is_set() or (ctx.cancel is not None and ctx.cancel.is_set())

    wctx = dataclasses.replace(ctx, cancel=_Stop())   # the same keys, files and memo; its own cancel

    def locked_tick():
        with lock:
            tick()

    def one(task, Y):
        return encode_subject(wctx, task, Y, atoms, confounds, an, locked_tick, baseline=baselines.get(task.index))

    with blas_limit(1), ThreadPoolExecutor(n_threads, thread_name_prefix="brainorg-subject") as pool:
        futures = [pool.submit(one, task, Y) for task, Y in zip(tasks, data.data)]
        try:
            return [f.result() for f in futures]
        except BaseException:
            # a cancel, an error or Ctrl-C: the subjects not started are dropped, the
            # running ones stop at their next check instead of running to the end
            stop.set()
            for f in futures:
                f.cancel()
            raise


def _encoding_group(ctx: StepContext, data, slug: str, tasks: list[SubjectTask], subject_results: list[dict],
                    atoms: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
    """The group part of the encoding: group maps, chance levels and noise ceiling from the
    subjects' results (read from their artifacts), written beside them. The map shown
    (``z``, ``atom_maps_z``) is calibrated against phase-randomised atoms; the subjects'
    random- or fixed-effects combination is kept as ``z_uncalibrated``."""
    from ....encoding.inference import group_effects

    cfg = ctx.config
    ec = cfg.encoding
    rel = f"encoding/{slug}"
    step = f"encoding/{slug}"
    k = atoms.shape[1]
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
            clear_output(ctx, str(child.relative_to(ctx.out)))

    def stacked(name):
        return [r[name] for r in subject_results if name in r]

    results = {name: stacked(name) for name in ("z", "effect", "rho", "coef", "r2_sparse", "r2_cv", "r_cv",
                                                "p_cv", "baseline_r2", "r2_sparse_null", "r2_loso", "r_loso")}
    baseline_layers = subject_results[0].get("baseline_layers")
    prediction = {name: stacked(f"prediction_{name}") for name in ("design", "weights", "intercept")}
    prediction["heldout_design"] = stacked("heldout_design")
    prediction["heldout_alpha_folds"] = stacked("heldout_alpha_folds")
    confounds = study_confounds(ctx, slug)
    runs = study_runs(cfg) if cfg.multi_story else None
    map_runs = map_rows(ctx)[1]
    group_z, group_method = group_effects(np.stack(results["effect"]), np.stack(results["z"]),
                                          method=ec.group_effects, min_random=ec.min_subjects_random)
    group = {
        "z": np.asarray(_calibrated_maps(ctx, data, atoms, slug), np.float32),
        "z_uncalibrated": np.asarray(group_z, np.float32),
        "effect": np.mean(np.stack(results["effect"]), 0).astype(np.float32),
        "ar1": np.mean(np.stack(results["rho"]), 0).astype(np.float32),
        "coef": np.mean(np.stack(results["coef"]), 0).astype(np.float32),
        # each subject's z for the BIDS maps; their effects stay in subjects/<subject>.npz
        "subject_z": np.stack(results["z"]).astype(np.float32),
    }
    ctx.summary.setdefault("maps", {})[slug] = {
        "statistic": f"per-subject GLS z of each atom with all atoms, drifts and confounds "
                     f"(noise model {ec.noise_model}, estimated without the atoms)",
        "noise_model": ec.noise_model, "group_effects": group_method, "n_subjects": n_sub,
        "min_subjects_random": ec.min_subjects_random,
        "group_statistic": ("one-sample t over subjects of the standardised effects, as z"
                            if group_method == "random" else "Stouffer sum of subject z / sqrt(n)"),
        "confounds": [] if confounds is None else list(confounds.columns),
        "shown": MAP_CALIBRATION,
        "uncalibrated": "atom_maps_z_uncalibrated: the group statistic above, without the stimulus calibration",
    }
    if runs:
        ctx.summary["maps"][slug]["stories"] = [r[0] for r in map_runs]
    if results["p_cv"]:
        from ....encoding.inference import fdr

        p_group, combined = held_out_group_p(np.stack(results["p_cv"]), ec.n_permutations, group_method)
        group["q_cv"] = np.asarray(fdr(p_group, 0.05)[1], np.float32)
        ctx.summary["maps"][slug]["held_out_group_test"] = combined
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
    group.update(comparison_arrays(subject_results))
    for name in ("r2_loso", "r_loso"):  # (n_subjects, n_stories, n_voxels): held-out story per row
        if results[name]:
            per_story = np.mean(np.stack(results[name]), 0)
            group[f"{name}_stories"] = per_story.astype(np.float32)
            group[name] = per_story.mean(0).astype(np.float32)
            group[f"subject_{name}"] = np.stack(results[name]).astype(np.float32)
    group.update(study_arrays(ctx, data))
    w = ctx.writer
    if data.kind == "regions":
        _write_region_tables(w, rel, data.region_names, group, k)
    else:
        import nibabel as nib

        about = _map_sidecar(ctx, slug, n_sub, group_method)
        mask = nib.Nifti1Image(np.asarray(data.mask_img.dataobj).astype(np.uint8), data.mask_img.affine)
        w.write_map(slug, "mask", mask, about)
        for name, key in (("atom_maps", "coef"), ("atom_maps_z", "z"), ("atom_maps_z_uncalibrated", "z_uncalibrated"),
                          ("baseline_r2_layers", "baseline_r2"),
                          *((n, n) for n in ("r2_sparse", "r2_cv", "r_cv", "noise_ceiling", "q_cv", "ar1",
                                             "r2_sparse_null_p95", "r2_loso", "r_loso", "r2_loso_stories",
                                             "r_cv_nuisance_only", "delta_r_beyond_nuisance",
                                             "delta_r2_beyond_nuisance", "delta_r_beyond_nuisance_t"))):
            if key in group:
                w.write_map(slug, name, data.unmask(group[key]), about)
    if "baseline_r2" in group:
        import pandas as pd

        table = pd.DataFrame({"model": [f"layer {int(l)}" for l in group["baseline_layers"]] + ["atoms"],
                              "r2_median": list(np.median(group["baseline_r2"], 1)) + [np.median(group["r2_cv"])],
                              "r2_p95": list(np.percentile(group["baseline_r2"], 95, 1))
                              + [np.percentile(group["r2_cv"], 95)]})
        w.write_table(f"{rel}/baseline.tsv", table)
    if prediction["weights"]:
        save_voxel_timecourses(w, rel, prediction, ec, data.subjects)
    save_npz(w, outputs[3], group)
    ctx.done(step, outputs=[f for f in files_under(ctx, rel) if not f.startswith(f"{rel}/subjects/")])
    return group


def _map_sidecar(ctx: StepContext, slug: str, n_subjects: int, group_method: str) -> dict:
    """What every map of ``encoding/<model>/`` shares in its JSON sidecar: the model, the
    subjects, how they were combined, the method and the software."""
    from .... import __version__

    cfg = ctx.config
    source = next((m for m in cfg.features.models if model_slug(m) == slug), slug)
    return {"Model": source, "NumberOfSubjects": int(n_subjects), "GroupMethod": group_method,
            "Simulated": cfg.fmri.simulate is not None,
            "Method": {"encoding": cfg.encoding.model_dump(mode="json"),
                       "features": {"site": cfg.features.site, "alignment": cfg.features.alignment},
                       "atoms": {"n_atoms": cfg.atoms.n_atoms, "alpha": cfg.atoms.alpha}},
            # BIDS URIs into this folder
            "Sources": [f"bids::encoding/{slug}/subjects/", f"bids::atoms/{slug}/atoms.npy"],
            "Software": {"Name": "napari-brainorg", "Version": __version__}}


def held_out_group_p(p_subjects: np.ndarray, n_permutations: int, method: str) -> tuple[np.ndarray, str]:
    """The group p of each voxel's held-out R2 from the subjects' permutation p-values.

    Each subject's one-sided p becomes a z through its mid-p (a subject whose observed
    R2 is below every draw gives a finite z). ``method`` "random": a one-sample t-test
    over subjects of those z (subjects as random effects: a small excess that every
    subject shares is not multiplied by the number of subjects); "fixed": Stouffer's sum.

    Parameters
    ----------
    p_subjects : ndarray of shape (n_subjects, n_voxels)
    n_permutations : int
    method : {"random", "fixed"}

    Returns
    -------
    p_group : ndarray of shape (n_voxels,)
    description : str
    """
    from ....encoding.inference import stouffer_p

    if method == "random" and p_subjects.shape[0] > 1:
        from scipy import stats as sps

        half = 0.5 / (1.0 + n_permutations)
        z = sps.norm.isf(np.clip(p_subjects - half, half, 1.0 - half))
        p_group = sps.ttest_1samp(z, 0.0, axis=0, alternative="greater").pvalue
        p_group = np.where(np.isnan(p_group), 1.0, p_group)
        return p_group, ("one-sample t over subjects (random effects) of each subject's permutation z "
                         "(alpha chosen again in every draw)")
    _, p_group = stouffer_p(p_subjects, n_draws=n_permutations)
    return p_group, "Stouffer sum of the subjects' permutation z (fixed effects; alpha chosen again in every draw)"


def comparison_arrays(subject_results: list[dict]) -> dict[str, np.ndarray]:
    """The group arrays of the comparisons between feature sets (when the subjects have them).

    ``r_cv_nuisance_only`` / ``r_cv_atoms_and_nuisance`` (and R2): the nuisance regressors alone and with the
    atoms, mean over subjects; ``delta_r_beyond_nuisance`` / ``delta_r2_beyond_nuisance``: what the atoms
    add, mean over subjects, with ``subject_delta_*`` and ``delta_r_beyond_nuisance_t`` (t over
    subjects); ``subject_chance_<set>`` (n_subjects, 2): each subject's observed median r
    over the summary voxels and its chance level, ``subject_chance_<set>_draws``;
    ``subject_baseline_r_median`` (n_subjects, n_layers): each layer's median r.
    """
    def stacked(name):
        values = [r[name] for r in subject_results if name in r]
        return np.stack(values) if len(values) == len(subject_results) and values else None

    out: dict[str, np.ndarray] = {}
    joint, nuisance = stacked("r_cv_atoms_and_nuisance"), stacked("r_cv_nuisance_only")
    if joint is not None and nuisance is not None:
        out["r_cv_nuisance_only"] = nuisance.mean(0).astype(np.float32)
        out["r_cv_atoms_and_nuisance"] = joint.mean(0).astype(np.float32)
        for name, a, b in (("delta_r_beyond_nuisance", joint, nuisance),
                           ("delta_r2_beyond_nuisance", stacked("r2_cv_atoms_and_nuisance"), stacked("r2_cv_nuisance_only"))):
            delta = np.asarray(a, np.float64) - np.asarray(b, np.float64)
            out[name] = delta.mean(0).astype(np.float32)
            out[f"subject_{name}"] = delta.astype(np.float32)
        if len(subject_results) > 1:
            from ....encoding.stats import group_one_sample

            t, _ = group_one_sample(out["subject_delta_r_beyond_nuisance"], method="t")
            out["delta_r_beyond_nuisance_t"] = np.asarray(t, np.float32)
    for name in ("atoms", "nuisance", "gain"):
        values, draws = stacked(f"chance_{name}"), stacked(f"chance_{name}_draws")
        if values is not None:
            out[f"subject_chance_{name}"] = values.astype(np.float64)
            out[f"subject_chance_{name}_draws"] = draws.astype(np.float64)
    layers = stacked("baseline_r")
    if layers is not None:
        out["subject_baseline_r_median"] = np.median(layers, axis=2)
    return out


def timecourses_fit(n_subjects: int, shape: tuple[int, int], max_gb: float, slug: str, warn: bool = True) -> bool:
    """Whether every subject's measured courses, shape ``(n_volumes, n_voxels)`` each,
    float32, written once per study (``encoding/voxel_measured.npy``), fit within
    ``encoding.timecourses_max_gb``; a warning says when not."""
    n_bytes = 4 * n_subjects * int(shape[0]) * int(shape[1])
    if n_bytes <= max_gb * 2**30:
        return True
    if not warn:
        return False
    from ....errors import BrainorgWarning

    warnings.warn(
        f"encoding.save_timecourses: the voxel time courses of {slug} would take {n_bytes / 2**30:.1f} GiB "
        f"({n_subjects} subjects x {shape[1]} voxels x {shape[0]} volumes x float32), more than "
        f"encoding.timecourses_max_gb = {max_gb:g}; they are not saved (the viewer's voxel panel shows no "
        "time course). Raise encoding.timecourses_max_gb to keep them.", BrainorgWarning, stacklevel=2)
    return False


#: the study's measured courses, shared by every model of the run
MEASURED_COURSES = "encoding/voxel_measured.npy"


def save_voxel_timecourses(writer: ResultWriter, rel: str, prediction: dict, ec, subjects) -> None:
    """Each subject's prediction of every voxel as a linear map of the model's design:
    ``voxel_design.npy`` (n_volumes, p), ``voxel_weights.npy`` (n_subjects, n_voxels, p)
    and ``voxel_intercept.npy`` (n_subjects, n_voxels), float32, and for the held-out
    (cross-validated) prediction the ridge's design ``voxel_heldout_design.npy``, each
    fold's alpha ``voxel_alpha_folds.npy`` (n_subjects, n_voxels, n_folds) and the folds
    ``voxel_folds.npz`` (``train_<i>``, ``test_<i>``), voxels in the order of
    ``mask.nii.gz``: a voxel's predicted course is ``design @ weights[s, v] + intercept[s, v]``
    (:meth:`~napari_brainorg.io.results.ResultFolder.voxel_timecourses` forms it on
    demand). The measured courses are written once per study
    (``encoding/voxel_measured.npy``, :func:`study_arrays`). The prediction is the
    encoding model's own: the paper's sparse fit (in sample) when it runs, else the
    ridge's final fit (in sample). ``encoding.save_timecourses: false`` turns both off."""
    sparse = "sparse" in ec.models
    writer.write_npy(f"{rel}/voxel_design.npy", np.asarray(prediction["design"][0], np.float32))
    writer.write_npy(f"{rel}/voxel_weights.npy", np.stack(prediction["weights"]).astype(np.float32))
    writer.write_npy(f"{rel}/voxel_intercept.npy", np.stack(prediction["intercept"]).astype(np.float32))
    heldout = bool(prediction.get("heldout_alpha_folds"))
    if heldout:
        writer.write_npy(f"{rel}/voxel_heldout_design.npy", np.asarray(prediction["heldout_design"][0], np.float32))
        writer.write_npy(f"{rel}/voxel_alpha_folds.npy", np.stack(prediction["heldout_alpha_folds"]).astype(np.float32))
        from ....encoding.folds import contiguous_folds
        from ....io.results import atomic_path

        folds = contiguous_folds(len(prediction["heldout_design"][0]), int(ec.n_folds), int(ec.gap))
        with atomic_path(writer._target(f"{rel}/voxel_folds.npz"), ".npz") as tmp:
            np.savez(tmp, **{f"{part}_{i}": idx for i, fold in enumerate(folds)
                             for part, idx in zip(("train", "test"), fold)})
    writer.write_json(f"{rel}/voxel_timecourses.json", {
        "subjects": list(subjects),
        "measured_file": "../voxel_measured.npy",
        "shape": "measured: (n_subjects, n_voxels, n_volumes); weights: (n_subjects, n_voxels, n_features); "
                 "design: (n_volumes, n_features); voxels in the order of mask.nii.gz (C order)",
        "measured": "the fMRI as the model saw it: cosine high-pass "
                    f"(cut-off {ec.highpass_cutoff} s) with its detrending, in the data's units",
        "predicted": ("sparse fit (in sample): SparseAtomEncoder.predict of the high-passed atoms"
                      if sparse else "ridge final fit (in sample): CVRidgeEncoder.predict of the atoms"),
        "model": "sparse" if sparse else "ridge",
        **({"heldout": {"label": "ridge, held-out: each fold's volumes predicted by the ridge trained on the "
                                 "other folds (standardised on them, that fold's alpha)",
                        "n_folds": int(ec.n_folds), "gap": int(ec.gap)}} if heldout else {}),
    })


def study_arrays(ctx: StepContext, data) -> dict[str, np.ndarray]:
    """What depends on the fMRI alone, computed once per run whatever the number of models:
    the split-half noise ceiling (``noise_ceiling``, ``noise_ceiling_group``), the
    leave-one-out ISC (``isc_loo``) and, when time courses are kept, every subject's
    high-passed fMRI in ``encoding/voxel_measured.npy`` (n_subjects, n_voxels,
    n_volumes), float32.

    Voxels are read in blocks (each block high-passed for every subject), so memory
    stays at one block of the study beside the data. Stamped as step ``encoding/study``
    (``encoding/study.npz``)."""
    cfg = ctx.config
    ec = cfg.encoding
    n_sub = len(data.data)
    keep_courses = bool(ec.save_timecourses) and timecourses_fit(n_sub, data.data[0].shape, ec.timecourses_max_gb,
                                                                 "the study", warn=False)
    if n_sub < 2 and not keep_courses:
        return {}
    step, rel = "encoding/study", "encoding/study.npz"
    outputs = [rel] + ([MEASURED_COURSES] if keep_courses else [])
    key_parts = [ctx.keys["fmri"], ctx.keys["story"], ec.highpass_cutoff, cfg.seed, keep_courses,
                 [list(r) for r in study_runs(cfg)]]
    if ctx.cached(step, key_parts, outputs):
        arr = np.load(ctx.out / rel)
        return {k: arr[k] for k in arr.files}
    from ....encoding.stats import noise_ceiling_isc, noise_ceiling_split_half
    from ....io.results import atomic_path

    n_volumes, n_voxels = data.data[0].shape
    block = max(1, int(256 * 2**20 // (8 * n_sub * n_volumes)))
    names = ("noise_ceiling", "noise_ceiling_group", "isc_loo")
    out = {name: np.zeros(n_voxels, np.float32) for name in names} if n_sub > 1 else {}
    with atomic_path(ctx.writer._target(MEASURED_COURSES), ".npy") if keep_courses else nullcontext() as tmp:
        measured = (np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                              shape=(n_sub, n_voxels, n_volumes)) if keep_courses else None)
        for start in range(0, n_voxels, block):
            check_cancel(ctx.cancel)
            cols = slice(start, min(n_voxels, start + block))
            filtered = []
            for Y in data.data:
                check_cancel(ctx.cancel)
                filtered.append(highpass_study(ctx, Y[:, cols]))
            if measured is not None:
                for s, Yf in enumerate(filtered):
                    measured[s, cols] = Yf.T
            if n_sub > 1:
                # the ceiling of one subject's r (split-half + Spearman-Brown), beside the
                # leave-one-out ISC (a lower reference with few subjects); the same splits in every block
                ceiling = noise_ceiling_split_half(filtered, random_state=cfg.seed, cancel=ctx.cancel)
                out["noise_ceiling"][cols] = ceiling.subject_r
                out["noise_ceiling_group"][cols] = ceiling.group_r
                out["isc_loo"][cols] = noise_ceiling_isc(filtered)
        if measured is not None:
            measured.flush()
            del measured
    save_npz(ctx.writer, rel, out)
    ctx.done(step)
    return out


def _sparse_r2_chance(observed: np.ndarray, null: np.ndarray) -> dict[str, np.ndarray]:
    """The paper's in-sample R2 (group mean, per voxel) against its circular-shift null
    (group mean under each shared shift, (n_shifts, n_voxels)): per-voxel null median,
    95th percentile and p; per-draw map median and 95th percentile (map-level chance)."""
    from ....encoding.inference import permutation_p

    return {
        "r2_sparse_null_median": np.median(null, 0).astype(np.float32),
        "r2_sparse_null_p95": np.percentile(null, 95, 0).astype(np.float32),
        "r2_sparse_p": np.asarray(permutation_p(observed, null), np.float32),
        "r2_sparse_null_map_median": np.median(null, 1).astype(np.float32),
        "r2_sparse_null_map_p95": np.percentile(null, 95, 1).astype(np.float32),
    }


def _write_region_tables(writer: ResultWriter, rel: str, names, group: dict, k: int) -> None:
    """Parcellated data: one row per region instead of NIfTI maps."""
    import pandas as pd

    from ....encoding.inference import fdr

    per_region = pd.DataFrame({"region": list(names)})
    for name in ("r2_sparse", "r2_sparse_null_median", "r2_sparse_null_p95", "r2_sparse_p", "r2_cv", "r_cv",
                 "q_cv", "noise_ceiling", "isc_loo", "r2_loso", "r_loso"):
        if name in group:
            per_region[name] = group[name]
    if "r2_sparse_p" in group:
        per_region.insert(list(per_region.columns).index("r2_sparse_p") + 1, "r2_sparse_q",
                          fdr(np.asarray(group["r2_sparse_p"], np.float64))[1])
    if "subject_r_cv" in group:
        _, lo, hi = subject_ci(group["subject_r_cv"])
        at = list(per_region.columns).index("r_cv") + 1
        per_region.insert(at, "r_cv_ci_high", hi)
        per_region.insert(at, "r_cv_ci_low", lo)
    if "subject_delta_r_beyond_nuisance" in group:  # what the atoms add beyond the nuisance regressors
        per_region["r_cv_nuisance_only"] = group["r_cv_nuisance_only"]
        for name in ("delta_r_beyond_nuisance", "delta_r2_beyond_nuisance"):
            mean, lo, hi = subject_ci(group[f"subject_{name}"])
            per_region[name] = mean
            per_region[f"{name}_ci_low"] = lo
            per_region[f"{name}_ci_high"] = hi
    if "baseline_r2" in group:  # the layer-wise population baseline, best layer per region
        per_region["baseline_layer_r2_best"] = np.max(group["baseline_r2"], 0)
        per_region["baseline_layer_best"] = np.asarray(group["baseline_layers"])[np.argmax(group["baseline_r2"], 0)]
    writer.write_table(f"{rel}/regions.tsv", per_region)
    for stat, rel_name in (("coef", "atom_maps.tsv"), ("z", "atom_maps_z.tsv"),
                           ("z_uncalibrated", "atom_maps_z_uncalibrated.tsv")):
        table = pd.DataFrame(group[stat].T, columns=[f"atom_{i}" for i in range(k)])
        table.insert(0, "region", list(names))
        writer.write_table(f"{rel}/{rel_name}", table)
