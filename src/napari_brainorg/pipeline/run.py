"""Config -> ordered steps -> artifacts in a result folder.

Each step is a module of :mod:`napari_brainorg.pipeline.steps` that says what it reads,
what it writes and what its cache key covers; each is stamped in
``OUT/.cache/<step>.json`` with its key and the checksums of the files it wrote, so a
re-run recomputes exactly what changed (:class:`~.context.StepContext`). A run holds the
folder's lock, removes ``summary.json`` first and writes it last, so an interrupted
folder reads as incomplete. The order:

1. ``story``       read the timed words, place them in volumes; nuisance regressors
2. ``features``    AN responses per model
3. ``atoms``       sparse dictionary per model; ``top_words``: each atom's strongest words
4. ``fmri``        load the subjects' fMRI (before anything else: bad data stops the run
                   first), or ``simulation``: labelled simulated subjects
5. ``baselines``   phase-randomised atoms, an untrained twin, the nuisance regressors
6. ``encoding``    per model and subject, then the group maps (:mod:`.execution` runs the
                   subjects' tasks in parallel when asked)
7. ``networks``    atom maps vs each atlas: association tables; FDR across models
8. ``report``      figures and summary, models compared, recovery of planted truth,
                   baselines compared, provenance
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from .. import __version__
from .._progress import CancelToken, ProgressCallback, check_cancel, report
from ..errors import ConfigError
from ..io.results import SUMMARY, ResultFolder, ResultWriter, RunLock
from .config import PipelineConfig, config_to_yaml
from .context import StepContext, atlas_slug, baseline_slugs, clear_output, model_slug
from .execution import _model_task, encoding_tasks, networks_tasks
from .steps.atoms import step_atoms
from .steps.baselines import step_baselines
from .steps.comparison import compare_baselines, compare_models, region_results
from .steps.encoding import NUISANCE_ONLY, step_encoding
from .steps.features import step_features
from .steps.fmri import step_fmri
from .steps.networks import (annotate_atoms_table, fdr_across_models, load_atlases, network_readouts,
                             network_sensitivity, step_networks)
from .steps.recovery import score_recovery
from .steps.report import describe_outputs, encoding_scheme, headlines, say_verdict, step_report, write_provenance
from .steps.simulation import driving_model, planting_of, step_simulation
from .steps.story import step_story
from .steps.top_words import step_top_words
from .study import set_map_space
from .validate import validate_config

_log = logging.getLogger(__name__)


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
            report(progress, "report.html", 0, 1)
            _log.info("report: %s (%d warning(s) recorded)", write_report(result, cancel=cancel), len(caught))
            report(progress, "report.html", 1, 1)
            return result
    finally:
        executor.close()


def peak_rss_gb() -> float | None:
    """This process's peak resident memory so far, in GB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak * 1024 / 2**30  # bytes on macOS, KiB on Linux


class _Timer:
    """Each step's wall time and CPU time (all threads), summed over models, in
    ``ctx.timings`` and ``ctx.cpu_times`` (and the log), and
    where the process's peak memory rose: ``ctx.peak_memory`` maps a step to the peak RSS
    (GB) it raised the process to, so the step that sets the run's peak is the largest."""

    def __init__(self, ctx: StepContext):
        self.ctx = ctx

    def __call__(self, name, fn, *args):
        t, cpu = time.perf_counter(), time.process_time()
        before = peak_rss_gb()
        _log.debug("step %s: start", name)
        out = fn(*args)
        self.ctx.timings[name] = self.ctx.timings.get(name, 0.0) + time.perf_counter() - t
        self.ctx.cpu_times[name] = self.ctx.cpu_times.get(name, 0.0) + time.process_time() - cpu
        after = peak_rss_gb()
        if after is not None and before is not None and after > before + 1e-3:
            self.ctx.peak_memory.pop(name, None)  # in the order the peak rose (a step runs once per model)
            self.ctx.peak_memory[name] = round(after, 3)
        _log.info("step %s: done in %.1f s (peak memory %s GB)", name, time.perf_counter() - t,
                  "?" if after is None else f"{after:.2f}")
        return out


