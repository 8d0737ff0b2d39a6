import subprocess
import sys


from napari_brainorg.cli import COMMANDS, build_parser, main


def test_every_command_is_registered_and_every_option_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.dest not in ("help",):
                assert action.help, f"brainorg {name}: option {action.dest} has no help"


def test_console_script_help_runs_without_heavy_imports():
    code = "import sys; from napari_brainorg.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit: pass\nprint(sorted(m for m in ('torch','napari','transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("[]")


def test_bad_config_exits_2_with_a_message(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("atomz: {}\nout: r\n")
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "atomz" in err and "Did you mean 'atoms'?" in err


def test_missing_config_file_is_named(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_simulate_links_syntax_error_is_explained(tmp_path, capsys):
    assert main(["simulate", "--links", "three:auditory", "--out", str(tmp_path / "s")]) == 2
    assert "SOURCE:network" in capsys.readouterr().err
