"""``brainorg extract`` on a short real story with the bundled MiniLM (offline)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from napari_brainorg.cli import main
from napari_brainorg.features.extract import AN_FILES, load_an_responses
from napari_brainorg.io.stimuli import read_story

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def short_story(tmp_path_factory):
    """The first 60 words of pieman as a word,onset,offset TSV."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        story = read_story("pieman")
    path = tmp_path_factory.mktemp("story") / "pieman_start.tsv"
    rows = ["word\tonset\toffset"] + [
        f"{w}\t{a:.3f}\t{b:.3f}" for w, a, b in zip(story.words[:60], story.onsets[:60], story.offsets[:60])
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def _args(story, out, *extra):
    return ["extract", "--story", str(story), "--model", "minilm", "--tr", "1.5", "--n-volumes", "40",
            "--threads", "1", "--quiet", "--out", str(out), *extra]


def test_extract_writes_the_folder_then_reuses_it(short_story, tmp_path, capsys):
    out = tmp_path / "ans"
    assert main(_args(short_story, out)) == 0
    printed = capsys.readouterr().out
    assert "9216 ANs kept of 9216" in printed and "6 layers" in printed and "0 dropped" in printed
    for name in AN_FILES:
        assert (out / name).is_file() and str(out / name) in printed
    res = load_an_responses(out)
    assert res.responses.shape == (40, 9216)
    assert res.provenance["story"]["source"] == str(short_story)
    assert res.provenance["story"]["n_words"] == 60

    assert main(_args(short_story, out)) == 0
    assert "reused the results" in capsys.readouterr().out


def test_events_file_gives_the_onset(short_story, tmp_path):
    events = tmp_path / "events.tsv"
    events.write_text("onset\tduration\ttrial_type\n12.5\t40\tstory\n")
    out = tmp_path / "ans"
    assert main(_args(short_story, out, "--events", str(events), "--site", "ffn_out")) == 0
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["onset"] == 12.5 and prov["site"] == "ffn_out"
    assert np.load(out / "an_responses.npy").shape == (40, 6 * 384)


def test_onset_and_events_exclude_each_other(short_story, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(_args(short_story, tmp_path / "o", "--onset", "3", "--events", "e.tsv"))
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_bad_model_path_exits_2_naming_it(short_story, tmp_path, capsys):
    args = _args(short_story, tmp_path / "o")
    args[args.index("minilm")] = str(tmp_path / "missing_model_dir")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "missing_model_dir" in err and "does not exist" in err
    assert not (tmp_path / "o").exists()


def test_a_foreign_output_folder_is_refused(short_story, tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("precious")
    assert main(_args(short_story, tmp_path)) == 2
    assert "did not write" in capsys.readouterr().err
    assert (tmp_path / "thesis.tex").read_text() == "precious"