def _run_locked(config: PipelineConfig, writer: ResultWriter, progress, cancel,
                caught: list[dict] | None = None, *, executor=None, subjects: list[str] | None = None,
                merge: bool = False, release=None):
    """The steps, in order, with the folder's lock held (``release`` gives it back early:
    a part of a run split by ``subjects`` encodes them without the lock)."""
    ctx = StepContext(config, writer, progress, cancel)
    timed = _Timer(ctx)
    distributed = executor is not None and executor.name != "sequential"
    t0 = time.perf_counter()
    data = truth = None
    if config.fmri.simulate is None:
        # the user's fMRI is read (and checked: NaN, damaged files...) before any model
        # runs and before anything of an earlier result is touched
        data = timed("fmri", step_fmri, ctx)
    _start_run(ctx)
    writer.write_text("config.yaml", config_to_yaml(config))
    words = timed("story", step_story, ctx)
    per_model, planting = _model_steps(ctx, timed, words, executor if distributed else None)
    check_cancel(cancel)
    if data is None:
        data, truth = timed("fmri", step_simulation, ctx, planting)
    set_map_space(ctx, data)
    baselines = timed("baselines", step_baselines, ctx, per_model,
                      lambda model: _learn_untrained(ctx, words, model))
    n_real = len(per_model)
    per_model.update(baselines)
    if distributed or subjects is not None or merge:
        written = timed("tasks: encoding", encoding_tasks, ctx, executor, data, per_model, subjects, merge,
                        release)
        if subjects is not None:
            return written
    atlases = load_atlases(ctx, data)
    _encoding_and_networks(ctx, timed, data, per_model, atlases, executor if distributed else None)
    models = dict(list(per_model.items())[:n_real])
    fdr_across_models(ctx, models)
    for slug in list(per_model)[n_real:]:  # each baseline corrected alone
        fdr_across_models(ctx, {slug: per_model[slug]}, baseline=True)
    timed("network readouts", network_readouts, ctx, data, per_model, atlases)
    timed("network sensitivity", network_sensitivity, ctx, data, per_model, atlases)
    for slug, res in per_model.items():
        annotate_atoms_table(ctx, slug, res["tables"], res["codes"], res["index"], res["atoms"])
    timed("report", _report_steps, ctx, per_model, truth)
    check_cancel(cancel)
    if baselines:
        compare_baselines(ctx, models, baselines)
    region_results(ctx, data, per_model, baselines)
    check_cancel(cancel)
    ctx.summary["headline"] = headlines(ctx, data.kind)
    ctx.summary["verdict"] = say_verdict(ctx)
    ctx.summary["encoding_scheme"] = encoding_scheme(ctx)
    _finish_summary(ctx, models, baselines, truth, t0)
    write_provenance(ctx, executor, merge)
    describe_outputs(ctx, list(caught or []))
    writer.write_json(SUMMARY, ctx.summary)  # last: a folder without it is incomplete
    return ResultFolder(writer.path)


def _model_steps(ctx: StepContext, timed, words, executor=None) -> tuple[dict[str, dict], dict | None]:
    """Features, atoms and top words of every model (on ``executor``'s workers first when
    there are several models; the loop then reads their outputs back).

    Returns each model's results and, for simulated data, what the driving model's
    planted sources are made from."""
    config = ctx.config
    driving = driving_model(config) if config.fmri.simulate is not None else None
    if executor is not None and len(config.features.models) > 1:
        timed("tasks: models", lambda: executor.map(
            _model_task, [(config, str(ctx.out), m, ctx.keys["story"], words, ctx.runs)
                          for m in config.features.models],
            stage="features and atoms (model tasks)", progress=ctx.progress, cancel=ctx.cancel))
    per_model: dict[str, dict] = {}
    planting = None
    for model in config.features.models:
        slug = model_slug(model)
        ans = timed("features", step_features, ctx, words, model)
        check_cancel(ctx.cancel)
        atoms, codes, index = timed("atoms", step_atoms, ctx, ans, slug)
        timed("top words", step_top_words, ctx, words, model, slug, codes, index)
        if slug == driving:
            planting = planting_of(ctx, slug, ans, atoms, codes)
        per_model[slug] = {"model": model, "atoms": atoms, "codes": codes, "index": index,
                           "n_ans": ans.responses.shape[1], "dropped": len(ans.dropped),
                           "an": (ans.responses, ans.index["layer"].to_numpy()) if config.encoding.baseline else None}
    return per_model, planting


def _learn_untrained(ctx: StepContext, words, model: str):
    """The untrained twin of ``model`` through the features and atoms steps (its baseline)."""
    slug = baseline_slugs(ctx.config)["untrained"]
    ans = step_features(ctx, words, model, untrained_seed=ctx.config.seed)
    return ans, step_atoms(ctx, ans, slug)


