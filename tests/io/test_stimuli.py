"""Story readers on the shipped Narratives files and on broken files."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from napari_brainorg import datasets
from napari_brainorg.errors import ConfigError, FilledTimesWarning, StoryFormatError
from napari_brainorg.io.stimuli import (
    UnsortedWordsWarning,
    WordEvents,
    read_story,
    read_story_onset,
)

STORIES = datasets.list_stories()


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [r for r in csv.reader(f) if r]


def _quiet_read(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FilledTimesWarning)
        return read_story(*args, **kwargs)


# --------------------------------------------------------------------- shipped files


def test_sixteen_stories_are_bundled():
    assert len(STORIES) == 16
    assert {"pieman", "black", "sherlock", "notthefallintact", "slumlordreach"} <= set(STORIES)


@pytest.mark.parametrize("story", STORIES)
def test_every_bundled_story_loads_with_its_row_count(story):
    path = datasets.story_path(story)
    rows = _rows(path)
    missing = sum(1 for r in rows if not r[2].strip() or not r[3].strip())
    if missing:
        with pytest.warns(FilledTimesWarning, match=rf"filled {missing} of {len(rows)} word times"):
            events = read_story(story)
    else:
        events = read_story(story)
    assert len(events) == len(rows)
    assert events.words == tuple(r[0] for r in rows)
    assert events.source == f"bundled:{story}"
    assert events.n_filled == missing
    # measured words keep the file's own times
    timed = np.array([bool(r[2].strip()) for r in rows])
    np.testing.assert_array_equal(events.measured, timed)
    np.testing.assert_allclose(events.onsets[timed], [float(r[2]) for r in rows if r[2].strip()])
    np.testing.assert_allclose(events.offsets[timed], [float(r[3]) for r in rows if r[3].strip()])
    assert np.all(np.diff(events.onsets) >= 0)
    assert np.all(events.offsets >= events.onsets)


def test_rows_without_times_total_555_across_the_16_stories():
    total = 0
    for story in STORIES:
        total += sum(1 for r in _rows(datasets.story_path(story)) if not r[2].strip())
    assert total == 555
    assert sum(_quiet_read(s).n_filled for s in STORIES) == 555


def test_only_one_warning_per_file():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_story("sherlock")
    filled = [w for w in caught if issubclass(w.category, FilledTimesWarning)]
    assert len(filled) == 1
    assert "filled 171 of 2681 word times" in str(filled[0].message)
    assert "sherlock" in str(filled[0].message)
    assert filled[0].filename == __file__  # stacklevel points at the caller


def test_gentle_json_has_as_many_words_as_its_words_list():
    path = datasets.story_path("notthefallintact", "align.json")
    doc = json.loads(path.read_text(encoding="utf-8"))
    not_found = sum(1 for w in doc["words"] if w["case"] != "success")
    with pytest.warns(FilledTimesWarning, match=rf"filled {not_found} of {len(doc['words'])}"):
        events = read_story(path)
    assert len(events) == len(doc["words"])
    assert events.words == tuple(w["word"] for w in doc["words"])
    success = np.array([w["case"] == "success" for w in doc["words"]])
    np.testing.assert_array_equal(events.measured, success)
    np.testing.assert_allclose(events.onsets[success], [w["start"] for w in doc["words"] if w["case"] == "success"])
    # The json and Narratives' align.csv describe the same alignment.
    csv_events = _quiet_read("notthefallintact")
    np.testing.assert_allclose(events.onsets[success], csv_events.onsets[success], atol=1e-5)


def test_word_onset_offset_table_with_header():
    path = datasets.story_path("black", "transcript.csv")
    table = pd.read_csv(path)
    events = read_story(path)
    assert len(events) == len(table)
    assert events.measured.all()
    np.testing.assert_allclose(events.onsets, table["onset"])
    np.testing.assert_allclose(events.offsets, table["offset"])


def test_onset_shift_is_added_and_recorded():
    base = _quiet_read("pieman")
    moved = _quiet_read("pieman", onset=15.0)
    np.testing.assert_allclose(moved.onsets, base.onsets + 15.0)
    np.testing.assert_allclose(moved.offsets, base.offsets + 15.0)
    assert moved.onset_shift == 15.0
    again = base.shifted(15.0)
    np.testing.assert_allclose(again.onsets, moved.onsets)
    assert again.onset_shift == 15.0 and again.words == base.words


def test_word_events_are_read_only_and_convert_to_a_dataframe():
    events = _quiet_read("pieman")
    with pytest.raises(ValueError):
        events.onsets[0] = 0.0
    with pytest.raises(AttributeError):
        events.words = ()
    frame = events.to_dataframe()
    assert list(frame.columns) == ["word", "onset", "offset", "measured"]
    assert len(frame) == len(events) and frame["measured"].sum() == len(events) - 3


def test_word_events_check_shapes():
    with pytest.raises(StoryFormatError, match=r"'onsets' must have shape \(2,\)"):
        WordEvents(words=("a", "b"), onsets=[0.0], offsets=[1.0, 2.0], measured=[True, True])


def test_filled_times_interpolate_by_position_and_extrapolate_at_ends(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text(
        "word,onset,offset\n"
        "a,,\n"  # before the first measured word
        "b,1.0,1.2\n"
        "c,,\n"
        "d,,\n"
        "e,4.0,4.6\n"
        "f,5.0,5.4\n"
        "g,,\n",  # after the last measured word
        encoding="utf-8",
    )
    with pytest.warns(FilledTimesWarning, match=r"filled 4 of 7 word times in .*gaps\.csv"):
        events = read_story(path)
    np.testing.assert_array_equal(events.measured, [False, True, False, False, True, True, False])
    median = 0.4  # durations 0.2, 0.6, 0.4
    np.testing.assert_allclose(events.onsets[2:4], [2.0, 3.0])  # 1 + (4 - 1) * k / 3
    np.testing.assert_allclose(events.offsets[2:4], [1.2 + 3.4 / 3, 1.2 + 6.8 / 3])
    np.testing.assert_allclose([events.onsets[0], events.offsets[0]], [1.0 - median, 1.0])
    np.testing.assert_allclose([events.onsets[6], events.offsets[6]], [5.4, 5.4 + median])


def test_unsorted_onsets_are_sorted_with_a_warning(tmp_path):
    path = tmp_path / "unsorted.tsv"
    path.write_text("word\tonset\toffset\nx\t2.0\t2.5\ny\t1.0\t1.5\nz\t3.0\t3.5\n", encoding="utf-8")
    with pytest.warns(UnsortedWordsWarning, match="sorted by onset"):
        events = read_story(path)
    assert events.words == ("y", "x", "z")


def test_duration_column_instead_of_offset(tmp_path):
    path = tmp_path / "events.tsv"
    path.write_text("onset\tduration\tword\n0.5\t0.25\thello\n1.0\t0.5\tworld\n", encoding="utf-8")
    events = read_story(path)
    assert events.words == ("hello", "world")
    np.testing.assert_allclose(events.offsets, [0.75, 1.5])


# ----------------------------------------------------------------------- TextGrids

LONG_TEXTGRID = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 3.0
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 3.0
        intervals: size = 2
        intervals [1]:
            xmin = 0
            xmax = 1.5
            text = "HH"
        intervals [2]:
            xmin = 1.5
            xmax = 3.0
            text = "AY"
    item [2]:
        class = "IntervalTier"
        name = "Words"
        xmin = 0
        xmax = 3.0
        intervals: size = 4
        intervals [1]:
            xmin = 0
            xmax = 0.4
            text = ""
        intervals [2]:
            xmin = 0.4
            xmax = 1.1
            text = "she said ""hi"""
        intervals [3]:
            xmin = 1.1
            xmax = 2.0
            text = "   "
        intervals [4]:
            xmin = 2.0
            xmax = 2.75
            text = "café"
