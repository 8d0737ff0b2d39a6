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
