"""The cross-validated ridge part of a subject's encoding (:func:`.encode_subject`).

The atoms' nested cross-validated ridge and everything scored with its folds: the
leave-one-story-out scores, the permutation p, the layer-wise baseline (fitted for all
subjects at once where they are small, :func:`stacked_layer_baselines`), the nuisance
regressors alone (once per subject for every model, ``encoding/nuisance_only/``) and with
the atoms, and each feature set's chance level by circular shifts.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ...._progress import check_cancel
from ...context import StepContext, subject_file_name
from ...study import study_runs


def _prediction_arrays(design: np.ndarray, weights: np.ndarray, intercept: np.ndarray) -> dict[str, np.ndarray]:
    """A subject's in-sample prediction as ``design @ weights + intercept``: the design
    (n_volumes, p) float32, the weights as (n_voxels, p) float32 (a voxel's row is
    contiguous, so a viewer reads one voxel from a memory map) and the intercept (n_voxels,)."""
    return {"prediction_design": np.asarray(design, np.float32),
            "prediction_weights": np.ascontiguousarray(np.asarray(weights, np.float32).T),
            "prediction_intercept": np.asarray(intercept, np.float32)}


def _ridge_design(ctx: StepContext, features: np.ndarray, runs) -> np.ndarray | None:
    """``features`` as the ridge reads them: delayed and high-passed (per story run when
    there are several); None for one story without a high-pass or delays to apply here."""
    ec = ctx.config.encoding
    if runs:
        from ....encoding.stories import highpass_runs, make_delays_runs

        return highpass_runs(make_delays_runs(features, runs, ec.delays), runs, ec.highpass_cutoff)
    from ....encoding.preprocessing import highpass, make_delays

    X = make_delays(features, tuple(ec.delays))
    if ec.highpass_cutoff:
        X = highpass(X, ctx.config.story.tr, cutoff=ec.highpass_cutoff)
    return X


def _fit_ridge(ctx: StepContext, features: np.ndarray, Y: np.ndarray, Yf: np.ndarray, runs):
    """The cross-validated ridge of ``Y`` on ``features`` (contiguous folds, α per voxel by
    the inner CV). Returns the fitted encoder and, with several stories, the design it
    was fitted on (delays and drifts per run, made here), else None."""
    from ....encoding.ridge import CVRidgeEncoder

    ec = ctx.config.encoding
    tr = ctx.config.story.tr
    if runs:  # several stories: delays and drifts within each run, done here
        design = _ridge_design(ctx, features, runs)
        enc = CVRidgeEncoder(alphas=np.asarray(ec.alphas), n_folds=ec.n_folds, gap=ec.gap, delays=(0,),
                             highpass_cutoff=None, detrend=False, tr=tr)
        enc.fit(design, Yf)
        return enc, design
    enc = CVRidgeEncoder(alphas=np.asarray(ec.alphas), n_folds=ec.n_folds, gap=ec.gap,
                         delays=tuple(ec.delays), highpass_cutoff=ec.highpass_cutoff, tr=tr)
    enc.fit(features, Y)
    return enc, None


def _ridge_fits(ctx: StepContext, task, Y: np.ndarray, Yf: np.ndarray, atoms: np.ndarray,
                confounds, an, keep_courses: bool, baseline: dict | None = None) -> dict[str, np.ndarray]:
    """The cross-validated ridge of the atoms and everything scored with its folds: the
    leave-one-story-out scores, the permutation p, the layer-wise baseline, the nuisance
    regressors alone and with the atoms, and each feature set's chance level."""
    cfg = ctx.config
    ec = cfg.encoding
    k = atoms.shape[1]
    runs = study_runs(cfg) if cfg.multi_story else None  # several stories: drifts and delays per run
    enc, design = _fit_ridge(ctx, atoms, Y, Yf, runs)
    out: dict[str, np.ndarray] = {}
    if task.keep_courses and keep_courses:
        # the final fit as a linear map of its design (delayed, filtered, as predict forms it)
        Xd = enc._design(atoms if design is None else design).astype(np.float64)
        coef = enc.coef_.astype(np.float64) * enc.y_scale_.astype(np.float64)[None, :]
        weights = coef / enc.x_scale_.astype(np.float64)[:, None]
        intercept = (enc.intercept_.astype(np.float64) * enc.y_scale_ + enc.y_mean_
                     - (enc.x_mean_ / enc.x_scale_).astype(np.float64) @ coef)
        out.update(_prediction_arrays(Xd, weights, intercept))
    out["r2_cv"] = np.asarray(enc.r2_, np.float32)
    out["r_cv"] = np.asarray(enc.r_, np.float32)
    if task.keep_courses:
        # the held-out prediction, formed for a clicked voxel: each fold's volumes from the
        # ridge trained on the others with that fold's alpha (the design and the alphas suffice)
        out["heldout_design"] = np.asarray(enc._design(atoms if design is None else design), np.float32)
        out["heldout_alpha_folds"] = np.ascontiguousarray(np.asarray(enc.alpha_folds_, np.float32).T)
    if runs and ec.leave_one_story_out and not task.baseline:
        from ....encoding.stories import leave_one_story_out

        # trained on the other stories, scored on each held-out one: (n_stories, n_voxels)
        loso = leave_one_story_out(atoms, Yf, runs, np.asarray(ec.alphas), delays=tuple(ec.delays),
                                   highpass_cutoff=ec.highpass_cutoff, gap=ec.gap, filtered=True,
                                   cancel=ctx.cancel)
        out["r2_loso"] = np.asarray(loso.r2, np.float32)
        out["r_loso"] = np.asarray(loso.r, np.float32)
    if ec.n_permutations and not task.baseline:
        out["p_cv"] = _ridge_p_values(ctx, enc, atoms, Yf, seed=cfg.seed + task.index, design=design)
    if ec.baseline and an is not None:
        if baseline is None or not _same_folds(baseline.get("_folds"), enc.folds_):
            baseline = _layer_baseline(ctx, an, Y, enc.folds_)
        out.update({k: v for k, v in baseline.items() if not k.startswith("_")})
    if "sparse" not in ec.models:
        out["coef"] = np.asarray(enc.coef_[:k], np.float32)
    with_nuisance = confounds is not None and ec.nuisance_comparison and not task.baseline
    nuisance = None
    if with_nuisance:
        nuisance = _nuisance_only(ctx, task, Y, Yf, np.asarray(confounds, np.float64), runs, enc.folds_)
        out.update({k: v for k, v in nuisance.items() if not k.startswith("_")})
        out.update(_joint_fit(ctx, Y, Yf, atoms, np.asarray(confounds, np.float64), runs))
    if ec.chance_shifts:
        out.update(_chance_levels(ctx, enc.folds_, Yf, atoms, confounds if with_nuisance else None, runs, nuisance))
    return out


