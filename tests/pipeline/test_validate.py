"""validate_config: checks that need no model (the CLI matrix covers the errors)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))
import _tiny_study as tiny  # noqa: E402

from napari_brainorg.errors import StoryTimingWarning  # noqa: E402
from napari_brainorg.pipeline import load_config  # noqa: E402
from napari_brainorg.pipeline.validate import validate_config  # noqa: E402


@pytest.fixture
def study(tmp_path):
    tiny.make_study(tmp_path)
    return tmp_path


def test_a_valid_study_passes_and_counts_its_words(study, recwarn):
    facts = validate_config(load_config(study / "study.yaml"))
    assert facts["n_words"] == facts["n_words_in_scan"] == len(tiny.story_rows())
    assert not [w for w in recwarn if issubclass(w.category, StoryTimingWarning)]


def test_more_than_ten_percent_of_words_outside_the_scan_warns(study):
    rows = tiny.story_rows()
    tiny.write_story(study / "story.tsv", rows + [(w, a + 100, b + 100) for w, a, b in rows[:30]])
    with pytest.warns(StoryTimingWarning, match=r"story.tsv.*30 of 177 words \(17 %\) fall outside"):
        validate_config(load_config(study / "study.yaml"))


# --------------------------------------------------------------------------- BIDS, duplicates, stories

TWO_BY_TWO = {sub: [(ses, "pieman", run) for ses in ("1", "2") for run in ("1", "2")] for sub in ("01", "02")}


@pytest.fixture
def bids_study(tmp_path):
    tiny.make_bids_study(tmp_path, TWO_BY_TWO)
    return tmp_path


def test_a_bids_study_selects_one_run_per_subject_by_session_and_run(bids_study):
    from napari_brainorg.errors import FMRIInputError
    from napari_brainorg.pipeline.validate import bids_runs, study_subjects

    with pytest.raises(FMRIInputError, match=r"fmri.bids '.*bids': sub-01 has 4 runs of task 'pieman' "
                                             r"\(ses-1_run-1, ses-1_run-2, ses-2_run-1, ses-2_run-2\).*"
                                             r"'sessions' \(ses-labels \['1', '2'\]\) and 'runs'"):
        validate_config(load_config(bids_study / "study.yaml"))
    tiny.edit_config(bids_study, fmri={"bids": {"root": "bids", "task": "pieman", "derivative": None,
                                                "sessions": [2], "runs": ["run-1"]}, "mask": "mask.nii.gz"})
    config = load_config(bids_study / "study.yaml")
    validate_config(config)
    (runs,) = bids_runs(config).values()
    assert [Path(r["bold"]).name for r in runs] == ["sub-01_ses-2_task-pieman_run-1_bold.nii.gz",
                                                   "sub-02_ses-2_task-pieman_run-1_bold.nii.gz"]
    assert [r["tr"] for r in runs] == [1.5, 1.5] and runs[0]["events"].endswith("task-pieman_events.tsv")
    assert study_subjects(config) == ["sub-01", "sub-02"]


def test_the_sidecars_repetition_time_must_be_the_story_tr(bids_study):
    from napari_brainorg.errors import FMRIInputError

    tiny.edit_config(bids_study, story__tr=2.0,
                     fmri={"bids": {"root": "bids", "task": "pieman", "derivative": None, "sessions": ["1"],
                                    "runs": ["1"]}, "mask": "mask.nii.gz"})
    with pytest.raises(FMRIInputError, match=r"fmri.bids: sub-01_ses-1_task-pieman_run-1_bold.nii.gz has "
                                             r"RepetitionTime 1.5 s in its sidecar '.*task-pieman_bold.json'; "
                                             r"story.tr is 2 s"):
        validate_config(load_config(bids_study / "study.yaml"))


def test_the_same_run_twice_or_a_copy_is_refused_naming_both(study):
    import shutil

    from napari_brainorg.errors import FMRIInputError

    tiny.edit_config(study, fmri__images=["sub-01_bold.nii.gz", "sub-01_bold.nii.gz"])
    with pytest.raises(FMRIInputError, match=r"fmri.images\[1\] '.*sub-01_bold.nii.gz' is fmri.images\[0\] "
                                             r"'.*sub-01_bold.nii.gz' listed again"):
        validate_config(load_config(study / "study.yaml"))
    shutil.copy(study / "sub-01_bold.nii.gz", study / "sub-03_bold.nii.gz")
    tiny.edit_config(study, fmri__images=["sub-01_bold.nii.gz", "sub-03_bold.nii.gz"])
    with pytest.raises(FMRIInputError, match=r"fmri.images\[1\] '.*sub-03_bold.nii.gz' is byte-identical to "
                                             r"fmri.images\[0\] '.*sub-01_bold.nii.gz'"):
        validate_config(load_config(study / "study.yaml"))


@pytest.mark.parametrize("rows, needle", [
    ([("once", 1.0, 1.3), ("upon", 1.4, 1.7), ("time", 1.8, 2.1)], r"only 3 word\(s\) fall in the scan"),
    ([("\U0001f600", 1.0 + i, 1.5 + i) for i in range(30)], r"30 of 30 words have no letter or digit.*\[UNK\]"),
])
def test_a_story_of_a_few_words_or_of_emoji_is_refused(study, rows, needle):
    from napari_brainorg.errors import ConfigError

    tiny.write_story(study / "story.tsv", rows)
    with pytest.raises(ConfigError, match=r"story.path '.*story.tsv': " + needle):
        validate_config(load_config(study / "study.yaml"))


def test_a_scan_much_longer_than_the_story_or_a_story_before_it_warns(study):
    tiny.edit_config(study, story__n_volumes=1000, atoms__n_atoms=4)
    for sub in ("01", "02"):
        tiny.write_run(study / f"sub-{sub}_bold.nii.gz", int(sub), n_volumes=1000, shape=(4, 4, 4))
    tiny.edit_config(study, fmri={"images": ["sub-01_bold.nii.gz", "sub-02_bold.nii.gz"]})
    with pytest.warns(StoryTimingWarning, match=r"the words fill 1.0-5\d.\d s of a 1500.0 s scan \(story.n_volumes "
                                                r"1000 x story.tr 1.5\); 9\d % of the volumes hear no word"):
        validate_config(load_config(study / "study.yaml"))
    tiny.edit_config(study, story__n_volumes=40, story__onset=-20.0, fmri={"simulate": {"n_subjects": 2}})
    with pytest.warns(StoryTimingWarning, match=r"words \(\d+ %\) fall outside the scan \(\d+ before it starts, "
                                                r"0 after it ends.*onset -20 s"):
        validate_config(load_config(study / "study.yaml"))


def test_no_sparsity_and_folds_of_a_few_volumes_are_warned(study):
    from napari_brainorg.errors import ConfigWarning

    tiny.edit_config(study, atoms__alpha=0)
    with pytest.warns(ConfigWarning, match=r"atoms.alpha 0: the AN codes are not sparse"):
        validate_config(load_config(study / "study.yaml"))
    tiny.edit_config(study, atoms__alpha=0.15, encoding__n_folds=8)
    with pytest.warns(ConfigWarning, match=r"encoding.n_folds 8 leaves test blocks of 5 volumes of 40"):
        validate_config(load_config(study / "study.yaml"))


def test_region_tables_by_a_glob_pattern_sorted(study):
    import numpy as np

    rng = np.random.default_rng(0)
    for i in (2, 1):
        np.savetxt(study / f"s{i}.txt", rng.normal(size=(40, 5)))
    tiny.edit_config(study, fmri={"regions": ["s*.txt"]})
    config = load_config(study / "study.yaml")
    assert [Path(p).name for p in config.fmri.regions] == ["s1.txt", "s2.txt"]
    validate_config(config)
    tiny.edit_config(study, fmri={"regions": ["t*.txt"]})
    from napari_brainorg.errors import ConfigError

    with pytest.raises(ConfigError, match=r"fmri.regions: the pattern '.*t\*.txt' matches no file"):
        load_config(study / "study.yaml")
