"""BIDS discovery: sessions, runs, entity selection, sidecar inheritance and events."""

from __future__ import annotations

import json

import pytest

from napari_brainorg.errors import FMRIInputError
from napari_brainorg.io.fmri import bids_sidecar_metadata, find_bids_runs


def _touch(path, text=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _two_sessions_two_runs(root):
    """Two subjects, each with sessions 1 and 2 and runs 1 and 2 of 'pieman' (raw data)."""
    for sub in ("01", "02"):
        for ses in ("1", "2"):
            for run in ("1", "2"):
                _touch(root / f"sub-{sub}/ses-{ses}/func/sub-{sub}_ses-{ses}_task-pieman_run-{run}_bold.nii.gz")
        _touch(root / f"sub-{sub}/ses-1/func/sub-{sub}_ses-1_task-rest_bold.nii.gz")
    # inherited: the top folder's sidecar and events apply to every run ...
    _touch(root / "task-pieman_bold.json", json.dumps({"RepetitionTime": 1.5, "TaskName": "pieman"}))
    _touch(root / "task-pieman_events.tsv", "onset\tduration\ttrial_type\n3.0\t400\tstory\n")
    # ... a session's file overrides them for its runs, a subject's for all its runs
    _touch(root / "sub-01/ses-2/sub-01_ses-2_task-pieman_bold.json", json.dumps({"RepetitionTime": 2.0}))
    _touch(root / "sub-02/sub-02_task-pieman_events.tsv", "onset\tduration\ttrial_type\n5.0\t400\tstory\n")
    return root


def test_several_sessions_and_runs_name_the_entities_to_choose(tmp_path):
    root = _two_sessions_two_runs(tmp_path)
    with pytest.raises(FMRIInputError, match=r"sub-01 has 4 runs of task 'pieman' \(ses-1_run-1, ses-1_run-2, "
                                             r"ses-2_run-1, ses-2_run-2\).*'sessions' \(ses-labels \['1', '2'\]\)"
                                             r" and 'runs' \(run-labels \['1', '2'\]\)"):
        find_bids_runs(root, "pieman", derivative=None)
    with pytest.raises(FMRIInputError, match=r"sub-01 has 2 runs .*\(ses-1_run-2, ses-2_run-2\).*'sessions'"):
        find_bids_runs(root, "pieman", derivative=None, runs=["2"])


def test_selection_by_entity_with_inherited_metadata_and_events(tmp_path):
    root = _two_sessions_two_runs(tmp_path)
    runs = find_bids_runs(root, "pieman", derivative=None, sessions=["ses-1"], runs=[2])
    assert [(r["subject"], r["session"], r["run"]) for r in runs] == [("sub-01", "1", "2"), ("sub-02", "1", "2")]
    assert all("ses-1" in r["bold"] and "run-2" in r["bold"] for r in runs)
    assert [r["tr"] for r in runs] == [1.5, 1.5]
    assert runs[0]["sidecars"] == [str(root / "task-pieman_bold.json")]
    # the top folder's events for sub-01, sub-02's own (more specific) events for sub-02
    assert runs[0]["events"] == str(root / "task-pieman_events.tsv")
    assert runs[1]["events"] == str(root / "sub-02/sub-02_task-pieman_events.tsv")
    ses2 = find_bids_runs(root, "pieman", derivative=None, sessions=["2"], runs=["01"], subjects=["01"])
    assert ses2[0]["tr"] == 2.0 and ses2[0]["sidecars"][-1].endswith("sub-01_ses-2_task-pieman_bold.json")
    # a subject without sessions beside subjects with them is found too
    _touch(root / "sub-03/func/sub-03_task-pieman_run-2_bold.nii.gz")
    assert [r["subject"] for r in find_bids_runs(root, "pieman", derivative=None, runs=["2"], sessions=None,
                                                 subjects=["03"])] == ["sub-03"]


def test_selections_that_match_nothing_are_named(tmp_path):
    root = _two_sessions_two_runs(tmp_path)
    with pytest.raises(FMRIInputError, match=r"'sessions' \['3'\] match no run of task 'pieman'; its runs have "
                                             r"ses-labels \['1', '2'\]"):
        find_bids_runs(root, "pieman", derivative=None, sessions=["3"])
    with pytest.raises(FMRIInputError, match=r"Subjects \['sub-09'\] have no run of task 'pieman'; available: "
                                             r"\['sub-01', 'sub-02'\]"):
        find_bids_runs(root, "pieman", derivative=None, subjects=["sub-09"], sessions=["1"], runs=["1"])
    with pytest.raises(FMRIInputError, match=r"'entities.acq' \['mb4'\] match no run"):
        find_bids_runs(root, "pieman", derivative=None, entities={"acq": "mb4"})


def test_derivatives_inherit_the_raw_sidecars_and_several_descs_are_named(tmp_path):
    root = tmp_path
    _touch(root / "task-pieman_bold.json", json.dumps({"RepetitionTime": 1.5}))
    func = root / "derivatives/fmriprep/sub-01/ses-1/func"
    stem = "sub-01_ses-1_task-pieman_space-MNI152NLin6Asym"
    _touch(func / f"{stem}_desc-preproc_bold.nii.gz")
    _touch(func / f"{stem}_desc-smooth_bold.nii.gz")
    _touch(func / f"{stem}_desc-preproc_bold.json", json.dumps({"SkullStripped": False}))
    kwargs = dict(derivative="fmriprep", space="MNI152NLin6Asym")
    with pytest.raises(FMRIInputError, match=r"sub-01 ses-1: several BOLD files match .*differ in "
                                             r"\{'desc': \['preproc', 'smooth'\]\}.*'entities'"):
        find_bids_runs(root, "pieman", **kwargs)
    (run,) = find_bids_runs(root, "pieman", entities={"desc": "preproc"}, **kwargs)
    assert run["tr"] == 1.5 and run["bold"].endswith("desc-preproc_bold.nii.gz")
    metadata, sidecars = bids_sidecar_metadata(run["bold"], root, root / "derivatives/fmriprep")
    assert metadata == {"RepetitionTime": 1.5, "SkullStripped": False} and len(sidecars) == 2


def test_a_sidecar_that_is_not_json_is_named(tmp_path):
    _touch(tmp_path / "sub-01/func/sub-01_task-pieman_bold.nii.gz")
    bad = _touch(tmp_path / "sub-01/func/sub-01_task-pieman_bold.json", "{RepetitionTime: 1.5")
    with pytest.raises(FMRIInputError, match=rf"BIDS sidecar '{bad}' cannot be read as JSON"):
        find_bids_runs(tmp_path, "pieman", derivative=None)