def _layer_baseline(ctx: StepContext, an, Y: np.ndarray, folds) -> dict[str, np.ndarray]:
    """The layer-wise baseline of the voxels ``Y``: each layer's ANs alone, the atoms' folds."""
    from ....encoding.baseline import layerwise_encoding

    ec = ctx.config.encoding
    base = layerwise_encoding(an[0], an[1], Y, folds, np.asarray(ec.alphas), gap=ec.gap,
                              delays=tuple(ec.delays), tr=ctx.config.story.tr, highpass_cutoff=ec.highpass_cutoff,
                              progress=ctx.progress, cancel=ctx.cancel)
    return {"baseline_r2": np.asarray(base.r2, np.float32), "baseline_r": np.asarray(base.r, np.float32),
            "baseline_layers": np.asarray(base.layers)}


def _same_folds(a, b) -> bool:
    return (a is not None and len(a) == len(b)
            and all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b)))


#: the most fMRI values (volumes x voxels of all subjects) for which the layer-wise baseline
#: is fitted for all subjects at once (region studies; 128 MiB in float64)
STACKED_BASELINE_MAX_VALUES = 2 ** 24


def stacked_layer_baselines(ctx: StepContext, tasks: list, data, an) -> dict[int, dict]:
    """The layer-wise baseline of every subject still to encode, fitted once on their voxels
    side by side (region studies): the subjects heard the same story, so each layer's design
    and its kernel factorisations are theirs alike, and every voxel keeps its own α and
    scores; the factorisations are made once instead of once per subject.

    Returns ``{subject index: its baseline}``, empty when the layer-wise baseline is off,
    the data are too large to stack (:data:`STACKED_BASELINE_MAX_VALUES`) or the subjects'
    volumes differ (each is then fitted in :func:`encode_subject`)."""
    from ....encoding.ridge import contiguous_folds

    ec = ctx.config.encoding
    if not (ec.baseline and an is not None and "ridge" in ec.models):
        return {}
    todo = [(t, Y) for t, Y in zip(tasks, data.data) if not ctx.cached(t.step, [t.key], [t.artifact])]
    if len(todo) < 2 or len({Y.shape[0] for _, Y in todo}) != 1:
        return {}
    n_volumes = todo[0][1].shape[0]
    if n_volumes * sum(Y.shape[1] for _, Y in todo) > STACKED_BASELINE_MAX_VALUES:
        return {}
    # the folds the atoms' ridge uses (CVRidgeEncoder: contiguous, from the volumes alone);
    # encode_subject checks them against its fit's before using the result
    folds = contiguous_folds(n_volumes, ec.n_folds, ec.gap)
    stacked = _layer_baseline(ctx, an, np.column_stack([np.asarray(Y, np.float64) for _, Y in todo]), folds)
    out, start = {}, 0
    for task, Y in todo:
        cols = slice(start, start + Y.shape[1])
        start += Y.shape[1]
        out[task.index] = {"baseline_r2": stacked["baseline_r2"][..., cols], "baseline_r": stacked["baseline_r"][..., cols],
                           "baseline_layers": stacked["baseline_layers"], "_folds": folds}
    return out


