import pytest

from napari_brainorg.errors import ConfigError
from napari_brainorg.pipeline.config import demo_config, load_config, make_config


def test_misspelt_key_names_it_and_suggests(tmp_path):
    cfg = tmp_path / "study.yaml"
    cfg.write_text("story:\n  path: pieman\natoms:\n  n_atom: 32\nout: res\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value)
    assert "atoms.n_atom" in msg and "Did you mean 'n_atoms'?" in msg and str(cfg) in msg


def test_wrong_value_names_field_and_value():
    with pytest.raises(ConfigError, match=r"story\.tr.*-1"):
        make_config({"story": {"tr": -1}, "out": "x"})


def test_fmri_needs_exactly_one_source():
    with pytest.raises(ConfigError, match="exactly one of"):
        make_config({"fmri": {}, "out": "x"})
    with pytest.raises(ConfigError, match=r"\['images', 'simulate'\]"):
        make_config({"fmri": {"images": ["a.nii.gz"], "simulate": {}}, "out": "x"})


def test_relative_paths_are_taken_from_the_config_folder(tmp_path):
    (tmp_path / "run.nii.gz").write_bytes(b"")
    cfg = tmp_path / "study.yaml"
    cfg.write_text("fmri:\n  images: [run.nii.gz]\nout: results\n")
    config = load_config(cfg)
    assert config.fmri.images == [str(tmp_path / "run.nii.gz")]
    assert config.out == str(tmp_path / "results")


def test_config_is_frozen_and_cache_keys_follow_sections():
    a = demo_config("out")
    b = make_config({**a.model_dump(), "atoms": {**a.atoms.model_dump(), "n_atoms": 32}})
    with pytest.raises(Exception):
        a.atoms.n_atoms = 3
    assert a.story.cache_key() == b.story.cache_key()
    assert a.atoms.cache_key("f") != b.atoms.cache_key("f")
    assert a.atoms.cache_key("f") != a.atoms.cache_key("g")  # upstream change invalidates


def test_full_demo_subjects_hear_several_stories_whose_scans_hold_every_word():
    from napari_brainorg.io.stimuli import read_story
    from napari_brainorg.pipeline.config import DEMO_STORIES

    full, quick = demo_config("out"), demo_config("out", quick=True)
    assert full.multi_story and [s.label for s in full.stories] == list(DEMO_STORIES)
    assert sum(s.n_volumes for s in full.stories) == sum(DEMO_STORIES.values()) >= 1000
    assert not quick.multi_story and quick.story.label == "pieman"
    for story in full.stories:
        words = read_story(story.path, onset=story.onset)
        # the scan runs past the last word by more than the HRF's peak, so no word's response is cut
        assert words.offsets.max() + 6.0 < story.n_volumes * story.tr, story.label


# ------------------------------------------------------------------ several stories
_TWO = {"stories": [{"path": "pieman", "n_volumes": 100}, {"path": "lucy", "tr": 2.0, "n_volumes": 120}],
        "fmri": {"images": {"pieman": ["p1.nii.gz", "p2.nii.gz"], "lucy": ["l1.nii.gz", "l2.nii.gz"]}},
        "out": "x"}


def test_single_story_config_is_unchanged_and_stories_lists_several():
    one = make_config({"story": {"path": "pieman", "n_volumes": 100}, "out": "x"})
    assert one.stories is None and not one.multi_story and [s.label for s in one.story_list] == ["pieman"]
    two = make_config(_TWO)
    assert two.multi_story and [s.label for s in two.story_list] == ["pieman", "lucy"]
    assert two.story == two.stories[0]  # single-story readers see the first story
    assert two.stories[1].tr == 2.0 and two.stories[1].n_volumes == 120
    # the resolved configuration (config.yaml) reads back as the same configuration
    import yaml

    from napari_brainorg.pipeline.config import config_to_yaml

    assert make_config(yaml.safe_load(config_to_yaml(two))) == two


@pytest.mark.parametrize("change, message", [
    ({"story": {"path": "black"}}, r"either 'story' \(one story\) or 'stories'"),
    ({"stories": [{"path": "pieman"}, {"path": "pieman"}]}, r"names must be unique; \['pieman'\]"),
    ({"atoms": {"stories": ["lucky"]}}, r"atoms\.stories: 'lucky' is not a story.*Did you mean 'lucy'"),
    ({"encoding": {"map_stories": ["piemen"]}}, r"encoding\.map_stories: 'piemen'.*Did you mean 'pieman'"),
    ({"fmri": {"images": {"pieman": ["a"], "lcy": ["b"]}}}, r"missing \['lucy'\]; not a story \['lcy'\]"),
    ({"fmri": {"images": {"pieman": ["a"], "lucy": ["b", "c"]}}}, r"\{'pieman': 1, 'lucy': 2\} runs"),
    ({"fmri": {"images": ["a", "b"]}}, r"fmri\.images: with several stories, give a mapping"),
    ({"stories": [{"path": "pieman", "nvolumes": 3}]}, r"stories\.0\.nvolumes.*Did you mean 'n_volumes'"),
    ({"stories": [{"path": "pieman", "name": "a/b"}]}, r"stories\.0\.name: a story name .*'a/b'"),
    ({"networks": {"null": "shift"}}, r"networks\.null: 'shift' moves one series.*2 stories"),
])
def test_bad_story_lists_are_refused_naming_key_and_value(change, message):
    with pytest.raises(ConfigError, match=message):
        make_config({**_TWO, **change})


def test_story_paths_and_per_story_runs_are_taken_from_the_config_folder(tmp_path):
    (tmp_path / "a.tsv").write_text("word\tonset\toffset\nhello\t1.0\t1.5\n")
    cfg = tmp_path / "study.yaml"
    cfg.write_text("stories:\n  - {path: a.tsv, n_volumes: 20}\n  - {path: pieman, n_volumes: 20}\n"
                   "fmri:\n  regions:\n    a: [r1.tsv]\n    pieman: [r2.tsv]\nout: res\n")
    config = load_config(cfg)
    assert config.stories[0].path == str(tmp_path / "a.tsv") and config.stories[1].path == "pieman"
    assert config.fmri.regions == {"a": [str(tmp_path / "r1.tsv")], "pieman": [str(tmp_path / "r2.tsv")]}


def test_network_test_stopping_rule_is_checked():
    assert make_config({"out": "x"}).networks.sequential_h == 20
    assert make_config({"networks": {"sequential_h": 0}, "out": "x"}).networks.sequential_h == 0
    with pytest.raises(ConfigError, match=r"networks\.sequential_h.*-1"):
        make_config({"networks": {"sequential_h": -1}, "out": "x"})
