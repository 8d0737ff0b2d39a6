"""Conventions every ``brainorg`` command follows: logging options, config printing and
checking, and one-line errors for a missing optional dependency."""

from __future__ import annotations

import json
import subprocess
import sys


def test_view_without_a_qt_binding_says_how_to_install_one(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"models": [], "tr": 1.5, "n_volumes": 10}))
    # every Qt binding made unimportable, as in an environment that has none
    code = (
        "import sys\n"
        "for m in ('PyQt6', 'PySide6', 'PyQt5', 'PySide2'): sys.modules[m] = None\n"
        "from napari_brainorg.cli import main\n"
        f"sys.exit(main(['view', {str(tmp_path)!r}]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr  # one line, no traceback
    assert "Qt binding" in lines[0] and 'pip install "napari-brainorg[qt]"' in lines[0]


def test_every_command_has_verbose_and_quiet():
    from napari_brainorg.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        options = {s for a in p._actions for s in a.option_strings}
        assert {"-v", "--verbose", "-q", "--quiet"} <= options, name


def test_quiet_silences_info_and_verbose_shows_debug(tmp_path, capsys):
    import logging

    from napari_brainorg.cli import main

    example = tmp_path / "example.yaml"
    assert main(["config", "--example"]) == 0
    example.write_text(capsys.readouterr().out)
    assert main(["config", "--check", str(example)]) == 0
    assert "a valid configuration" in capsys.readouterr().err  # INFO by default
    assert main(["config", "--check", str(example), "--quiet"]) == 0
    assert "a valid configuration" not in capsys.readouterr().err
    main(["config", "--check", str(example), "-v"])
    assert logging.getLogger("napari_brainorg").getEffectiveLevel() == logging.DEBUG


def test_config_example_is_valid_and_check_reports_what_is_wrong(tmp_path, capsys):
    import yaml

    from napari_brainorg.cli import main
    from napari_brainorg.pipeline import load_config
    from napari_brainorg.pipeline.config import PipelineConfig

    assert main(["config", "--example"]) == 0
    text = capsys.readouterr().out
    # every section and option of the configuration is in the example, with its default
    data = yaml.safe_load(text)
    for section, field in PipelineConfig.model_fields.items():
        assert section in data, section
    assert data["atoms"]["n_atoms"] == 64 and "# k, the number of atoms" in text
    path = tmp_path / "study.yaml"
    path.write_text(text)
    assert load_config(path).atoms.n_atoms == 64
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("n_atoms: 64", "n_atom: 64"))
    assert main(["config", "--check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "n_atom" in err and "Did you mean 'n_atoms'" in err and "Traceback" not in err


def test_extract_device_default_is_auto_like_the_configuration():
    from napari_brainorg.cli import build_parser
    from napari_brainorg.pipeline.config import FeaturesConfig

    args = build_parser().parse_args(["extract", "--story", "pieman", "--tr", "1.5", "--n-volumes", "10",
                                      "--out", "x"])
    assert args.device == FeaturesConfig().device == "auto"