def _joint_fit(ctx: StepContext, Y, Yf, atoms, confounds, runs) -> dict[str, np.ndarray]:
    """The atoms and the nuisance regressors together, fitted like the atoms (same folds
    and α grid): what the atoms add is ``r_cv_atoms_and_nuisance - r_cv_nuisance_only``."""
    check_cancel(ctx.cancel)
    enc, _ = _fit_ridge(ctx, np.column_stack([atoms, confounds]), Y, Yf, runs)
    return {"r2_cv_atoms_and_nuisance": np.asarray(enc.r2_, np.float32),
            "r_cv_atoms_and_nuisance": np.asarray(enc.r_, np.float32)}


#: the nuisance regressors' fit per subject, shared by every model of the run
NUISANCE_ONLY = "encoding/nuisance_only"


def _nuisance_only(ctx: StepContext, task, Y, Yf, confounds, runs, folds) -> dict[str, np.ndarray]:
    """The nuisance regressors alone, fitted like the atoms, and their chance level: the
    same for every model of the run, so computed once per subject
    (``encoding/nuisance_only/<subject>.npz``, stamped) and read back by the others.

    Returns ``r2_cv_nuisance_only``, ``r_cv_nuisance_only`` and, with chance levels on,
    ``chance_nuisance``, ``chance_nuisance_draws`` and ``_chance_nuisance_observed`` (the
    summary voxels' r, the reference of the atoms' gain)."""
    ec = ctx.config.encoding
    name = subject_file_name(task.subject)
    step, rel = f"{NUISANCE_ONLY}/{name}", f"{NUISANCE_ONLY}/{name}.npz"
    key_parts = [ec.model_dump(mode="json"), ctx.keys.get("fmri"), ctx.keys.get("story"), ctx.config.seed,
                 ctx.config.story.tr, task.subject, task.index,
                 hashlib.sha256(np.ascontiguousarray(confounds).tobytes()).hexdigest()]
    if ctx.cached(step, key_parts, [rel]):
        arr = np.load(ctx.out / rel)
        return {k: arr[k] for k in arr.files}
    check_cancel(ctx.cancel)
    enc, _ = _fit_ridge(ctx, confounds, Y, Yf, runs)
    out = {"r2_cv_nuisance_only": np.asarray(enc.r2_, np.float32), "r_cv_nuisance_only": np.asarray(enc.r_, np.float32)}
    if ec.chance_shifts:
        from ....encoding.chance import held_out_chance

        voxels, Ys, kwargs = _chance_setup(ctx, Yf)
        ch = held_out_chance(_ridge_design(ctx, confounds, runs), Ys, folds, np.asarray(ec.alphas), **kwargs)
        out.update({"chance_nuisance": np.array([ch.median, ch.chance]), "chance_nuisance_draws": ch.draws,
                    "_chance_nuisance_observed": ch.observed})
    from ....io.results import atomic_path

    with atomic_path(ctx.writer._target(rel), ".npz") as tmp:
        np.savez(tmp, **out)
    ctx.done(step)
    return out