'''

SHORT_TEXTGRID = '''File type = "ooTextFile"
Object class = "TextGrid"

0
3.0
<exists>
2
"TextTier"
"events"
0
3.0
1
0.2
"click"
"IntervalTier"
"words"
0
3.0
3
0
0.4
""
0.4
1.1
"hello"
2.0
2.75
"world"
'''


def test_long_textgrid_word_tier_by_name_skips_silences(tmp_path):
    path = tmp_path / "story.TextGrid"
    path.write_text(LONG_TEXTGRID, encoding="utf-8")
    events = read_story(path)
    assert events.words == ('she said "hi"', "café")
    np.testing.assert_allclose(events.onsets, [0.4, 2.0])
    np.testing.assert_allclose(events.offsets, [1.1, 2.75])
    assert events.measured.all()
    phones = read_story(path, tier="phones")
    assert phones.words == ("HH", "AY")


def test_short_textgrid_in_utf16(tmp_path):
    path = tmp_path / "story.textgrid"
    path.write_bytes(SHORT_TEXTGRID.encode("utf-16"))
    events = read_story(path)
    assert events.words == ("hello", "world")
    np.testing.assert_allclose(events.onsets, [0.4, 2.0])


def test_textgrid_without_a_word_tier(tmp_path):
    only_points = SHORT_TEXTGRID.split('"IntervalTier"')[0].replace("\n2\n", "\n1\n", 1)
    path = tmp_path / "points.TextGrid"
    path.write_text(only_points, encoding="utf-8")
    with pytest.raises(StoryFormatError, match=r"points\.TextGrid: expected an interval tier of words"):
        read_story(path)
    good = tmp_path / "good.TextGrid"
    good.write_text(LONG_TEXTGRID, encoding="utf-8")
    with pytest.raises(StoryFormatError, match=r"expected a tier named 'tokens'; the tiers are \['phones', 'Words'\]"):
        read_story(good, tier="tokens")


def test_truncated_textgrid_names_the_line(tmp_path):
    path = tmp_path / "cut.TextGrid"
    lines = LONG_TEXTGRID.splitlines()
    path.write_text("\n".join(lines[:30]) + "\n", encoding="utf-8")
    with pytest.raises(StoryFormatError, match=r"cut\.TextGrid line \d+: expected .*the file ends early"):
        read_story(path)


def test_textgrid_with_a_word_for_a_number_names_the_line(tmp_path):
    path = tmp_path / "bad.TextGrid"
    path.write_text(LONG_TEXTGRID.replace("xmax = 2.75", 'xmax = "late"'), encoding="utf-8")
    line = LONG_TEXTGRID.splitlines().index("            xmax = 2.75") + 1
    with pytest.raises(StoryFormatError, match=rf"bad\.TextGrid line {line}: expected a number \(interval xmax\); got 'late'"):
        read_story(path)


# ------------------------------------------------------------------- broken files


def test_bad_column_count_names_file_and_line(tmp_path):
    rows = _rows(datasets.story_path("pieman"))[:20]
    rows[11] = rows[11][:2]
    path = tmp_path / "pieman" / "align.csv"
    path.parent.mkdir()
    path.write_text("\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    with pytest.raises(
        StoryFormatError,
        match=r"pieman/align\.csv line 12: expected 4 comma-separated columns "
        r"word,aligned_word,onset,offset; got 2",
    ):
        read_story(path)


def test_non_numeric_time_names_the_line(tmp_path):
    path = tmp_path / "align.csv"
    path.write_text("So,so,0.24,0.63\nI,i,0.68,1.26\nwas,was,soon,2.3\n", encoding="utf-8")
    with pytest.raises(StoryFormatError, match=r"align\.csv line 3: expected a number of seconds .* got 'soon'"):
        read_story(path)
    table = tmp_path / "words.tsv"
    table.write_text("word\tonset\toffset\n\nhi\t0.1\t0.2\nthere\t0.3\tlater\n", encoding="utf-8")
    with pytest.raises(StoryFormatError, match=r"words\.tsv line 4: .*offset; got 'later'"):
        read_story(table)


def test_offset_before_onset(tmp_path):
    path = tmp_path / "align.csv"
    path.write_text("a,a,1.0,2.0\nb,b,3.0,2.5\n", encoding="utf-8")
    with pytest.raises(StoryFormatError, match=r"line 2: expected offset >= onset"):
        read_story(path)


def test_empty_file(tmp_path):
    for name in ("empty.csv", "empty.json", "empty.TextGrid"):
        path = tmp_path / name
        path.write_text("\n  \n", encoding="utf-8")
        with pytest.raises(StoryFormatError, match=rf"{name}: the file is empty"):
            read_story(path)
    header_only = tmp_path / "header.csv"
    header_only.write_text("word,onset,offset\n", encoding="utf-8")
    with pytest.raises(StoryFormatError, match="header but no words"):
        read_story(header_only)


def test_no_word_has_a_time(tmp_path):
    path = tmp_path / "align.csv"
    path.write_text("a,<unk>,,\nb,<unk>,,\n", encoding="utf-8")
    with pytest.raises(StoryFormatError, match="none of the 2 words has both"):
        read_story(path)


def test_unknown_extension(tmp_path):
    path = tmp_path / "story.docx"
    path.write_text("a,a,1,2\n", encoding="utf-8")
    with pytest.raises(StoryFormatError, match=r"story\.docx: cannot tell the story format from the extension '\.docx'"):
        read_story(path)
    events = read_story(path, fmt="narratives_csv")  # an explicit format overrides the guess
    assert events.words == ("a",)


def test_broken_gentle_json(tmp_path):
    path = tmp_path / "align.json"
    path.write_text('{"transcript": "a b",\n "words": [\n', encoding="utf-8")
    with pytest.raises(StoryFormatError, match=r"align\.json line \d+: expected a Gentle align\.json; invalid JSON"):
        read_story(path)
    path.write_text(json.dumps({"words": [{"word": "a", "case": "success", "start": 1.0}]}), encoding="utf-8")
    with pytest.raises(StoryFormatError, match=r"words\[0\]: expected numeric 'start' and 'end'"):
        read_story(path)
    path.write_text(json.dumps([1, 2]), encoding="utf-8")
    with pytest.raises(StoryFormatError, match="an object with a 'words' list"):
        read_story(path)


def test_unknown_names_and_paths():
    with pytest.raises(ConfigError, match=r"one of the bundled stories .*'piemann' was provided\. Did you mean 'pieman'\?"):
        read_story("piemann")
    with pytest.raises(FileNotFoundError, match="no/such/story.csv"):
        read_story("no/such/story.csv")
    with pytest.raises(ConfigError, match="'fmt' must be one of"):
        read_story("pieman", fmt="xml")
    with pytest.raises(ConfigError, match="'onset' must be a finite number"):
        read_story("pieman", onset=float("nan"))


def test_a_folder_with_align_json_reads_it(tmp_path):
    folder = tmp_path / "story"
    folder.mkdir()
    (folder / "align.json").write_text(
        json.dumps({"words": [{"word": "hi", "case": "success", "start": 0.1, "end": 0.3}]}),
        encoding="utf-8",
    )
    assert read_story(folder).words == ("hi",)


# --------------------------------------------------------------------- events.tsv


def test_story_onset_from_the_bundled_pieman_events():
    events_tsv = datasets.story_events_path("pieman")
    # The audio file holds the music and then the story: word times count from its start.
    assert read_story_onset(events_tsv, stim_file="pieman_audio.wav") == 0.0
    assert read_story_onset(events_tsv, stim_file="stimuli/pieman_audio.wav") == 0.0
    assert read_story_onset(events_tsv) == 0.0
    assert read_story_onset(events_tsv, trial_type="story") == 15.0
    # The first word of pieman comes just after the story event starts in the scan.
    first_word = _quiet_read("pieman", onset=read_story_onset(events_tsv, stim_file="pieman_audio.wav")).onsets[0]
    assert 15.0 <= first_word < 16.0


def test_story_onset_errors(tmp_path):
    events_tsv = datasets.story_events_path("pieman")
    with pytest.raises(StoryFormatError, match=r"no event has stim_file 'lucy_audio\.wav'; the file has \['pieman_audio\.wav'\]"):
        read_story_onset(events_tsv, stim_file="lucy_audio.wav")
    bad = tmp_path / "events.tsv"
    bad.write_text("start\tduration\n0\t1\n", encoding="utf-8")
    with pytest.raises(StoryFormatError, match="'onset' column"):
        read_story_onset(bad)
    with pytest.raises(FileNotFoundError):
        read_story_onset(tmp_path / "missing.tsv")
    shifted = tmp_path / "shifted_events.tsv"
    shifted.write_text("onset\tduration\ttrial_type\tstim_file\n3.0\t10\tstory\ta.wav\nn/a\t1\tx\ta.wav\n", encoding="utf-8")
    assert read_story_onset(shifted, stim_file="a.wav") == 3.0


def test_textgrid_tier_is_chosen_by_name_and_phone_tiers_are_refused(tmp_path):
    phones_only = LONG_TEXTGRID.replace('"Words"', '"phones2"')
    # two interval tiers, none named words: refused, naming the tiers
    path = tmp_path / "two.TextGrid"
    path.write_text(phones_only, encoding="utf-8")
    with pytest.raises(StoryFormatError, match=r"two\.TextGrid: expected a tier of words named 'words' or 'word'.*"
                                               r"\['phones', 'phones2'\]"):
        read_story(path)
    # the only tier holds phones: refused, not read as words
    start = LONG_TEXTGRID.index("item [2]")
    only_phones = LONG_TEXTGRID[:start].replace("size = 2", "size = 1", 1)
    path = tmp_path / "phones.TextGrid"
    path.write_text(only_phones, encoding="utf-8")
    with pytest.raises(StoryFormatError, match=r"phones\.TextGrid.*the only interval tier, 'phones', holds phones"):
        read_story(path)
    # the only tier, whatever its name, is the words
    path = tmp_path / "one.TextGrid"
    path.write_text(only_phones.replace('"phones"', '"transcript"'), encoding="utf-8")
    assert read_story(path).words == ("HH", "AY")


def test_table_row_with_more_cells_than_the_header_is_an_error_with_its_line(tmp_path):
    path = tmp_path / "story.csv"
    path.write_text("word,onset,offset\nhello,0.5,0.9\nhi, there,1.0,1.4\nend,2.0,2.3\n")
    with pytest.raises(StoryFormatError, match=r"story\.csv line 3: expected 3 columns as in the header \(line 1\); got 4"):
        read_story(path)
    path.write_text("word,onset,offset\nhello,0.5,0.9,\n")  # a trailing delimiter is no extra cell
    assert read_story(path).words == ("hello",)
