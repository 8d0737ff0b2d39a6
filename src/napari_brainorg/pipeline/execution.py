"""Where the steps' tasks run: in this process, or as Dask tasks (:mod:`.tasks`).

A task takes the configuration, the folder and the arrays, writes its artifacts and
returns their names; the run that submitted it holds the folder's lock and reads the
artifacts back through the same cached steps. A run split by subjects
(:func:`~napari_brainorg.pipeline.run.run_subjects`) encodes its subjects here, each under
a lock of its own; the merge refuses subjects that are missing or still being encoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, FolderInUseError
from ..io.results import ResultWriter
from .config import PipelineConfig
from .context import StepContext, model_slug, subject_file_name
from .steps.atoms import step_atoms
from .steps.encoding import SubjectTask, encode_subject, encoding_key_parts, encoding_outputs, subject_tasks
from .steps.features import step_features
from .steps.networks import step_networks
from .steps.top_words import step_top_words
from .study import encoding_confounds


# Functions a worker runs (see .tasks): they take the configuration, the folder and the
# arrays, write their artifacts and return names; the run that submitted them holds the
# folder's lock and reads the artifacts back through the same cached steps.
def _task_context(config: PipelineConfig, out: str, keys: dict | None = None) -> StepContext:
    """A worker's context: no progress, no cancellation, the upstream keys it needs."""
    return StepContext(config, ResultWriter(out), None, None, keys=dict(keys or {}))


def _model_task(config: PipelineConfig, out: str, model: str, story_key: str, words, runs) -> str:
    """Features, atoms and top words of one model -> their folders (``words`` and ``runs``:
    the story step's, one entry per story)."""
    ctx = _task_context(config, out, {"story": story_key})
    ctx.runs = list(runs)
    slug = model_slug(model)
    ans = step_features(ctx, words, model)
    _, codes, index = step_atoms(ctx, ans, slug)
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
    step_networks(ctx, data, group, slug, atoms)
    return slug


def networks_tasks(ctx: StepContext, executor, data, per_model: dict) -> None:
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


def encoding_tasks(ctx: StepContext, executor, data, per_model: dict, subjects: list[str] | None, merge: bool,
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
        if subjects is None and ctx.cached(f"encoding/{slug}", encoding_key_parts(ctx, slug),
                                           encoding_outputs(ctx, slug, data.kind)):
            continue
        for task, Y in zip(subject_tasks(ctx, data, slug, warn=False), data.data):
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
            for task in subject_tasks(ctx, data, slug, warn=False)
            if subjects is None or task.subject in subjects]


def _run_encoding_tasks(ctx: StepContext, executor, per_model: dict, todo: list) -> None:
    """Run the encoding tasks ``todo`` [(slug, task, Y), ...]: one by one here, or on
    ``executor``'s workers with the large arrays sent once each."""
    stage = "encoding (subject tasks)"
    confounds = {slug: encoding_confounds(ctx, slug) for slug in {slug for slug, _, _ in todo}}
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