def _chance_setup(ctx: StepContext, Yf) -> tuple[np.ndarray, np.ndarray, dict]:
    """The summary voxels, their fMRI and the options every chance level shares."""
    from ....encoding.chance import summary_voxels

    cfg = ctx.config
    ec = cfg.encoding
    voxels = summary_voxels(Yf.shape[1], ec.chance_voxels, random_state=cfg.seed)
    kwargs = dict(n_shifts=ec.chance_shifts, gap=ec.gap, random_state=cfg.seed, cancel=ctx.cancel)
    return voxels, np.asarray(Yf, np.float64)[:, voxels], kwargs


def _chance_levels(ctx: StepContext, folds, Yf, atoms, confounds, runs, nuisance=None) -> dict[str, np.ndarray]:
    """Each feature set's median held-out r over the summary voxels beside its chance level
    (circular shifts, α chosen again): ``chance_<set>`` = [observed median, chance] and
    ``chance_<set>_draws``; for the atoms, and with the nuisance regressors (``nuisance``:
    :func:`_nuisance_only`'s, whose chance level is computed there) the atoms' gain over
    them (the joint model with only the atoms shifted, minus the nuisance model)."""
    from ....encoding.chance import held_out_chance

    ec = ctx.config.encoding
    voxels, Ys, kwargs = _chance_setup(ctx, Yf)
    alphas = np.asarray(ec.alphas)
    out = {"chance_voxels": voxels}
    sets = {"atoms": held_out_chance(_ridge_design(ctx, atoms, runs), Ys, folds, alphas, **kwargs)}
    if confounds is not None and nuisance is not None and "_chance_nuisance_observed" in nuisance:
        confounds = np.asarray(confounds, np.float64)
        # the joint design is delay-major: every delay's block holds the atoms, then the confounds
        shifted = np.tile(np.r_[np.ones(atoms.shape[1], bool), np.zeros(confounds.shape[1], bool)],
                          len(ec.delays))
        sets["gain"] = held_out_chance(_ridge_design(ctx, np.column_stack([atoms, confounds]), runs), Ys, folds,
                                       alphas, shifted=shifted, reference=nuisance["_chance_nuisance_observed"],
                                       **kwargs)
    for name, ch in sets.items():
        out[f"chance_{name}"] = np.array([ch.median, ch.chance])
        out[f"chance_{name}_draws"] = ch.draws
    return out


def _ridge_p_values(ctx: StepContext, enc, atoms: np.ndarray, Yf: np.ndarray, seed: int,
                    design: np.ndarray | None = None) -> np.ndarray:
    """One-sided p of each voxel's held-out R2 against circular shifts of the atoms, with
    the real fit's folds and the whole α selection run again in every draw (the real
    fit's α would make the null narrower than the real procedure, and p too small).
    ``design``: the delayed, filtered atoms when already made (several stories: per run)."""
    from ....encoding.stats import circular_shift_null, make_ridge_score_fn

    ec = ctx.config.encoding
    X = design if design is not None else _ridge_design(ctx, atoms, None)
    score_fn = make_ridge_score_fn(enc.folds_, np.asarray(ec.alphas), gap=ec.gap)
    null = circular_shift_null(X, Yf, score_fn, n_permutations=ec.n_permutations, random_state=seed,
                               keep_null=False, progress=ctx.progress, cancel=ctx.cancel)
    return np.asarray(null.p_values, np.float64)
