"""The BOLD runs of one task in a BIDS folder (the Narratives layout), and their events.

Re-exported by :mod:`napari_brainorg.io.fmri`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import FMRIInputError, did_you_mean
from ._images import _as_list

__all__ = ["find_bids_runs"]


def find_bids_runs(bids_root, task: str, *, subjects=None, derivative: str | None = "afni-nosmooth",
                   space: str | None = "MNI152NLin2009cAsym") -> list[dict[str, Any]]:
    """Find the BOLD runs of one task in a BIDS folder (Narratives layout).

    Looks for ``derivatives/<derivative>/sub-*/func/sub-*_task-<task>[_run-*]_space-<space>*_bold.nii[.gz]``
    (``derivative=None``: the raw ``sub-*/func/sub-*_task-<task>[_run-*]_bold.nii[.gz]``),
    and beside each the raw ``events.tsv`` that says where the story starts.

    Parameters
    ----------
    bids_root : path
    task : str
        The story, e.g. ``"pieman"``.
    subjects : list of str, optional
        ``"001"`` or ``"sub-001"``; default every subject with the task.
    derivative : str or None
    space : str or None
        Required ``space-`` entity of derivative files (ignored for raw data).

    Returns
    -------
    list of dict
        One per run, sorted: ``subject`` (unique label: ``sub-001``, or
        ``sub-001_run-2`` when a subject has several runs), ``participant``,
        ``run`` (str or None), ``bold`` (path), ``events`` (path or None).
    """
    root = Path(bids_root)
    if not root.is_dir():
        raise FileNotFoundError(f"BIDS folder {str(root)!r} does not exist.")
    if derivative:
        base = root / "derivatives" / derivative
        if not base.is_dir():
            present = sorted(p.name for p in (root / "derivatives").glob("*") if p.is_dir())
            raise FMRIInputError(
                f"'derivative' {derivative!r} is not in {str(root / 'derivatives')!r}; found {present}. "
                "Pass derivative=None for the raw runs."
            )
    else:
        base = root
    pattern = re.compile(
        rf"^(sub-[A-Za-z0-9]+)(?:_ses-[A-Za-z0-9]+)?_task-{re.escape(task)}(?:_acq-[A-Za-z0-9]+)?"
        rf"(?:_run-([0-9]+))?_(.*)bold\.nii(\.gz)?$"
    )
    found = []
    for path in sorted(base.glob("sub-*/**/func/*_bold.nii*")) + sorted(base.glob("sub-*/func/*_bold.nii*")):
        m = pattern.match(path.name)
        if not m:
            continue
        rest = m.group(3)
        if derivative and space and f"space-{space}_" not in rest and not rest.startswith(f"space-{space}"):
            continue
        found.append((m.group(1), m.group(2), rest, path))
    found = sorted(set(found), key=lambda t: (t[0], int(t[1] or 0), t[2]))
    if not found:
        tasks = sorted({m.group(1) for p in base.glob("sub-*/**/*_bold.nii*")
                        if (m := re.search(r"_task-([A-Za-z0-9]+)", p.name))})
        raise FMRIInputError(
            f"No BOLD runs of task {task!r}" + (f" in space {space!r}" if derivative and space else "")
            + f" under {str(base)!r}; tasks found there: {tasks}." + did_you_mean(task, tasks)
        )
    by_run: dict[tuple[str, str | None], list] = {}
    for sub, run, rest, path in found:
        by_run.setdefault((sub, run), []).append((rest, path))
    if subjects is not None:
        wanted = [s if str(s).startswith("sub-") else f"sub-{s}" for s in _as_list(subjects)]
        have = sorted({s for s, _ in by_run})
        missing = [s for s in wanted if s not in have]
        if missing:
            raise FMRIInputError(f"Subjects {missing} have no run of task {task!r}; available: {have}.")
        by_run = {k: v for k, v in by_run.items() if k[0] in wanted}
    runs_per_sub: dict[str, int] = {}
    for sub, _ in by_run:
        runs_per_sub[sub] = runs_per_sub.get(sub, 0) + 1
    out = []
    for (sub, run), files in sorted(by_run.items(), key=lambda kv: (kv[0][0], int(kv[0][1] or 0))):
        if len(files) > 1:
            clean = [f for f in files if "desc-clean" in f[0]]
            if len(clean) != 1:
                raise FMRIInputError(
                    f"{sub}{'_run-' + run if run else ''}: several candidate runs "
                    f"{[f[1].name for f in files]}; keep one per run or narrow 'space'."
                )
            files = clean
        bold = files[0][1]
        stem = f"{sub}_task-{task}" + (f"_run-{run}" if run else "")
        ev = [root / sub / "func" / f"{stem}_events.tsv", bold.parent / f"{stem}_events.tsv",
              root / f"task-{task}_events.tsv"]
        events = next((str(p) for p in ev if p.is_file()), None)
        label = sub if runs_per_sub[sub] == 1 else f"{sub}_run-{run}"
        out.append({"subject": label, "participant": sub, "run": run, "bold": str(bold), "events": events})
    return out
