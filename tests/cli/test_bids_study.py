"""A study run from a BIDS data set: two sessions, two runs, inherited sidecars and events.

Each subject heard 'pieman' in session 1 (run 1) and 'lucy' in session 2 (run 2); the
tasks' RepetitionTime and events sit once in the data set's top folder, inherited by
every run. The runs are tiny random NIfTI (`_tiny_study`), the model the bundled MiniLM.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_study as tiny  # noqa: E402

pytestmark = pytest.mark.slow

RUNS = {sub: [("1", "pieman", "1"), ("2", "lucy", "2")] for sub in ("01", "02")}


def test_a_study_runs_from_a_bids_tree_with_sessions_runs_and_inherited_metadata(tmp_path):
    tiny.make_bids_study(tmp_path, RUNS)
    story = {"path": "story.tsv", "tr": tiny.TR, "n_volumes": tiny.N_VOLUMES}
    tiny.edit_config(tmp_path, story=None, stories=[{**story, "name": "pieman"}, {**story, "name": "lucy"}],
                     fmri={"bids": {"root": "bids", "task": {"pieman": "pieman", "lucy": "lucy"},
                                    "derivative": None}, "mask": "mask.nii.gz"})
    check = tiny.brainorg(["config", "--check", "study.yaml"], cwd=tmp_path)
    assert check.returncode == 0, check.stderr[-3000:]
    done = tiny.brainorg(["run", "study.yaml", "--quiet"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "result/summary.json").read_text())
    fmri = summary["fmri"]
    assert fmri["subjects"] == ["sub-01", "sub-02"]
    assert [r["story"] for r in fmri["runs"]] == ["pieman", "lucy"]
    assert "ses-1_task-pieman_run-1_bold" in fmri["sources"][0] and "ses-2_task-lucy_run-2_bold" in fmri["sources"][0]
    # the sidecar's RepetitionTime is checked against the stories' tr before anything runs
    tiny.edit_config(tmp_path, stories=[{**story, "name": "pieman", "tr": 2.0}, {**story, "name": "lucy"}])
    bad = tiny.brainorg(["run", "study.yaml", "--quiet"], cwd=tmp_path)
    assert bad.returncode == 2
    assert "RepetitionTime 1.5 s in its sidecar" in bad.stderr and "task-pieman_bold.json" in bad.stderr