def _encoding_and_networks(ctx: StepContext, timed, data, per_model: dict, atlases: dict, executor=None) -> None:
    """Every model's group encoding and network tables (``res["group"]``, ``res["tables"]``).
    On a cluster with voxel data, every model's group maps come first, then each model's
    network tests run on a worker."""
    if executor is not None and data.kind == "voxels" and len(per_model) > 1:
        for slug, res in per_model.items():
            res["group"] = timed("encoding", step_encoding, ctx, data, res["atoms"], slug, res.get("an"))
        timed("tasks: networks", networks_tasks, ctx, executor, data, per_model)
    for slug, res in per_model.items():
        if "group" not in res:
            res["group"] = timed("encoding", step_encoding, ctx, data, res["atoms"], slug, res.get("an"))
        res["tables"] = timed("networks", step_networks, ctx, data, res["group"], slug, res["atoms"], atlases)


def _report_steps(ctx: StepContext, per_model: dict, truth: dict | None) -> None:
    """Figures and results, the models side by side, and (simulated data) the recovery."""
    step_report(ctx, per_model)
    compare_models(ctx, per_model)
    if truth is not None:
        check_cancel(ctx.cancel)
        score_recovery(ctx, per_model, truth)


def _finish_summary(ctx: StepContext, models: dict, baselines: dict, truth: dict | None, t0: float) -> None:
    """The summary's description of the run: models, baselines, grid, timings."""
    config = ctx.config
    ctx.summary.update({
        "napari_brainorg": __version__,
        "models": list(models),
        "model_sources": {s: r["model"] for s, r in models.items()},
        "baselines": {s: r["model"] for s, r in baselines.items()},
        "tr": config.story.tr, "n_volumes": sum(r[1] for r in ctx.runs) or config.story.n_volumes,
        "simulated": bool(truth is not None),
        "atlases": [atlas_slug(a) for a in config.networks.atlases],
        "template": None,
        "timings_s": {k: round(v, 2) for k, v in ctx.timings.items()},
        # CPU seconds of every thread of this process (a step's cores = CPU / wall); a
        # step run on a cluster's workers counts only this process's share
        "cpu_s": {k: round(v, 2) for k, v in ctx.cpu_times.items()},
        # the steps that raised this process's peak resident memory, and to what (GB)
        "peak_memory_gb": dict(ctx.peak_memory),
        "wall_time_s": round(time.perf_counter() - t0, 2),
    })


def _simulate_locked(config: PipelineConfig, writer: ResultWriter, progress, cancel) -> Path:
    """The steps simulated subjects need (story, the driving model's features and atoms,
    the simulation), with the folder's lock held."""
    ctx = StepContext(config, writer, progress, cancel)
    words = step_story(ctx)
    driving = driving_model(config)
    model = next(m for m in config.features.models if model_slug(m) == driving)
    ans = step_features(ctx, words, model)
    atoms, codes, _ = step_atoms(ctx, ans, driving)
    step_simulation(ctx, planting_of(ctx, driving, ans, atoms, codes))
    return writer.path / "simulated"


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


def _start_run(ctx: StepContext) -> None:
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
            if child.is_dir() and child.name not in slugs and f"{top}/{child.name}" != NUISANCE_ONLY:
                stale += [child, out / ".cache" / top / f"{child.name}.json"]
    # BIDS maps (maps/group, maps/sub-XX): those of a model this configuration does not run
    from ..io.results import statmap_model_label

    labels = {statmap_model_label(slug) for slug in slugs}
    for path in sorted((out / "maps").glob("*/*_statmap.*")):
        if _statmap_model(path.name, labels) is None:
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
        clear_output(ctx, str(path.relative_to(out)))


def _statmap_model(name: str, labels: set[str]) -> str | None:
    """The model label of a BIDS map's file name among ``labels`` (``desc-<model>...`` or the
    older ``model-<model>``), or None when it names none of them."""
    for entity in name.split(".")[0].split("_"):
        key, _, value = entity.partition("-")
        if key == "model":
            return value if value in labels else None
        if key == "desc":
            # the longest label that starts the desc ("minilmuntrained" before "minilm"),
            # followed by what the map holds (an upper-case letter)
            for label in sorted(labels, key=len, reverse=True):
                if value.startswith(label) and (len(value) == len(label) or value[len(label)].isupper()):
                    return label
            return None
    return None
