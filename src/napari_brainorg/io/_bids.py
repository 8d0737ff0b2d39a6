"""The BOLD runs of one task in a BIDS data set, their sidecar metadata and their events.

Files are found with nilearn's BIDS helpers (:func:`nilearn.interfaces.bids.get_bids_files`,
:func:`~nilearn.interfaces.bids.parse_bids_filename`), in the raw data set or in one of its
``derivatives/`` folders, with or without ``ses-`` folders. A study selects runs by entity
(subjects, sessions, runs, and any other entity such as ``acq`` or ``desc``); every subject
contributes one run of the task, and a subject with several (sessions, runs) is an error
that names the entity to choose, never a silent pick.

Metadata follow BIDS' inheritance principle, as fMRIPrep and fitlins read them: every
``*_bold.json`` from the data set's top folder down to the run's own folder whose entities
are a subset of the run's applies, deeper and more specific files overriding shallower
ones (for a derivative, the raw data set's sidecars first, then the derivative's). The
run's ``events.tsv`` is the most specific applicable one, wherever it sits.

Re-exported by :mod:`napari_brainorg.io.fmri`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import FMRIInputError, did_you_mean
from ._images import _as_list

__all__ = ["bids_sidecar_metadata", "find_bids_runs"]


def _label(value, prefix: str) -> str:
    """``"sub-01"`` or ``"01"`` (or ``1``) -> ``"01"``."""
    text = str(value)
    return text[len(prefix) + 1:] if text.startswith(f"{prefix}-") else text


def _same_label(a: str | None, b: str, entity: str) -> bool:
    # run and echo are indices: run-1 and run-01 are the same run
    if a is None:
        return False
    if entity in ("run", "echo") and a.isdigit() and b.isdigit():
        return int(a) == int(b)
    return a == b


def _parse(path) -> dict:
    from nilearn.interfaces.bids import parse_bids_filename

    return parse_bids_filename(str(path))


def _applicable(root: Path, entities: dict, suffix: str, extension: str) -> list[tuple[int, int, Path]]:
    """Files of ``root`` that apply to a file with ``entities`` under BIDS inheritance.

    Returns (depth, number of entities, path) for every ``*_<suffix>.<extension>`` in the
    top folder, the subject's, the session's and the run's modality folder whose
    entities all appear, with the same labels, in ``entities``.
    """
    sub, ses = entities.get("sub"), entities.get("ses")
    folders = [root]
    if sub:
        folders.append(root / f"sub-{sub}")
        if ses:
            folders.append(folders[-1] / f"ses-{ses}")
        folders.append(folders[-1] / "func")
    out = []
    for depth, folder in enumerate(folders):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(f"*_{suffix}.{extension}")) + sorted(folder.glob(f"{suffix}.{extension}")):
            ref = _parse(path)
            if ref["suffix"] != suffix or ref["extension"] != extension:
                continue
            own = {k: v for k, v in ref["entities"].items() if v is not None}
            if all(_same_label(entities.get(k), v, k) for k, v in own.items()):
                out.append((depth, len(own), path))
    return out


def bids_sidecar_metadata(bold, raw_root, derivative_root=None) -> tuple[dict[str, Any], list[str]]:
    """The metadata of one BOLD run, merged from its JSON sidecars (BIDS inheritance).

    Parameters
    ----------
    bold : path
        The run (raw, or a derivative whose name keeps the raw entities).
    raw_root : path
        The raw data set's top folder.
    derivative_root : path, optional
        The derivative's top folder when ``bold`` is a derivative: its sidecars override
        the raw data set's.

    Returns
    -------
    metadata : dict
        Every key of the applicable sidecars; deeper and more specific ones win.
    sidecars : list of str
        The files read, in the order they were applied.

    Raises
    ------
    FMRIInputError
        A sidecar that is not valid JSON (named).
    """
    entities = {k: v for k, v in _parse(bold)["entities"].items() if v is not None}
    found = [(0, *t) for t in _applicable(Path(raw_root), entities, "bold", "json")]
    if derivative_root is not None:
        found += [(1, *t) for t in _applicable(Path(derivative_root), entities, "bold", "json")]
    metadata: dict[str, Any] = {}
    read = []
    for *_, path in sorted(found):
        try:
            values = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FMRIInputError(f"BIDS sidecar {str(path)!r} cannot be read as JSON ({type(exc).__name__}: "
                                 f"{exc}); expected the run's metadata, e.g. {{\"RepetitionTime\": 1.5}}.") from None
        if not isinstance(values, dict):
            raise FMRIInputError(f"BIDS sidecar {str(path)!r} holds a {type(values).__name__}; expected a JSON "
                                 "object of metadata, e.g. {\"RepetitionTime\": 1.5}.")
        metadata.update(values)
        read.append(str(path))
    return metadata, read


def _events_file(bold, raw_root: Path, derivative_root: Path | None) -> str | None:
    """The most specific ``events.tsv`` that applies to ``bold`` (raw data set, then derivative)."""
    entities = {k: v for k, v in _parse(bold)["entities"].items() if v is not None}
    found = [(0, *t) for t in _applicable(raw_root, entities, "events", "tsv")]
    if derivative_root is not None:
        found += [(1, *t) for t in _applicable(derivative_root, entities, "events", "tsv")]
    if not found:
        return None
    # the deepest folder, then the most entities; a derivative's own copy wins a tie
    best = max(found, key=lambda t: (t[1], t[2], t[0]))
    return str(best[3])


def _bold_files(base: Path, task: str | None, space: str | None) -> list[dict]:
    """Every BOLD NIfTI under ``base`` (optionally of one task and space), parsed."""
    from nilearn.interfaces.bids import get_bids_files

    filters = []
    if task is not None:
        filters.append(("task", task))
    if space is not None:
        filters.append(("space", space))
    files = []
    for ext in ("nii.gz", "nii"):
        files += get_bids_files(base, file_tag="bold", file_type=ext, modality_folder="func", filters=filters)
    return [_parse(p) for p in sorted(set(files))]


def _select(refs: list[dict], entity: str, wanted, task: str, option: str) -> list[dict]:
    """Keep the runs whose ``entity`` is one of ``wanted`` (None: all); unknown labels are an error."""
    if wanted is None:
        return refs
    wanted = [_label(w, entity) for w in _as_list(wanted)]
    have = sorted({r["entities"].get(entity) or "" for r in refs} - {""})
    missing = [w for w in wanted if not any(_same_label(h, w, entity) for h in have)]
    if missing:
        if entity == "sub":
            raise FMRIInputError(
                f"Subjects {[f'sub-{m}' for m in missing]} have no run of task {task!r}; available: "
                f"{[f'sub-{h}' for h in have]}.")
        raise FMRIInputError(
            f"{option!r} {missing} match no run of task {task!r}; its runs have {entity}-labels {have}.")
    return [r for r in refs if any(_same_label(r["entities"].get(entity), w, entity) for w in wanted)]


def _run_key(ref: dict) -> str:
    ents = ref["entities"]
    parts = [f"{e}-{ents[e]}" for e in ("ses", "acq", "ce", "rec", "dir", "run", "echo", "part") if ents.get(e)]
    return "_".join(parts) or "(no session or run entity)"


def _one_file_per_run(sub: str, key: str, files: list[dict]) -> dict:
    """One BOLD file for one run: several derivatives of it must differ by an entity chosen."""
    if len(files) == 1:
        return files[0]
    clean = [f for f in files if f["entities"].get("desc") == "clean"]
    if len(clean) == 1:  # the Narratives derivatives: the cleaned run beside its sources
        return clean[0]
    names = [f["file_basename"] for f in files]
    entities = sorted({e for f in files for e in f["entities"]})
    differ = {e: sorted({str(f["entities"].get(e)) for f in files}) for e in entities
              if len({f["entities"].get(e) for f in files}) > 1}
    raise FMRIInputError(
        f"sub-{sub} {key}: several BOLD files match {names}; they differ in {differ}: choose one with "
        "'entities' (fmri.bids.entities, e.g. {" + ", ".join(f"{e}: {v[0]}" for e, v in list(differ.items())[:1])
        + "}) or narrow 'space'.")


def find_bids_runs(bids_root, task: str, *, subjects=None, sessions=None, runs=None,
                   entities: dict[str, str] | None = None, derivative: str | None = "afni-nosmooth",
                   space: str | None = "MNI152NLin2009cAsym") -> list[dict[str, Any]]:
    """Find one BOLD run per subject of one task in a BIDS data set.

    Looks for ``[derivatives/<derivative>/]sub-*/[ses-*/]func/sub-*_task-<task>*_bold.nii[.gz]``
    (``derivative=None``: the raw data set), with ``space-<space>`` for derivatives.

    Parameters
    ----------
    bids_root : path
        The raw data set's top folder.
    task : str
        The story, e.g. ``"pieman"``.
    subjects, sessions, runs : list of str, optional
        Labels to keep, with or without their prefix (``"001"`` or ``"sub-001"``,
        ``"1"`` or ``"ses-1"``; run ``1`` and ``01`` are the same run); default every one.
    entities : dict of str to str, optional
        Other entities a run must have, e.g. ``{"acq": "mb4"}`` or ``{"desc": "preproc"}``.
    derivative : str or None
        Folder under ``derivatives/``; None for the raw runs.
    space : str or None
        Required ``space-`` entity of derivative files (ignored for raw data).

    Returns
    -------
    list of dict
        One per subject, sorted: ``subject`` and ``participant`` (``sub-001``),
        ``session`` and ``run`` (str or None), ``bold`` (path), ``events`` (path of the
        applicable ``events.tsv`` or None), ``tr`` (``RepetitionTime`` of the sidecars,
        s, or None), ``sidecars`` (the JSON files read).

    Raises
    ------
    FMRIInputError
        No run of the task; a subject, session or run asked for that is not there; a
        subject with several runs of the task (the message names the entities and their
        labels, to choose with ``sessions``, ``runs`` or ``entities``); several files
        for one run; a sidecar that is not JSON.
    """
    root = Path(bids_root)
    if not root.is_dir():
        raise FileNotFoundError(f"BIDS folder {str(root)!r} does not exist.")
    base, derivative_root = _data_folder(root, derivative)
    if not derivative:
        space = None
    refs = _bold_files(base, task, space)
    if not refs:
        tasks = sorted({r["entities"]["task"] for r in _bold_files(base, None, None) if r["entities"].get("task")})
        raise FMRIInputError(
            f"No BOLD runs of task {task!r}" + (f" in space {space!r}" if space else "")
            + f" under {str(base)!r}; tasks found there: {tasks}." + did_you_mean(task, tasks))
    refs = _select(refs, "sub", subjects, task, "subjects")
    refs = _select(refs, "ses", sessions, task, "sessions")
    refs = _select(refs, "run", runs, task, "runs")
    for entity, label in (entities or {}).items():
        refs = _select(refs, str(entity), [label], task, f"entities.{entity}")
    by_subject: dict[str, dict[str, list[dict]]] = {}
    for ref in refs:
        by_subject.setdefault(ref["entities"]["sub"], {}).setdefault(_run_key(ref), []).append(ref)
    out = []
    for sub in sorted(by_subject):
        per_run = by_subject[sub]
        if len(per_run) > 1:
            raise FMRIInputError(_several_runs_message(sub, task, per_run))
        key, files = next(iter(per_run.items()))
        ref = _one_file_per_run(sub, key, files)
        metadata, sidecars = bids_sidecar_metadata(ref["file_path"], root, derivative_root)
        tr = metadata.get("RepetitionTime")
        out.append({
            "subject": f"sub-{sub}", "participant": f"sub-{sub}", "session": ref["entities"].get("ses"),
            "run": ref["entities"].get("run"), "bold": str(ref["file_path"]),
            "events": _events_file(ref["file_path"], root, derivative_root),
            "tr": float(tr) if isinstance(tr, (int, float)) and not isinstance(tr, bool) else None,
            "sidecars": sidecars,
        })
    return out


def _data_folder(root: Path, derivative: str | None) -> tuple[Path, Path | None]:
    """The folder the runs are in: the raw data set, or its ``derivatives/<derivative>``."""
    if not derivative:
        return root, None
    base = root / "derivatives" / derivative
    if not base.is_dir():
        present = sorted(p.name for p in (root / "derivatives").glob("*") if p.is_dir())
        raise FMRIInputError(
            f"'derivative' {derivative!r} is not in {str(root / 'derivatives')!r}; found {present}. "
            "Pass derivative=None (fmri.bids.derivative: null) for the raw runs.")
    return base, base


def _several_runs_message(sub: str, task: str, per_run: dict[str, list[dict]]) -> str:
    refs = [files[0] for files in per_run.values()]
    varying = {e: sorted({r["entities"].get(e) or "" for r in refs} - {""})
               for e in ("ses", "run", "acq", "ce", "rec", "dir", "echo", "part")}
    varying = {e: v for e, v in varying.items() if len({r["entities"].get(e) for r in refs}) > 1}
    option = {"ses": "sessions", "run": "runs"}
    how = " and ".join(f"'{option.get(e, 'entities')}' ({e}-labels {v})" for e, v in varying.items())
    return (f"sub-{sub} has {len(per_run)} runs of task {task!r} ({', '.join(sorted(per_run))}); every subject "
            f"contributes one run (the same person twice is not two subjects): choose with {how} in fmri.bids.")
