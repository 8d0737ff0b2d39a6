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
