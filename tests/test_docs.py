"""The documentation: the site builds without warnings, its executed pages show what the
code gives, and its references cover every option, command, public name and output.

The build runs the tutorial and the gallery (myst-nb): one small simulated study, about a
minute on two cores, in the build's own temporary folder.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

pytestmark = pytest.mark.slow

GALLERY = ["atom_maps", "network_table", "compare_models", "own_bids_data", "region_data"]
PAGES = ["index", "install", "tutorial", "gallery/index", *(f"gallery/{g}" for g in GALLERY),
         "gallery/napari_workspace",
         "reference/config", "reference/cli", "outputs", "api", "troubleshooting", "citing",
         "changelog", "architecture"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    pytest.importorskip("pydata_sphinx_theme")
    out = tmp_path_factory.mktemp("docs")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    env.pop("BRAINORG_DOCS_STUDY", None)  # the build's own study, beside its HTML
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out / "html")],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "html"


def _html(site: Path, page: str) -> str:
    return (site / f"{page}.html").read_text(encoding="utf-8")


def _text(site: Path, page: str) -> str:
    from bs4 import BeautifulSoup

    return " ".join(BeautifulSoup(_html(site, page), "html.parser").get_text(" ").split())


def _images(site: Path, page: str) -> list[Path]:
    """The images a page shows that the build wrote (executed cells' figures)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_html(site, page), "html.parser")
    base = (site / page).parent
    return [(base / img["src"]).resolve() for img in soup.find_all("img")
            if "_images/" in img.get("src", "")]


def test_every_page_is_built(site):
    missing = [p for p in PAGES if not (site / f"{p}.html").is_file()]
    assert not missing
    index = _html(site, "index")
    assert "pydata" in index  # the maintained theme
    for page in PAGES[1:]:
        assert f'{page}.html"' in index or page == "index", page  # reachable from the start page


def test_tutorial_was_executed_with_its_figures(site):
    text = _text(site, "tutorial")
    assert "Traceback" not in text
    # the run's headline: held-out r with its CI over subjects, chance, noise ceiling
    assert re.search(r"held-out r -?\d\.\d{3} \[95% CI -?\d\.\d{3}, -?\d\.\d{3}\] over 4 subjects", text)
    assert "noise ceiling r" in text and "by chance" in text
    assert "z score" in text  # the group atom map's NIfTI intent
    assert "atom with the largest coefficient: 3" in text  # the sparse fit finds the planted atom
    assert "Peak Stat" in text and "Cluster Size (mm3)" in text  # the MNI peak table
    assert re.search(r"precision \d\.\d\d, recall \d\.\d\d", text)
    figures = _images(site, "tutorial")
    # R² on the template, held-out vs planted glass brains, atoms' time courses, the atom map,
    # the run's heat map
    assert len(figures) >= 5, figures
    for png in figures:
        assert png.is_file() and png.stat().st_size > 5_000, png
    assert (site / "tutorial_report.html").stat().st_size > 100_000  # the run's own report, linked


@pytest.mark.parametrize("page", GALLERY)
def test_gallery_pages_were_executed(site, page):
    html = _html(site, f"gallery/{page}")
    assert "cell_output" in html and "Traceback" not in html
    if page != "own_bids_data":
        assert _images(site, f"gallery/{page}")
    if page in ("own_bids_data", "region_data"):
        assert "exit code 0" in _text(site, f"gallery/{page}")  # brainorg config --check passed
    if page == "own_bids_data":
        text = _text(site, f"gallery/{page}")
        assert "exit code 2" in text and "has 300 volumes; story.n_volumes 200" in text


def test_the_napari_page_shows_the_workspace(site):
    """Screenshots of the real workspace at 1366 x 768, copied into the site."""
    shots = _images(site, "gallery/napari_workspace")
    assert len(shots) >= 3
    for png in shots:
        assert png.is_file() and png.stat().st_size > 50_000, png


def _config_keys() -> list[str]:
    from pydantic import BaseModel

    from napari_brainorg.pipeline import PipelineConfig

    keys, seen = [], set()

    def walk(model, prefix):
        for name, field in model.model_fields.items():
            keys.append(prefix + name)
            nested = [a for a in (field.annotation, *typing.get_args(field.annotation),
                                  *(b for a in typing.get_args(field.annotation) for b in typing.get_args(a)))
                      if inspect.isclass(a) and issubclass(a, BaseModel)]
            if nested and nested[0] not in seen:
                seen.add(nested[0])
                walk(nested[0], prefix + name + ".")

    walk(PipelineConfig, "")
    return keys


def test_configuration_reference_lists_every_option(site):
    text = _text(site, "reference/config")
    keys = _config_keys()
    assert len(keys) > 100
    missing = [k for k in keys if k not in text]
    assert not missing
    assert "n_atoms" in text and "k, the number of atoms" in text  # descriptions came with them


def test_cli_reference_lists_every_command_and_option(site):
    from napari_brainorg.cli import build_parser

    text = _text(site, "reference/cli")
    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    assert len(commands) == 8
    for name, sub in commands.items():
        assert f"brainorg {name}" in text, name
        for action in sub._actions:
            for option in action.option_strings:
                assert option in text, (name, option)
        assert " ".join((sub.description or "").split())[:60] in text, name


def test_api_reference_documents_every_exported_name(site):
    import napari_brainorg

    html = _html(site, "api")
    exported = []
    for info in pkgutil.walk_packages(napari_brainorg.__path__, "napari_brainorg."):
        if not info.ispkg or "._napari" in info.name:
            continue
        module = importlib.import_module(info.name)
        exported += [f"{info.name}.{name}" for name in getattr(module, "__all__", [])]
    assert len(exported) > 25
    missing = [name for name in exported if f'id="{name}"' not in html]
    assert not missing
    for name in ("SparseDictionary", "CVRidgeEncoder", "SparseAtomEncoder", "ResultFolder"):
        assert re.search(rf'id="napari_brainorg\.[\w.]+\.{name}"', html), name


def test_result_folder_and_troubleshooting_cover_the_code(site):
    import napari_brainorg.pipeline.steps as steps
    from napari_brainorg.errors import BrainorgError, BrainorgWarning

    outputs = _text(site, "outputs")
    for info in pkgutil.iter_modules(steps.__path__):
        assert f"{info.name} step" in outputs, info.name
    assert "AtomMapsZ" in outputs and "association_activated.tsv" in outputs and "_statmap.nii.gz" in outputs

    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from brainorg_docs import package_exceptions
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    errors, warnings = package_exceptions()
    trouble = _text(site, "troubleshooting")
    for cls in (BrainorgError, *errors, BrainorgWarning, *warnings):
        assert cls.__name__ in trouble, cls.__name__


def test_how_to_cite(site):
    import yaml

    from napari_brainorg import __version__

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["version"] == __version__ and cff["cff-version"] == "1.2.0"
    assert any("2410.19542" in str(ref) for ref in cff["references"])
    text = _text(site, "citing")
    assert "arXiv:2410.19542" in text and "Narratives" in text  # the method and the run's data
    changelog = _text(site, "changelog")
    assert f"{__version__}" in changelog


def test_architecture_page_is_part_of_the_site(site):
    architecture = _html(site, "architecture")
    assert "steps/" in architecture and "StepContext" in architecture
