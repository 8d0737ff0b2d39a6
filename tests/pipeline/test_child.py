"""The pipeline in a child process: same outcome and errors as in-process, progress relayed, cancel."""

import threading

import pytest

from napari_brainorg.errors import CancelledError, StoryFormatError
from napari_brainorg.pipeline import make_config
from napari_brainorg.pipeline.child import _exception, run_pipeline_in_process


def test_error_classes_come_back_by_name():
    assert type(_exception("StoryFormatError", "x.csv line 3")) is StoryFormatError
    assert type(_exception("FileNotFoundError", "gone")) is FileNotFoundError
    unknown = _exception("SomethingElse", "boom")
    assert type(unknown) is RuntimeError and "SomethingElse: boom" in str(unknown)


def test_a_failing_run_raises_the_same_error_with_its_file(tmp_path):
    missing = tmp_path / "no_such_story.tsv"
    config = make_config({"story": {"path": str(missing), "tr": 1.5, "n_volumes": 40},
                          "out": str(tmp_path / "out")})
    with pytest.raises(FileNotFoundError, match="no_such_story.tsv"):
        run_pipeline_in_process(config)


def test_a_cancelled_run_raises_cancelled_and_reports_progress_first(tmp_path):
    config = make_config({"story": {"path": "pieman", "tr": 1.5, "n_volumes": 40},
                          "features": {"models": ["minilm"]}, "atoms": {"n_atoms": 4},
                          "fmri": {"simulate": {"n_subjects": 2, "resolution_mm": 8.0}},
                          "out": str(tmp_path / "out")})
    cancel = threading.Event()
    stages = []

    def progress(stage, done, total):
        stages.append(stage)
        cancel.set()  # cancel at the first report: the child stops at its next checkpoint

    with pytest.raises(CancelledError):
        run_pipeline_in_process(config, progress=progress, cancel=cancel)
    assert stages  # the child's reports reached this process
    assert not (tmp_path / "out" / "summary.json").exists()
